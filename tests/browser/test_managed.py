"""The extension installed by policy stays: a fresh profile started twice, in real Chromium and
Firefox, with no developer-mode step (no --load-extension, no temporary add-on). Each time a
page's TCPSocket echoes through the host, which only answers the extension ID in its manifest.

The CLI writes the policies where the browsers read them on Linux (/etc/chromium/policies/managed,
/etc/firefox/policies). The machine's /etc is never changed: the CLI and each browser run in a
mount namespace of their own (unshare) over which /etc is an overlay whose changes land in a
throw-away folder; the test checks afterwards that the real folders are as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable

import pytest

from direct_sockets.install.installer import extension_ids
from tests.browser.conftest import IN_CI
from tests.browser.harness import CHROMIUM_BINARY, CHROMIUM_FLAGS, FIREFOX_BINARY, FIREFOX_PREFS, ScenarioSite, browser_env, cli, wait_for
from tests.conftest import PRIVATE_NETWORK
from tests.support.servers import TcpServer

pytestmark = pytest.mark.browser

TEXT = "still here after a restart"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)  # in CI a test that cannot run is a failure, not a skip
    pytest.skip(message)


class PrivateEtc:
    """Runs commands in their own mount namespace, over which /etc is an overlay: what they
    write under /etc goes to `upper`, kept between commands, and nobody else sees it."""

    def __init__(self, base: Path) -> None:
        self.upper, self.work = base / "etc-upper", base / "etc-work"
        self.upper.mkdir(parents=True)
        self.work.mkdir()
        # The overlay shows /etc's own files, not what is mounted over them: keep the test
        # session's resolv.conf (its own DNS server on loopback), so no lookup leaves the machine.
        shutil.copy("/etc/resolv.conf", self.upper / "resolv.conf")

    def command(self, argv: list[str]) -> list[str]:
        script = f'mount -t overlay overlay -o lowerdir=/etc,upperdir="{self.upper}",workdir="{self.work}" /etc && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def run(self, argv: list[str], env: dict[str, str]) -> str:
        result = subprocess.run(self.command(argv), env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
        return result.stdout


@pytest.fixture
def private_etc(tmp_path: Path) -> PrivateEtc:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        _unavailable("a private /etc needs root and unshare(1)")
    etc = PrivateEtc(tmp_path)
    probe = subprocess.run(etc.command(["true"]), capture_output=True, text=True)
    if probe.returncode != 0:
        _unavailable(f"cannot mount an overlay on /etc in a private namespace: {probe.stderr.strip()}")
    return etc


def _start_twice(etc: PrivateEtc, site: ScenarioSite, argv_for: object, env: dict[str, str], port: int, log: Path,
                 settled: Callable[[], bool] = lambda: True) -> list[dict]:  # type: ignore[type-arg]
    """Starts the browser on the page twice (the same profile), each time until the page reports
    (and, the first time, until the browser has `settled` what it keeps for the next start)."""
    results = []
    for start in (1, 2):
        token = uuid.uuid4().hex
        url = f"{site.origin}/stays.html?" + urllib.parse.urlencode(
            {"token": token, "params": json.dumps({"port": port, "text": TEXT})}
        )
        with open(log.with_suffix(f".{start}.log"), "w") as out:
            proc = subprocess.Popen(etc.command(argv_for(url)), env=env, stdout=out, stderr=subprocess.STDOUT)  # type: ignore[operator]
            try:
                result = site.inbox(token).get(timeout=120)
                if start == 1:
                    assert wait_for(settled, timeout=30), "the browser did not write down what it keeps for its next start"
            finally:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        assert result.get("ok"), f"start {start}: {result.get('error')}"
        results.append(result["value"])
    return results


def test_chromium_keeps_the_extension_forced_by_policy(site: ScenarioSite, echo_server: TcpServer, private_etc: PrivateEtc, tmp_path: Path) -> None:
    if not Path(CHROMIUM_BINARY).exists():
        _unavailable(f"Chromium is not installed ({CHROMIUM_BINARY})")
    if not PRIVATE_NETWORK.active:
        # This Chromium runs without --disable-background-networking (below): only the tests'
        # own namespace keeps what else it tries from leaving the machine.
        _unavailable(f"needs the tests' private network namespace: {PRIVATE_NETWORK.reason}")
    env = browser_env(tmp_path)
    profile, out = tmp_path / "profile", tmp_path / "packages"
    said = private_etc.run([sys.executable, "-m", "direct_sockets", "managed", "chromium", "--key", str(tmp_path / "deployer.pem"), "--out", str(out)], env)
    ext_id = said.split("extension ID ")[1].split(":")[0]
    assert ext_id != extension_ids().chrome  # the deployer's, not the dev key's
    policy = private_etc.upper / "chromium" / "policies" / "managed" / "direct-sockets.json"
    assert json.loads(policy.read_text())["ExtensionInstallForcelist"] == [f"{ext_id};{(out / 'updates.xml').as_uri()}"]
    cli(env, "install", "--browser", "chromium", "--user-data-dir", str(profile), "--extension-id", ext_id)
    cli(env, "permissions", "grant", "--origin", site.origin, "--tcp", f"127.0.0.1:{echo_server.port}")
    # Chromium's extension updater, which fetches what the policy names, is one of the things
    # --disable-background-networking turns off; inside the tests' network namespace nothing
    # else it tries can leave the machine.
    flags = [f for f in CHROMIUM_FLAGS if f != "--disable-background-networking"]

    def argv(url: str) -> list[str]:
        return [CHROMIUM_BINARY, *flags, f"--user-data-dir={profile}", url]

    first, second = _start_twice(private_etc, site, argv, env, echo_server.port, tmp_path / "chromium")
    print(f"page loads until the API was there: first start {first['loads']}, after the restart {second['loads']}")
    assert first["got"] == second["got"] == TEXT
    settings = json.loads((profile / "Default" / "Preferences").read_text())["extensions"]["settings"][ext_id]
    assert settings["location"] == 7  # EXTERNAL_POLICY_DOWNLOAD: installed by the policy, from our update URL
    assert second["loads"] == 1, "after the restart the extension was there from the first page"
    assert not Path("/etc/chromium/policies").exists(), "the machine's /etc was changed"


def test_firefox_keeps_the_extension_forced_by_policy(site: ScenarioSite, echo_server: TcpServer, private_etc: PrivateEtc, tmp_path: Path) -> None:
    if not Path(FIREFOX_BINARY).exists():
        _unavailable(f"Firefox is not installed ({FIREFOX_BINARY})")
    env = browser_env(tmp_path)
    out, profile = tmp_path / "packages", tmp_path / "ff-profile"
    private_etc.run([sys.executable, "-m", "direct_sockets", "managed", "firefox", "--out", str(out)], env)
    policies = json.loads((private_etc.upper / "firefox" / "policies" / "policies.json").read_text())["policies"]
    gecko = extension_ids().gecko
    assert policies["ExtensionSettings"][gecko] == {"installation_mode": "force_installed", "install_url": (out / "direct-sockets.xpi").as_uri()}
    cli(env, "install", "--browser", "firefox")
    cli(env, "permissions", "grant", "--origin", site.origin, "--tcp", f"127.0.0.1:{echo_server.port}")
    profile.mkdir()
    # The harness's quiet prefs only; nothing about signatures or add-ons: the policy does that.
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in FIREFOX_PREFS.items()))

    def argv(url: str) -> list[str]:
        return [FIREFOX_BINARY, "--headless", "--no-remote", "--profile", str(profile), url]

    def permissions_kept() -> bool:
        # Firefox writes the add-on's granted origins to the profile a moment after installing
        # it; stopped before that (seen: 1 start in 8), it starts the next time with the add-on
        # but without them, and its content scripts never run.
        kept = profile / "extension-preferences.json"
        return kept.exists() and "<all_urls>" in json.loads(kept.read_text()).get(gecko, {}).get("origins", [])

    first, second = _start_twice(private_etc, site, argv, env, echo_server.port, tmp_path / "firefox", settled=permissions_kept)
    print(f"page loads until the API was there: first start {first['loads']}, after the restart {second['loads']}")
    assert first["got"] == second["got"] == TEXT
    addon = next(a for a in json.loads((profile / "extensions.json").read_text())["addons"] if a["id"] == gecko)
    assert addon["active"] and addon["location"] == "app-profile" and not addon.get("temporarilyInstalled")
    assert second["loads"] == 1, "after the restart the add-on was there from the first page"
    assert not Path("/etc/firefox").exists(), "the machine's /etc was changed"
