"""The toolbar badge and popup, and the options page, in Chromium and Firefox (the badge is
read in Chromium, through its service worker)."""

from __future__ import annotations

import pytest

from tests.browser.harness import Browser, Chromium, wait_for
from tests.support.servers import TcpServer, hashing_sink

pytestmark = pytest.mark.browser


def test_badge_and_popup_list_and_close_a_live_socket(browser: Browser) -> None:
    server = TcpServer(hashing_sink)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        inbox = browser.start("hold", port=server.port)
        assert inbox.get(timeout=30) == {"ok": True, "value": "opened"}
        tab_id = browser.current_tab_id()
        if isinstance(browser, Chromium):
            worker = browser.context.service_workers[0]
            badge = lambda: worker.evaluate(f"chrome.action.getBadgeText({{tabId: {tab_id}}})")  # noqa: E731
            assert badge() == "1"
        popup = ExtensionPage(browser, f"popup.html?tab={tab_id}")
        try:
            assert popup.texts("#sockets tbody tr:first-child td")[:3] == [browser.site.origin, "TCP", f"127.0.0.1:{server.port}"]
            popup.click("#sockets tbody tr button.close")
            result = inbox.get(timeout=10)
            assert result["value"]["closed"] == {"ok": False, "error": {"name": "NetworkError", "message": "Network error.", "isDOMException": True}}
            assert len(server.wait_results(1, timeout=10)) == 1  # the host closed it
            assert wait_for(lambda: "closed by the user" in popup.text("#failures"), timeout=10)
            assert wait_for(lambda: popup.texts("#sockets tbody tr") == [], timeout=10)
            if isinstance(browser, Chromium):
                assert badge() == ""
        finally:
            popup.close()
    finally:
        server.close()


def test_options_page_lists_and_revokes_grants(browser: Browser) -> None:
    from tests.browser.harness import cli

    browser.grant("127.0.0.1:7")
    browser.grant("[::1]:*", kind="udp")
    browser.grant("127.0.0.1:9", origin="https://other.example")
    page = ExtensionPage(browser, "options.html")
    try:
        assert sorted(page.sites()) == sorted([[browser.site.origin, 2], ["https://other.example", 1]])
        mine = page.text(f"section[data-origin='{browser.site.origin}']")
        assert "UDP with" in mine and "[::1]:any port" in mine
        page.click(f"section[data-origin='{browser.site.origin}'] tr:first-child button.revoke")  # TCP to 127.0.0.1:7
        assert wait_for(lambda: dict(map(tuple, page.sites())).get(browser.site.origin) == 1, timeout=10)
        page.click("section[data-origin='https://other.example'] button.revoke-site")
        assert wait_for(lambda: len(page.sites()) == 1, timeout=10)
        left = cli(browser.env, "permissions", "list", "--json")
        assert '"kind": "udp"' in left and '"port": 7' not in left and "other.example" not in left
    finally:
        page.close()


class ExtensionPage:
    """One of the extension's own pages in a tab of its own, driven with Playwright or Marionette."""

    def __init__(self, browser: Browser, path: str) -> None:
        self.browser = browser
        url = browser.extension_url(path)
        if isinstance(browser, Chromium):
            self.page = browser.context.new_page()
            self.page.goto(url)
            self.page.wait_for_selector("body[data-ready=true]")
        else:
            browser.open_tab(url)
            assert wait_for(lambda: self._script("return document.body && document.body.dataset.ready") == "true", timeout=10)

    def _script(self, code: str, *args: object):  # type: ignore[no-untyped-def]
        return self.browser.marionette.execute_script(code, script_args=list(args))

    def _run(self, body: str, *args: object):  # type: ignore[no-untyped-def]
        """Runs `body` (a function body using `arguments`) in the page, in either browser.
        (Not wait_for_function: extension pages forbid eval.)"""
        if isinstance(self.browser, Chromium):
            return self.page.evaluate(f"(args) => (function () {{ {body} }}).apply(null, args)", list(args))
        return self._script(body, *args)

    def texts(self, selector: str) -> list[str]:
        return self._run("return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent.trim())", selector)

    def text(self, selector: str) -> str:
        return self._run("return document.querySelector(arguments[0]).textContent", selector)

    def sites(self) -> list[list]:
        return [list(x) for x in self._run("return [...document.querySelectorAll('section')].map((e) => [e.dataset.origin, e.querySelectorAll('tr').length])")]

    def click(self, selector: str) -> None:
        if isinstance(self.browser, Chromium):
            self.page.click(selector)
        else:
            from marionette_driver.by import By

            self.browser.marionette.find_element(By.CSS_SELECTOR, selector).click()

    def close(self) -> None:
        if isinstance(self.browser, Chromium):
            self.page.close()
        else:
            self.browser.close_tab()
