"""The toolbar badge and popup: a tab's open sockets, seen and closed by the user (Chromium).

Firefox runs the same popup code; its temporary add-on's pages live under a per-install UUID
that the test cannot name, so the popup is driven here in Chromium only."""

from __future__ import annotations

import pytest

from tests.browser.harness import Browser, Chromium, wait_for
from tests.support.servers import TcpServer, hashing_sink

pytestmark = pytest.mark.browser


def test_badge_and_popup_list_and_close_a_live_socket(browser: Browser) -> None:
    if not isinstance(browser, Chromium):
        pytest.skip("the popup is driven in Chromium (see the module's docstring)")
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
    if not isinstance(browser, Chromium):
        pytest.skip("the options page is driven in Chromium (see the module's docstring)")
    from tests.browser.harness import cli

    browser.grant("127.0.0.1:7")
    browser.grant("[::1]:*", kind="udp")
    browser.grant("127.0.0.1:9", origin="https://other.example")
    page = browser.context.new_page()
    try:
        page.goto(f"chrome-extension://{browser.extension_id}/options.html")
        page.wait_for_selector("body[data-ready=true]")
        sites = page.locator("section").evaluate_all("(s) => s.map((e) => [e.dataset.origin, e.querySelectorAll('tr').length])")
        assert sorted(sites) == sorted([[browser.site.origin, 2], ["https://other.example", 1]])
        mine = page.locator(f"section[data-origin='{browser.site.origin}']")
        assert "UDP with" in mine.inner_text() and "[::1]:any port" in mine.inner_text()
        mine.locator("tr", has_text="TCP to").locator("button.revoke").click()
        assert wait_for(lambda: mine.locator("tr").count() == 1 or page.wait_for_timeout(50), timeout=10)
        page.locator("section[data-origin='https://other.example'] button.revoke-site").click()
        assert wait_for(lambda: page.locator("section").count() == 1 or page.wait_for_timeout(50), timeout=10)
        left = cli(browser.env, "permissions", "list", "--json")
        assert '"kind": "udp"' in left and '"port": 7' not in left and "other.example" not in left
    finally:
        page.close()
