"""The toolbar badge and popup (Chromium), and the options page (Chromium and Firefox).

The popup needs the tab id of the page whose sockets it lists, which the test reads from
Chromium's service worker; Firefox runs the same popup code, but its background page is not
reachable from Marionette's content context, so the popup is driven in Chromium only."""

from __future__ import annotations

import pytest

from tests.browser.harness import Browser, Chromium, wait_for
from tests.support.servers import TcpServer, hashing_sink

pytestmark = pytest.mark.browser


def test_badge_and_popup_list_and_close_a_live_socket(browser: Browser) -> None:
    if not isinstance(browser, Chromium):
        pytest.skip("the popup is driven in Chromium only (see the module's docstring)")
    server = TcpServer(hashing_sink)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        inbox = browser.start("hold", port=server.port)
        assert inbox.get(timeout=30) == {"ok": True, "value": "opened"}
        worker = browser.context.service_workers[0]
        tab_id = worker.evaluate(f"[...routes.values()].find((r) => r.destination.endsWith(':{server.port}')).frame.tabId")
        assert worker.evaluate(f"chrome.action.getBadgeText({{tabId: {tab_id}}})") == "1"
        popup = browser.context.new_page()
        try:
            popup.goto(f"chrome-extension://{browser.extension_id}/popup.html?tab={tab_id}")
            popup.wait_for_selector("body[data-ready=true]")
            cells = popup.locator("#sockets tbody tr").first.locator("td").all_inner_texts()
            assert cells[:3] == [browser.site.origin, "TCP", f"127.0.0.1:{server.port}"]
            popup.click("#sockets tbody tr button.close")
            result = inbox.get(timeout=10)
            assert result["value"]["closed"] == {"ok": False, "error": {"name": "NetworkError", "message": "Network error.", "isDOMException": True}}
            assert len(server.wait_results(1, timeout=10)) == 1  # the host closed it
            # (Extension pages forbid eval, so no wait_for_function: poll with locators.)
            assert wait_for(lambda: "closed by the user" in popup.inner_text("#failures") or popup.wait_for_timeout(50), timeout=10)
            assert popup.is_visible("#none")
            assert worker.evaluate(f"chrome.action.getBadgeText({{tabId: {tab_id}}})") == ""
        finally:
            popup.close()
    finally:
        server.close()


def test_options_page_lists_and_revokes_grants(browser: Browser) -> None:
    from tests.browser.harness import cli

    browser.grant("127.0.0.1:7")
    browser.grant("[::1]:*", kind="udp")
    browser.grant("127.0.0.1:9", origin="https://other.example")
    page = OptionsPage(browser)
    try:
        assert sorted(page.sites()) == sorted([[browser.site.origin, 2], ["https://other.example", 1]])
        mine = page.text(browser.site.origin)
        assert "UDP with" in mine and "[::1]:any port" in mine
        page.click(f"section[data-origin='{browser.site.origin}'] tr:first-child button.revoke")  # TCP to 127.0.0.1:7
        assert wait_for(lambda: page.rows(browser.site.origin) == 1, timeout=10)
        page.click("section[data-origin='https://other.example'] button.revoke-site")
        assert wait_for(lambda: len(page.sites()) == 1, timeout=10)
        left = cli(browser.env, "permissions", "list", "--json")
        assert '"kind": "udp"' in left and '"port": 7' not in left and "other.example" not in left
    finally:
        page.close()


class OptionsPage:
    """The options page in a tab of its own, driven with Playwright or Marionette."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        url = browser.extension_url("options.html")
        if isinstance(browser, Chromium):
            self.page = browser.context.new_page()
            self.page.goto(url)
            self.page.wait_for_selector("body[data-ready=true]")
        else:
            browser.open_tab(url)
            assert wait_for(lambda: self._script("return document.body && document.body.dataset.ready") == "true", timeout=10)

    def _script(self, code: str):  # type: ignore[no-untyped-def]
        return self.browser.marionette.execute_script(code)

    def sites(self) -> list[list]:
        code = "return [...document.querySelectorAll('section')].map((e) => [e.dataset.origin, e.querySelectorAll('tr').length])"
        if isinstance(self.browser, Chromium):
            return self.page.evaluate("() => " + code[len("return "):])
        return [list(x) for x in self._script(code)]

    def rows(self, origin: str) -> int:
        return dict((o, n) for o, n in self.sites()).get(origin, 0)

    def text(self, origin: str) -> str:
        selector = f"section[data-origin='{origin}']"
        if isinstance(self.browser, Chromium):
            return self.page.inner_text(selector)
        from marionette_driver.by import By

        return self.browser.marionette.find_element(By.CSS_SELECTOR, selector).text

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
