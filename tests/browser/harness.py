"""Real headless Chromium and Firefox with the extension loaded, and a local test site.

A scenario runs inside a page (tests/browser/site/scenarios.js) and POSTs its result to the
site, so the drivers only navigate: nothing is evaluated through DevTools or Marionette, and
Firefox's Xray wrappers never stand between the test and the page.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extension"
SITE = Path(__file__).resolve().parent / "site"

CHROMIUM_BINARY = "/usr/lib/chromium/chromium"  # the real binary; /usr/bin/chromium is a wrapper script
FIREFOX_BINARY = shutil.which("firefox-esr") or shutil.which("firefox") or "/usr/bin/firefox-esr"


class ScenarioSite:
    """Serves the scenario pages on 127.0.0.1 (a secure context) and collects their results."""

    def __init__(self) -> None:
        self.results: dict[str, queue.Queue[Any]] = {}
        self.signals: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(SITE), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def end_headers(self) -> None:
                self.send_header("Cache-Control", "no-store")
                # A scenario can ask for its page to be served with a Permissions-Policy.
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                try:
                    params = json.loads(query.get("params", ["{}"])[0])
                    policy, csp = params.get("permissionsPolicy"), params.get("contentSecurityPolicy")
                except (ValueError, AttributeError):
                    policy = csp = None
                if policy:
                    self.send_header("Permissions-Policy", policy)
                if csp:  # and with a Content-Security-Policy
                    self.send_header("Content-Security-Policy", csp)
                super().end_headers()

            def do_GET(self) -> None:
                if self.path.startswith("/wait?"):
                    # A page waits here until the test calls signal(token).
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    site.signal_event(query["token"][0]).wait(60)
                    self.send_response(204)
                    self.end_headers()
                    return
                super().do_GET()

            def do_POST(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                site.inbox(query["token"][0]).put(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        # The same pages on a second port, which Chromium is told is on the public internet
        # (--ip-address-space-overrides): for its Local Network Access checks.
        self.public_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.public_origin = f"http://127.0.0.1:{self.public_server.server_port}"
        threading.Thread(target=self.public_server.serve_forever, daemon=True).start()

    def inbox(self, token: str) -> queue.Queue[Any]:
        with self.lock:
            return self.results.setdefault(token, queue.Queue())

    def signal_event(self, token: str) -> threading.Event:
        with self.lock:
            return self.signals.setdefault(token, threading.Event())

    def signal(self, token: str) -> None:
        """Releases a page waiting on /wait?token=..."""
        self.signal_event(token).set()

    def scenario_url(self, name: str, params: dict[str, Any], token: str, origin: str | None = None) -> str:
        query = urllib.parse.urlencode({"scenario": name, "token": token, "params": json.dumps(params)})
        return f"{origin or self.origin}/runner.html?{query}"

    def close(self) -> None:
        self.server.shutdown()
        self.public_server.shutdown()


def browser_env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_DIRS", "system-config")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(base / sub)
    return env


def cli(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "direct_sockets", *args], env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"direct-sockets {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout


class Browser:
    name = "browser"

    def __init__(self, base: Path, site: ScenarioSite) -> None:
        self.base = base
        self.site = site
        self.env = browser_env(base)
        self.manifest: Path

    def grant(self, destination: str, origin: str | None = None, kind: str = "tcp") -> None:
        """kind: tcp, udp, udp-bind, tcp-listen or multicast (the CLI's flags)."""
        cli(self.env, "permissions", "grant", "--origin", origin or self.site.origin, f"--{kind}", destination)

    def revoke_all(self) -> None:
        """Every test starts with no grants, whatever the tests before it allowed."""
        store = Path(self.env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json"
        store.unlink(missing_ok=True)  # every origin's grants, whichever a test made

    def navigate(self, url: str) -> None:
        raise NotImplementedError

    def run(self, scenario: str, timeout: float = 60, origin: str | None = None, **params: Any) -> Any:
        """Runs a scenario in a fresh page load; returns its value or raises with its error."""
        token = uuid.uuid4().hex
        inbox = self.site.inbox(token)
        self.navigate(self.site.scenario_url(scenario, params, token, origin))
        result = inbox.get(timeout=timeout)
        if not result.get("ok"):
            raise ScenarioFailed(f"{self.name}: {scenario}: {result.get('error')}")
        return result["value"]

    def run_answering(self, scenario: str, answers: list[str], timeout: float = 60, **params: Any) -> tuple[Any, list[dict[str, Any]]]:
        """Runs a scenario, answering the consent windows it raises in turn; returns its value
        and what each window showed."""
        inbox = self.start(scenario, **params)
        shown = [self.answer_prompt(answer) for answer in answers]
        result = inbox.get(timeout=timeout)
        if not result.get("ok"):
            raise ScenarioFailed(f"{self.name}: {scenario}: {result.get('error')}")
        return result["value"], shown

    def start(self, scenario: str, origin: str | None = None, **params: Any) -> queue.Queue[Any]:
        """Starts a scenario that reports more than once; returns its inbox."""
        token = uuid.uuid4().hex
        self.last_token = token
        inbox = self.site.inbox(token)
        self.navigate(self.site.scenario_url(scenario, params, token, origin))
        return inbox

    def start_in_new_tab(self, scenario: str, **params: Any) -> queue.Queue[Any]:
        """Like start(), in a second tab; close_tab() closes it and returns to the first."""
        token = uuid.uuid4().hex
        inbox = self.site.inbox(token)
        self.open_tab(self.site.scenario_url(scenario, params, token))
        return inbox

    def open_tab(self, url: str) -> None:
        raise NotImplementedError

    def close_tab(self) -> None:
        raise NotImplementedError

    def reload(self) -> None:
        raise NotImplementedError

    def extension_url(self, path: str) -> str:
        raise NotImplementedError

    def current_tab_id(self) -> int:
        """The WebExtension id of the scenarios' tab, as the extension knows it."""
        raise NotImplementedError

    def answer_prompt(self, decision: str, address: str | None = None, timeout: float = 20, early_click: bool = False) -> dict[str, Any]:
        """Waits for the consent window, reads what it shows, then clicks `decision` ('once',
        'always', 'deny') after putting `address` in the address field, or closes the window
        ('close'). Returns what the window showed. `early_click`: first clicks the button the
        moment the window is ready, as a click meant for the page would land; the window's
        `open_after_early_click` says whether it was still asking after that."""
        raise NotImplementedError

    def close_stray_windows(self) -> None:
        """Consent windows a failed test left open must not be taken for the next test's."""

    def windows_opened(self) -> int:
        """How many windows (consent windows, in these tests) the browser has opened so far,
        however briefly each stayed; counting starts at the first call."""
        raise NotImplementedError

    def restart_host(self) -> None:
        """Ends the host (the next socket starts a fresh one): every test starts from a clean slate."""
        pids = self.host_pids()
        for pid in pids:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        if pids:
            wait_for(lambda: not self.host_pids(), timeout=5)
            # The browser learns of the exit through its pipe; give it that moment, or a socket
            # the next test opens could be sent to the host that just ended.
            time.sleep(0.3)

    def host_pids(self) -> list[int]:
        """The native host processes this browser started (found through their manifest path)."""
        from tests.support.hostproc import find_host_pids

        return find_host_pids(str(self.manifest))

    def close(self) -> None:
        raise NotImplementedError


class ScenarioFailed(AssertionError):
    pass


CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP insecure.test 127.0.0.1",
]


class Chromium(Browser):
    name = "chromium"

    def __init__(self, base: Path, site: ScenarioSite, installed_env: dict[str, str] | None = None, extension: Path = EXTENSION) -> None:
        """`installed_env`: run with this environment, using the host manifest already installed
        in `base / "profile"`, rather than installing one; `extension`: the folder to load."""
        super().__init__(base, site)
        from playwright.sync_api import sync_playwright

        profile = base / "profile"
        if installed_env is not None:
            self.env = installed_env
        else:
            cli(self.env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
        self.manifest = profile / "NativeMessagingHosts" / "direct_sockets.json"
        # Allowed in incognito, as a user would allow it on chrome://extensions (for the
        # private-window tests).
        from direct_sockets.install.installer import extension_ids

        (profile / "Default").mkdir(parents=True, exist_ok=True)
        (profile / "Default" / "Preferences").write_text(
            json.dumps({"extensions": {"settings": {extension_ids().chrome: {"incognito": True}}}})
        )
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM_BINARY, headless=False, env=self.env,
            args=[
                *CHROMIUM_FLAGS, f"--disable-extensions-except={extension}", f"--load-extension={extension}",
                f"--ip-address-space-overrides=127.0.0.1:{site.public_server.server_port}=public",
            ],
        )
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        from direct_sockets.install.installer import extension_ids

        self.extension_id = extension_ids().chrome

    def navigate(self, url: str) -> None:
        self.page.goto(url, wait_until="commit")

    def extension_url(self, path: str) -> str:
        return f"chrome-extension://{self.extension_id}/{path}"

    def start_private(self, scenario: str, tab_id: int | None = None, **params: Any) -> tuple[queue.Queue[Any], int]:
        """Runs a scenario in an incognito window (a new one, or the tab given); returns its
        inbox and the tab's id. The window is made by the extension's own API, as Playwright
        cannot open one in a persistent context."""
        token = uuid.uuid4().hex
        inbox = self.site.inbox(token)
        url = self.site.scenario_url(scenario, params, token)
        worker = self.context.service_workers[0]
        if tab_id is None:
            tab_id = worker.evaluate(f"chrome.windows.create({{incognito: true, url: {json.dumps(url)}}}).then((w) => w.tabs[0].id)")
        else:
            worker.evaluate(f"chrome.tabs.update({tab_id}, {{url: {json.dumps(url)}}}).then(() => true)")
        return inbox, tab_id

    def tab_id_of(self, url: str) -> int:
        """The extension's id for the tab showing `url`, asked of the service worker (whose
        modules keep their state to themselves)."""
        worker = self.context.service_workers[0]
        return worker.evaluate(f"chrome.tabs.query({{}}).then((tabs) => tabs.find((t) => t.url === {json.dumps(url)}).id)")

    def current_tab_id(self) -> int:
        """The WebExtension id of the scenarios' tab, as the extension knows it."""
        return self.tab_id_of(self.page.url)

    def open_tab(self, url: str) -> None:
        self.tab = self.context.new_page()
        self.tab.goto(url, wait_until="commit")

    def close_tab(self) -> None:
        self.tab.close()

    def reload(self) -> None:
        self.page.reload(wait_until="commit")

    def windows_opened(self) -> int:
        if not hasattr(self, "_opened_pages"):
            self._opened_pages: list[Any] = []
            self.context.on("page", lambda page: self._opened_pages.append(page))
        self.page.wait_for_timeout(50)  # (lets Playwright report what opened meanwhile)
        return len(self._opened_pages)

    def close_stray_windows(self) -> None:
        for page in self.context.pages:
            if "/consent.html" in page.url and not page.is_closed():
                page.close()

    def answer_prompt(self, decision: str, address: str | None = None, timeout: float = 20, early_click: bool = False) -> dict[str, Any]:
        from playwright.sync_api import Error as PlaywrightError

        deadline = time.monotonic() + timeout
        window = None
        answered = self.__dict__.setdefault("_answered_windows", [])
        while window is None:
            window = next(
                (p for p in self.context.pages if "/consent.html" in p.url and not p.is_closed() and p not in answered), None
            )
            if window is None:
                if time.monotonic() > deadline:
                    raise AssertionError("no consent window appeared")
                self.page.wait_for_timeout(50)  # (not time.sleep: this lets Playwright see new pages)
        window.wait_for_selector("body[data-ready=true]", timeout=timeout * 1000)
        early: dict[str, Any] = {}
        if early_click:
            try:
                window.click(f"#{BUTTONS[decision]}", force=True, no_wait_after=True, timeout=1000)
            except PlaywrightError:
                pass
            self.page.wait_for_timeout(300)
            early["open_after_early_click"] = not window.is_closed()
            if window.is_closed():
                return early
        shown = {
            name: (window.inner_text(f"#{name}") if window.is_visible(f"#{name}") else None) for name in CONSENT_FIELDS
        }
        shown["address"] = window.input_value("#address")
        shown.update(early)
        answered.append(window)  # it may linger while it closes: never pick it again
        if address is not None:
            window.fill("#address", address)
        if decision == "close":
            window.close()
        else:
            if decision != "deny":  # the allowing buttons wait a moment once the window is focused
                window.wait_for_selector("body[data-armed=true]", timeout=timeout * 1000)

            try:
                window.click(f"#{BUTTONS[decision]}", no_wait_after=True)
            except PlaywrightError:
                # Answering closes the window, sometimes before the click call returns.
                if not window.is_closed():
                    raise
        return shown

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()


FIREFOX_PREFS = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.search.update": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "privacy.reduceTimerPrecision": False,
    "network.dns.localDomains": "insecure.test",
    "dom.security.https_first": False,
    "dom.security.https_only_mode": False,
}


class Firefox(Browser):
    name = "firefox"

    def __init__(self, base: Path, site: ScenarioSite, installed_env: dict[str, str] | None = None, extension: Path = EXTENSION) -> None:
        """`installed_env`: run with this environment (its HOME), using the host manifest already
        installed there, rather than a throw-away home with a fresh install; `extension`: the
        folder to load."""
        super().__init__(base, site)
        from marionette_driver.addons import Addons
        from marionette_driver.marionette import Marionette

        if installed_env is not None:
            self.env = installed_env
        else:
            cli(self.env, "install", "--browser", "firefox")
        self.manifest = Path(self.env["HOME"]) / ".mozilla" / "native-messaging-hosts" / "direct_sockets.json"
        profile = base / "ff-profile"
        profile.mkdir()
        port = free_port()
        prefs = {**FIREFOX_PREFS, "marionette.port": port}
        (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items()))
        self.log = open(base / "firefox.log", "w")
        self.proc = subprocess.Popen(
            [FIREFOX_BINARY, "--headless", "--marionette", "-remote-allow-system-access", "--no-remote", "--profile", str(profile)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        try:
            self.marionette = Marionette(host="127.0.0.1", port=port, startup_timeout=60)
            self.marionette.start_session()
            Addons(self.marionette).install(str(extension), temp=True)
        except BaseException:
            self.proc.kill()
            raise

    def navigate(self, url: str) -> None:
        self.marionette.navigate(url)

    def current_tab_id(self) -> int:
        """The WebExtension id of the selected tab, as the extension knows it."""
        m = self.marionette
        with m.using_context(m.CONTEXT_CHROME):
            return m.execute_script(
                "const { ExtensionParent } = ChromeUtils.importESModule('resource://gre/modules/ExtensionParent.sys.mjs');"
                "return ExtensionParent.apiManager.global.tabTracker.getId(window.gBrowser.selectedTab);"
            )

    def extension_url(self, path: str) -> str:
        """A temporary add-on's pages live under a per-install UUID, which Firefox keeps in a pref."""
        m = self.marionette
        with m.using_context(m.CONTEXT_CHROME):
            uuids = json.loads(m.execute_script("return Services.prefs.getStringPref('extensions.webextensions.uuids')"))
        from direct_sockets.install.installer import extension_ids

        return f"moz-extension://{uuids[extension_ids().gecko]}/{path}"

    def open_tab(self, url: str) -> None:
        self.first_tab = self.marionette.current_window_handle
        handle = self.marionette.open(type="tab")["handle"]
        self.marionette.switch_to_window(handle)
        self.marionette.navigate(url)

    def close_tab(self) -> None:
        self.marionette.close()
        self.marionette.switch_to_window(self.first_tab)

    def reload(self) -> None:
        self.marionette.refresh()

    def windows_opened(self) -> int:
        m = self.marionette
        with m.using_context(m.CONTEXT_CHROME):
            return m.execute_script(
                "if (globalThis.dsOpened === undefined) {"
                "  globalThis.dsOpened = 0;"
                "  Services.ww.registerNotification({ observe(subject, topic) { if (topic === 'domwindowopened') globalThis.dsOpened++; } });"
                "}"
                "return globalThis.dsOpened;",
                sandbox="ds-window-count", new_sandbox=False,
            )

    def close_stray_windows(self) -> None:
        m = self.marionette
        main = m.current_window_handle
        for handle in m.window_handles:
            if handle != main:
                m.switch_to_window(handle)
                m.close()
        m.switch_to_window(main)

    def answer_prompt(self, decision: str, address: str | None = None, timeout: float = 20, early_click: bool = False) -> dict[str, Any]:
        from marionette_driver.by import By
        from marionette_driver.errors import MarionetteException

        m = self.marionette
        main = m.current_window_handle
        deadline = time.monotonic() + timeout
        answered = self.__dict__.setdefault("_answered_windows", [])
        while True:
            others = [h for h in m.window_handles if h not in (main, getattr(self, "first_tab", None)) and h not in answered]
            if others:
                break
            if time.monotonic() > deadline:
                raise AssertionError("no consent window appeared")
            time.sleep(0.05)
        m.switch_to_window(others[0])
        answered.append(others[0])
        try:
            while m.execute_script("return document.body && document.body.dataset.ready") != "true":
                if time.monotonic() > deadline:
                    raise AssertionError("the consent window never became ready")
                time.sleep(0.05)
            shown: dict[str, Any] = {}
            if early_click:
                try:
                    m.find_element(By.ID, BUTTONS[decision]).click()
                except MarionetteException:
                    pass  # (a disabled button may refuse the click outright)
                time.sleep(0.3)
                shown["open_after_early_click"] = others[0] in m.window_handles
                if not shown["open_after_early_click"]:
                    return shown
            for name in CONSENT_FIELDS:
                element = m.find_element(By.ID, name)
                shown[name] = element.text if element.is_displayed() else None
            field = m.find_element(By.ID, "address")
            shown["address"] = field.get_property("value")
            if address is not None:
                field.clear()
                field.send_keys(address)
            if decision == "close":
                m.close()
            else:
                while decision != "deny" and m.execute_script("return document.body.dataset.armed") != "true":
                    if time.monotonic() > deadline:  # the allowing buttons wait a moment once focused
                        raise AssertionError("the consent window's buttons never armed")
                    time.sleep(0.05)
                m.find_element(By.ID, BUTTONS[decision]).click()
        finally:
            m.switch_to_window(main)
        return shown

    def close(self) -> None:
        try:
            self.marionette.delete_session()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# What a test reads off the consent window.
CONSENT_FIELDS = (
    "origin", "action", "port", "addresses", "scope", "scope-warning", "plaintext", "private", "allow-always",
    "cert-reason", "cert-fingerprint",
)
BUTTONS = {"once": "allow-once", "always": "allow-always", "session": "allow-always", "deny": "deny"}


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
