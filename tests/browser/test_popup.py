"""The toolbar badge and popup: a tab's open sockets, seen and closed by the user (Chromium).

Firefox runs the same popup code; its temporary add-on's pages live under a per-install UUID
that the test cannot name, so the popup is driven here in Chromium only."""

from __future__ import annotations

import pytest

from tests.browser.harness import Browser, Chromium
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
            popup.wait_for_function("document.querySelector('#failures').textContent.includes('closed by the user')")
            assert popup.is_visible("#none")
            assert worker.evaluate(f"chrome.action.getBadgeText({{tabId: {tab_id}}})") == ""
        finally:
            popup.close()
    finally:
        server.close()
