"""The bulk path from real pages: a TCP socket's bytes over the loopback WebSocket that the
frame's content script opens, shown in the popup, and its fallback to native messaging."""

from __future__ import annotations


import pytest

from tests.browser.harness import Browser, Chromium, wait_for
from tests.browser.test_popup import ExtensionPage
from tests.support.servers import TcpServer, hashing_sink

pytestmark = pytest.mark.browser


def popup_for_live_socket(browser: Browser, port: int) -> ExtensionPage:
    return ExtensionPage(browser, f"popup.html?tab={browser.current_tab_id()}")


def path_of_live_socket(browser: Browser, port: int, origin: str | None = None, **params: object) -> str:
    return paths_of_live_sockets(browser, origin, **params)[-1]


def paths_of_live_sockets(browser: Browser, origin: str | None = None, before: int = 0, **params: object) -> list[str]:
    """The path the popup shows for each socket the "hold" scenario holds open: `before` echoing
    ones (to the `echoPort` given), then the last one, to a server here."""
    server = TcpServer(hashing_sink)
    try:
        browser.grant(f"127.0.0.1:{server.port}", origin=origin)
        inbox = browser.start("hold", origin=origin, port=server.port, before=before, **params)
        assert inbox.get(timeout=60) == {"ok": True, "value": "opened"}
        popup = popup_for_live_socket(browser, server.port)
        try:
            assert wait_for(lambda: len(popup.texts("#sockets tbody tr")) == before + 1, timeout=10)
            # A path is known once its WebSocket attached or was given up.
            paths: list[str] = []
            for _ in range(100):
                paths = popup.texts("#sockets tbody tr td:nth-child(7)")  # the path column
                if all(paths):
                    break
            return paths
        finally:
            popup.close()
    finally:
        server.close()


def test_sockets_use_the_websocket_and_the_popup_says_so(browser: Browser) -> None:
    assert path_of_live_socket(browser, 0) == "WebSocket"


def test_bulk_bytes_are_counted_in_the_popup(browser: Browser) -> None:
    size = 3 << 20

    def push_then_hold(conn):  # type: ignore[no-untyped-def]
        conn.sendall(bytes(size))
        return len(conn.recv(1 << 16))

    server = TcpServer(push_then_hold)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        inbox = browser.start("readThenHold", port=server.port, size=size)
        assert inbox.get(timeout=60) == {"ok": True, "value": size}
        popup = popup_for_live_socket(browser, server.port)
        try:
            # Sent and received, as the bridge reports them about once a second.
            assert wait_for(lambda: popup.texts("#sockets tbody tr:first-child td")[3:5] == ["2.9 KiB", "3.0 MiB"], timeout=10), \
                popup.texts("#sockets tbody tr:first-child td")
        finally:
            popup.close()
    finally:
        server.close()


def test_a_page_whose_csp_forbids_connections_still_works(browser: Browser, echo_server: TcpServer) -> None:
    csp = "connect-src 'self'"
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("echo", port=echo_server.port, text="under a strict CSP", contentSecurityPolicy=csp)
    assert result["got"] == "under a strict CSP"
    # The page's own WebSocket is refused by its CSP; the bulk frame is not: the extension's in
    # Chromium, the host's in Firefox (the extension's URL would name the per-install UUID).
    assert path_of_live_socket(browser, 0, contentSecurityPolicy=csp) == "WebSocket"


@pytest.mark.parametrize("browser", ["firefox"], indirect=True)  # Chromium's frame is the extension's
def test_a_page_whose_csp_forbids_frames_too_gets_native_messaging_at_once(browser: Browser, echo_server: TcpServer) -> None:
    """Where the host's frame is refused as well, the socket takes native messaging without
    waiting out the bulk path's time (3 s): the frame that loads and does not answer is given
    half a second."""
    csp = "connect-src 'self'; frame-src 'none'"
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("echo", port=echo_server.port, text="framed out", contentSecurityPolicy=csp)
    assert result["got"] == "framed out"
    assert result["ms"] < 2500, result
    assert path_of_live_socket(browser, 0, contentSecurityPolicy=csp) == "native messaging (the bulk frame could not be used here)"


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)  # Local Network Access is Chromium's
def test_a_page_on_the_public_internet_still_gets_the_websocket(browser: Browser, echo_server: TcpServer) -> None:
    """Chromium applies Local Network Access to a public page's own requests to loopback, and to
    its content scripts' (measured: both refused). The bulk frame is the extension's, so its
    WebSocket is not the page's request."""
    assert isinstance(browser, Chromium)
    public = browser.site.public_origin
    from websockets.sync.server import serve

    with serve(lambda ws: ws.recv(), "127.0.0.1", 0) as ws_server:
        import threading

        threading.Thread(target=ws_server.serve_forever, daemon=True).start()
        ws_port = ws_server.socket.getsockname()[1]
        assert browser.run("pageWebSocket", port=ws_port) == "open"  # a local page may
        assert browser.run("pageWebSocket", origin=public, port=ws_port) == "error"  # a public one may not
        ws_server.shutdown()
    browser.grant(f"127.0.0.1:{echo_server.port}", origin=public)
    result = browser.run("echo", origin=public, port=echo_server.port, text="from the public internet")
    assert result["got"] == "from the public internet"
    assert path_of_live_socket(browser, 0, origin=public) == "WebSocket"


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)  # Local Network Access is Chromium's
def test_a_page_whose_own_websocket_is_refused_tries_it_once(browser: Browser, echo_server: TcpServer) -> None:
    """Chromium delays each new WebSocket of a renderer process by about 2^(recent failed
    connections) x 1-5 s / 65536. A page at a loopback address that Chromium counts as public
    (the override) tries its own WebSocket first and is refused; were it to try again for every
    socket, the sixteenth and later would wait seconds and miss the 3 s the bulk path is given
    (measured: attach 13 ms for the first sockets, 0.9 s at the 14th, 3 s from the 16th on)."""
    public = browser.site.public_origin
    browser.grant(f"127.0.0.1:{echo_server.port}", origin=public)
    paths = paths_of_live_sockets(browser, origin=public, echoPort=echo_server.port, before=20)
    assert paths == ["WebSocket"] * 21, paths
