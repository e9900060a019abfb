"""A hostile page: it cannot forge its origin, borrow the extension's channels or frames to
reach what it was not given, or flood the user with consent windows."""

from __future__ import annotations

import threading
import time

import pytest
from websockets.sync.server import serve

from tests.browser.harness import Browser, Chromium
from tests.support.servers import TcpServer, echo

pytestmark = pytest.mark.browser


def test_a_page_cannot_hand_the_extension_a_channel_of_its_own(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}", origin="https://bank.example")
    result = browser.run("forgePort", port=echo_server.port)
    assert result == {"taken": False, "heard": []}
    time.sleep(0.5)
    assert echo_server.accepted == 0  # nothing was opened, as bank.example or as itself


def test_the_bulk_frame_reaches_nothing_for_another_page(browser: Browser) -> None:
    """Embedded by a page with a made-up secret, the frame asks the background, which knows
    every live offer, and connects nowhere: not to the host, not to any other WebSocket."""
    connections = []
    with serve(lambda ws: connections.append(ws.remote_address) or ws.recv(), "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        heard = browser.run("borrowBulkFrame", bulkFrame=browser.extension_url("bulk.html"), wsPort=server.socket.getsockname()[1])
        server.shutdown()
    assert heard == [{"op": "frame-ready"}, {"op": "bulk_failed", "sid": 1, "reason": "unconfirmed"}]
    assert connections == []


def test_a_flood_of_requests_shows_one_window_at_a_time(browser: Browser) -> None:
    servers = [TcpServer(echo) for _ in range(3)]
    ports = sorted(s.port for s in servers)
    try:
        base = ports[0]
        inbox = browser.start("flood", port=base, count=30)
        shown = [browser.answer_prompt("deny")]
        if isinstance(browser, Chromium):
            # One window at a time: the others wait their turn (8 at most) or are refused.
            browser.page.wait_for_timeout(1000)
            windows = [p for p in browser.context.pages if "/consent.html" in p.url and not p.is_closed()]
            assert len(windows) <= 2, [p.url for p in windows]  # the next one, and the answered one closing
        shown += [browser.answer_prompt("deny") for _ in range(2)]  # then the site is refused unasked
        assert all(s["origin"] == browser.site.origin for s in shown)
        result = inbox.get(timeout=60)
        assert result["ok"], result
        outcomes = result["value"]
        assert outcomes == ["NotAllowedError"] * 30
        if isinstance(browser, Chromium):
            browser.page.wait_for_timeout(1000)  # (lets Playwright see the windows close)
            assert not [p for p in browser.context.pages if "/consent.html" in p.url and not p.is_closed()]
        assert all(s.accepted == 0 for s in servers)
    finally:
        for s in servers:
            s.close()
