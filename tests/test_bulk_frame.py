"""The host's own bulk frame (sockets/bulk_frame.py), through the real host process: served only
to Firefox, only on the bulk server's own names, and able to claim a socket only for the page
that embedded it (docs/BULK.md, "The host's frame, for Firefox's workers")."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from typing import cast
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect

from direct_sockets.resources import extension_dir
from direct_sockets.sockets import bulk
from direct_sockets.sockets.bulk import BulkServer
from direct_sockets.sockets.bulk_link import BulkSocket
from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer
from tests.test_bounds import close_of
from tests.test_bulk import ORIGIN, open_bulk
from tests.test_host_process import grant


# What Firefox sends when a page embeds the frame, and when the frame loads its script.
AS_FRAME = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}
AS_ITS_SCRIPT = {"Sec-Fetch-Dest": "script", "Sec-Fetch-Site": "same-origin"}


def get(url: str, path: str, host: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    if headers is None:
        headers = AS_ITS_SCRIPT if path.startswith("/frame.js") else AS_FRAME
    try:
        connection.request("GET", path, headers={**headers, **({"Host": host} if host else {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


OTHER = "https://other.example"


def test_firefox_gets_the_frame_on_a_port_of_the_pages_own_and_nothing_else(
    firefox_host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer,
) -> None:
    offer = open_bulk(firefox_host, isolated_env, echo_server.port)
    frame = offer["frame"]
    port = urlsplit(frame).port
    # Under the name of another site than the page's (http://127.0.0.1:8000): its own process.
    assert frame == f"http://localhost:{port}/frame" and port != urlsplit(offer["url"]).port
    for name in ("127.0.0.1", "localhost"):
        status, headers, body = get(frame, "/frame", host=f"{name}:{port}")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script src="/frame.js"></script>' in body
        # Its own script only, and only the bulk server to connect to.
        assert headers["content-security-policy"].startswith(f"default-src 'none'; script-src 'self'; connect-src ws://127.0.0.1:{port};")
        assert headers["cross-origin-resource-policy"] == "cross-origin" and headers["x-content-type-options"] == "nosniff"
    status, headers, body = get(frame, "/frame.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert body == (extension_dir() / "bulk.js").read_bytes()  # one implementation of the frame
    # Any other path, the frame under another name (a rebound DNS name, say), or either asked
    # for as something else (another page loading the script, to find the listeners): nothing.
    for path, host, headers in (
        ("/", None, None), ("/bulk.html", None, None), ("/frame?x", None, None), ("/frame", f"evil.example:{port}", None),
        ("/frame", "127.0.0.1", None), ("/frame", None, {}), ("/frame", None, AS_ITS_SCRIPT), ("/frame.js", None, {}),
        ("/frame.js", None, {"Sec-Fetch-Dest": "script", "Sec-Fetch-Site": "cross-site"}), ("/frame.js", None, AS_FRAME),
    ):
        status, _, body = get(frame, path, host=host, headers=headers)
        assert (status, body) == (404, b"Not Found\n"), (path, host, headers)
    # The bulk server's own port serves WebSockets only.
    assert get(offer["url"].replace("ws:", "http:"), "/frame")[0] == 426
    # The page's next socket in its tab gets the same frame. Another page, or the same page in
    # another tab (or a private window: test_each_tab_and_private_window_has_its_own_listener),
    # gets a port of its own (under 127.0.0.1 for a page
    # whose site is not 127.0.0.1's), so that the frame shows no value two of them share.
    assert open_bulk(firefox_host, isolated_env, echo_server.port, sid=2)["frame"] == frame
    grant(isolated_env, f"127.0.0.1:{echo_server.port}", origin=OTHER)
    other = open_bulk(firefox_host, isolated_env, echo_server.port, sid=3, origin=OTHER)["frame"]
    assert other.startswith("http://127.0.0.1:")
    other_tab = open_bulk(firefox_host, isolated_env, echo_server.port, sid=4, tabId=2)["frame"]
    ports = [urlsplit(u).port for u in (offer["url"], frame, other, other_tab)]
    assert len(set(ports)) == 4, ports


def test_a_pages_sockets_opened_at_once_share_one_frame(firefox_host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    firefox_host.hello()
    for sid in (1, 2, 3):  # before any answer: the first listener is still being made
        firefox_host.send({"type": "tcp_open", "id": sid, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
                           "remoteAddress": "127.0.0.1", "remotePort": echo_server.port, "options": {}, "bulk": True})
    frames = {firefox_host.expect("opened", id=sid)["bulk"]["frame"] for sid in (1, 2, 3)}
    assert len(frames) == 1, frames


def test_chromium_gets_no_frame_from_the_host(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    assert "frame" not in offer
    status, _, body = get(offer["url"].replace("ws:", "http:"), "/frame")
    assert status == 426 and b"<script" not in body  # only WebSockets, as before


def frame_claim(token: str, page: str) -> str:
    return json.dumps({"secret": token, "page": page})


def test_the_frame_claims_only_for_the_page_that_embedded_it(
    firefox_host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer,
) -> None:
    offer = open_bulk(firefox_host, isolated_env, echo_server.port)
    grant(isolated_env, f"127.0.0.1:{echo_server.port}", origin=OTHER)
    others = open_bulk(firefox_host, isolated_env, echo_server.port, sid=2, origin=OTHER)
    url, token = offer["url"], offer["token"]
    port = urlsplit(offer["frame"]).port
    ws_url = f"ws://127.0.0.1:{port}/"
    frame = f"http://localhost:{port}"
    other_port = urlsplit(others["frame"]).port
    # The same page in another tab has a listener of its own; this socket's offer named not it.
    other_tab_port = urlsplit(open_bulk(firefox_host, isolated_env, echo_server.port, sid=3, tabId=2)["frame"]).port
    assert other_tab_port != port
    attempts = {
        "for another page": (ws_url, frame, frame_claim(token, OTHER)),
        "for no page that parses": (ws_url, frame, frame_claim(token, "null")),
        "for the frame itself": (ws_url, frame, frame_claim(token, frame)),
        "the bare secret from the frame": (ws_url, frame, token),
        "a claim with more in it": (ws_url, frame, json.dumps({"secret": token, "page": ORIGIN, "also": 1})),
        "a claim from a frame of another port": (ws_url, f"http://localhost:{port + 1}", frame_claim(token, ORIGIN)),
        "a claim from the page's own origin": (ws_url, ORIGIN, frame_claim(token, ORIGIN)),
        "the bare secret from the page's own origin, on the frame's port": (ws_url, ORIGIN, token),
        "a claim too long to read": (ws_url, frame, frame_claim(token, ORIGIN + "/" * 600)),
        "a claim on the bulk server's own port": (url, frame, frame_claim(token, ORIGIN)),
        # Another page's frame, embedded by that page, with this page's secret: its listener
        # is that page's, and so is what it claims for.
        "another page's frame, for that page": (f"ws://127.0.0.1:{other_port}/", f"http://127.0.0.1:{other_port}", frame_claim(token, OTHER)),
        "another page's frame, for this page": (f"ws://127.0.0.1:{other_port}/", f"http://127.0.0.1:{other_port}", frame_claim(token, ORIGIN)),
        "this page's frame in another tab": (f"ws://127.0.0.1:{other_tab_port}/", f"http://localhost:{other_tab_port}", frame_claim(token, ORIGIN)),
    }
    for what, (where, origin, first) in attempts.items():
        code, reason, took = close_of(where, origin, first)
        assert (code, reason) == (1008, ""), what  # refused like any failed claim
        assert took < 3, what
    # None of that used the offer up: the frame's claim for the socket's own page attaches.
    with connect(ws_url, origin=f"http://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
        ws.send(frame_claim(token, ORIGIN))
        assert json.loads(ws.recv(timeout=10)) == {"type": "attached", "id": 1}
        ws.send(json.dumps({"type": "read", "bytes": 16}))
        ws.send(b"through a frame")
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        assert ws.recv(timeout=10) == b"through a frame"


def test_chromium_takes_no_claim_from_a_frame_origin(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    port = urlsplit(offer["url"]).port
    assert close_of(offer["url"], f"http://localhost:{port}", frame_claim(offer["token"], ORIGIN))[:2] == (1008, "")


def test_every_bulk_connection_sends_small_messages_at_once() -> None:
    """TCP_NODELAY on what each listener accepts, the frame's included: without it Nagle held a
    small message behind the one before for the peer's delayed ACK, 44 ms a round trip from a
    Firefox worker (measured)."""

    async def run() -> list[int]:
        server = BulkServer()
        server.for_caller("firefox", "direct-sockets@direct-sockets.invalid")
        server.page_origin = lambda connection: ORIGIN
        offer = await server.offer(cast(BulkSocket, object()))
        assert offer is not None
        found = []
        for url in (offer["url"].replace("ws:", "http:"), offer["frame"]):
            parts = urlsplit(url)
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            for _ in range(100):  # until the server's side of it is made
                await asyncio.sleep(0.01)
                channels = [c for c in server._channels if c._transport.get_extra_info("peername")[1] == writer.get_extra_info("sockname")[1]]
                if channels:
                    break
            [channel] = channels
            found.append(channel._transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
        await server.close()
        return found

    assert all(asyncio.run(run())), "a bulk connection without TCP_NODELAY"


def answers_to(port: int, raw: bytes) -> bytes:
    """Everything a bulk listener sends back to `raw`, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(raw)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


def test_malformed_requests_to_a_frame_listener_end_only_their_connection(
    firefox_host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer,
) -> None:
    """What no browser sends (a header twice, two requests in one, an origin that does not
    parse): the connection ends, the host goes on, and the offer stays the page's."""
    offer = open_bulk(firefox_host, isolated_env, echo_server.port)
    port = urlsplit(offer["frame"]).port
    frame_get = f"GET /frame HTTP/1.1\r\nHost: localhost:{port}\r\nSec-Fetch-Dest: iframe\r\n"
    main_port = urlsplit(offer["url"]).port
    upgrade = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    for to, raw in (
        (port, (frame_get + f"Host: localhost:{port}\r\n\r\n").encode()),
        (port, (frame_get + "Sec-Fetch-Dest: iframe\r\n\r\n").encode()),
        (port, (frame_get + "\r\n" + frame_get + "\r\n").encode()),  # pipelined: one answer
        (port, (frame_get + "\r\nX").encode()),
        (port, (upgrade * 2).encode()),  # two failed upgrades on the frame's port
        (main_port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2),  # and on the bulk server's own
    ):
        assert answers_to(to, raw).count(b"HTTP/1.1 ") <= 1, raw
    # A claim whose page is not an origin at all (an unclosed bracket): refused like any other.
    assert close_of(f"ws://127.0.0.1:{port}/", f"http://localhost:{port}", frame_claim(offer["token"], "http://[::1"))[:2] == (1008, "")
    assert b"Traceback" not in bytes(firefox_host.stderr), bytes(firefox_host.stderr).decode()[-3000:]
    with connect(f"ws://127.0.0.1:{port}/", origin=f"http://localhost:{port}") as ws:  # type: ignore[arg-type]
        ws.send(frame_claim(offer["token"], ORIGIN))
        assert json.loads(ws.recv(timeout=10)) == {"type": "attached", "id": 1}


def test_a_frame_listener_lives_exactly_as_long_as_a_socket_it_was_offered_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame's listener stays while a socket it was offered for lives, claimed or not (an
    offer may wait for a busy page), and closes when the last one ends (the host holds nothing
    for a tab that is gone); connections through it do not keep it (anyone could hold one).
    Past the cap, in all or for one origin, no frame is offered rather than one closed under a
    page that may still use it."""
    monkeypatch.setattr(bulk, "MAX_FRAME_SITES", 3)
    monkeypatch.setattr(bulk, "MAX_FRAME_SITES_PER_ORIGIN", 2)

    async def refused(port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        writer.close()
        return False

    async def run() -> None:
        server = BulkServer()
        server.for_caller("firefox", "direct-sockets@direct-sockets.invalid")
        pages: dict[int, tuple[str, int]] = {}
        server.page_origin = lambda connection: pages[id(connection)][0]
        server.page_context = lambda connection: (pages[id(connection)][1], False)

        async def offered(page: str, tab: int) -> tuple[BulkSocket, dict[str, str]]:
            connection = cast(BulkSocket, type("Socket", (), {})())
            pages[id(connection)] = (page, tab)
            offer = await server.offer(connection)
            assert offer is not None
            return connection, offer

        one, first = await offered("https://one.example", 1)
        one_again, again = await offered("https://one.example", 1)
        assert again["frame"] == first["frame"]
        _, second_tab = await offered("https://one.example", 2)
        _, third_tab = await offered("https://one.example", 3)
        assert "frame" in second_tab and "frame" not in third_tab  # its second tab is its last
        two, second = await offered("https://two.example", 1)
        _, third = await offered("https://three.example", 1)
        assert "frame" not in third  # three in use: no frame, none closed
        one_port, two_port = urlsplit(first["frame"]).port, urlsplit(second["frame"]).port
        _, writer = await asyncio.open_connection("127.0.0.1", two_port)  # held by anyone
        await asyncio.sleep(0.1)
        server.withdraw(one)
        assert not await refused(one_port)  # its other socket's offer still names it
        server.withdraw(one_again)
        server.withdraw(two)
        assert await refused(one_port) and await refused(two_port)
        writer.close()
        _, fourth = await offered("https://four.example", 1)
        assert "frame" in fourth
        await server.close()

    asyncio.run(run())


class FirefoxPages:
    """A bulk server as Firefox's host has it, offering sockets of ORIGIN in the tabs and
    windows a test names."""

    def __init__(self) -> None:
        self.server = BulkServer()
        self.server.for_caller("firefox", "direct-sockets@direct-sockets.invalid")
        self.contexts: dict[int, tuple[object, ...]] = {}
        self.server.page_origin = lambda connection: ORIGIN
        self.server.page_context = lambda connection: self.contexts[id(connection)]

    async def offered(self, tab: int, private: bool = False) -> tuple[BulkSocket, dict[str, str]]:
        connection = cast(BulkSocket, type("Socket", (), {"id": tab})())
        self.contexts[id(connection)] = (tab, private)
        offer = await self.server.offer(connection)
        assert offer is not None
        return connection, offer


def test_each_tab_and_private_window_has_its_own_listener() -> None:
    async def run() -> None:
        pages = FirefoxPages()
        frames = [(await pages.offered(tab, private))[1]["frame"] for tab, private in ((1, False), (1, True), (2, False), (1, False))]
        assert len(set(frames[:3])) == 3 and frames[3] == frames[0], frames
        await pages.server.close()

    asyncio.run(run())


def test_a_frame_claims_only_a_socket_its_own_listener_was_offered_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim names the listener it came through: a socket offered another listener (another
    tab's, a private window's), or none (past the cap), is not claimed through this one, nor
    through a listener that merely has the same page and port as its own once had."""
    monkeypatch.setattr(bulk, "MAX_FRAME_SITES_PER_ORIGIN", 3)

    async def run() -> None:
        pages = FirefoxPages()
        server = pages.server
        mine, my_offer = await pages.offered(1)
        _, private_offer = await pages.offered(1, private=True)
        _, other_offer = await pages.offered(2)
        _, none_offer = await pages.offered(3)  # past the cap of 3 for this origin
        assert "frame" not in none_offer
        sites = {urlsplit(site.url).port: site for _, site in server._frame_sites.values()}
        mine_site = sites[urlsplit(my_offer["frame"]).port]
        frame_origin = next(iter(mine_site.origins))
        for what, token in (("a private window's", private_offer["token"]), ("another tab's", other_offer["token"]),
                            ("one offered no frame", none_offer["token"])):
            assert server.claim(token, frame_origin, ORIGIN, mine_site) is None, what
        look_alike = bulk.FrameSite(mine_site.page, mine_site.port)
        assert server.claim(my_offer["token"], frame_origin, ORIGIN, look_alike) is None
        assert server.claim(my_offer["token"], frame_origin, ORIGIN, mine_site) is mine
        await server.close()

    asyncio.run(run())


def test_a_socket_gone_while_its_listener_is_made_leaves_no_listener() -> None:
    """The page releases a socket while the host makes its frame's listener: whenever that
    happens, no listener is left behind (nothing would ever close it, and the caps would not
    count it)."""
    import os

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def run() -> None:
        pages = FirefoxPages()
        server = pages.server
        first, _ = await pages.offered(1)  # the bulk server itself, started
        [key] = server._frame_sites
        server.withdraw(first)
        assert key not in server._frame_sites
        await asyncio.sleep(0.05)
        before = descriptors()
        for turns in range(12):  # cancelled after each number of the loop's turns in turn
            connection = cast(BulkSocket, type("Socket", (), {"id": turns})())
            pages.contexts[id(connection)] = (1, False)
            task = asyncio.ensure_future(server.offer(connection))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            server.withdraw(connection)  # what the session does with a socket that ends
            assert server._frame_sites == {} and server._site_of == {}, turns
        await asyncio.sleep(0.05)
        assert descriptors() == before
        await server.close()

    asyncio.run(run())
