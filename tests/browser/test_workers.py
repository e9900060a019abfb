"""The API in dedicated workers, through the real extension and host, in real headless Chromium
and Firefox: classic, module, blob-URL and nested workers; their sockets are the page's, and
close when the worker goes; the worker keeps its own semantics; and its bytes keep moving while
the page's main thread is busy."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.browser.harness import Browser, Chromium, ScenarioSite, wait_for
from tests.browser.test_bulk import paths_of_live_sockets
from tests.support.servers import TcpServer, hashing_sink, make_source

pytestmark = pytest.mark.browser

API = {"TCPSocket": "function", "UDPSocket": "function", "TCPServerSocket": "function", "MulticastController": "function"}


@pytest.mark.parametrize("kind", ["classic", "module", "blob", "nested"])
def test_echo_from_a_worker(browser: Browser, echo_server: TcpServer, kind: str) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("workerEcho", kind=kind, port=echo_server.port, text=f"from a {kind} worker ✓")
    assert result["got"] == f"from a {kind} worker ✓" and result["endDone"] is True
    assert result["pageGot"] == "and the page"
    if kind != "nested":
        assert result["presence"] == API


@pytest.mark.parametrize("browser", ["firefox"], indirect=True)  # the host's frame is Firefox's
def test_a_worker_whose_page_refuses_the_hosts_frame_takes_its_own_websocket(browser: Browser, echo_server: TcpServer) -> None:
    """A page whose CSP refuses frames: its worker's socket does not wait out the bulk path's
    3 s for the host's frame; it takes its own WebSocket (which pauses with its page)."""
    browser.grant(f"127.0.0.1:{echo_server.port}")
    csp = "frame-src 'none'"
    result = browser.run("workerEcho", kind="classic", port=echo_server.port, text="framed out", contentSecurityPolicy=csp)
    assert result["got"] == "framed out" and result["ms"] < 2500, result
    worker_paths = paths_of_live_sockets(browser, inWorker=True, contentSecurityPolicy=csp)
    assert worker_paths == ["WebSocket"], worker_paths


@pytest.mark.parametrize("browser", ["firefox"], indirect=True)  # the host's frame is Firefox's
def test_after_the_host_restarts_a_worker_never_uses_the_old_frames_port(browser: Browser, echo_server: TcpServer) -> None:
    """The host's frame connects to the port it came from. When the host ends, that port is
    free for any local process: a worker's next socket must take the frame its own offer names,
    and the old frame goes (bulk.js also refuses a socket whose offer names another frame)."""
    browser.grant(f"127.0.0.1:{echo_server.port}")
    inbox = browser.start("workerAcrossHostRestart", port=echo_server.port)
    first = inbox.get(timeout=60)
    assert first["ok"] and first["value"]["first"] == "before", first
    [old] = first["value"]["frames"]
    browser.restart_host()
    browser.site.signal(browser.last_token)
    result = inbox.get(timeout=60)
    assert result["ok"], result
    assert result["value"]["second"] == "after"
    assert len(result["value"]["frames"]) == 1 and result["value"]["frames"][0] != old, (old, result)


def test_a_worker_has_the_pages_interfaces(browser: Browser) -> None:
    shape = browser.run("workerShape")
    assert shape["inWorker"] == shape["onPage"]
    assert shape["inWorker"]["TCPSocket"]["members"] == ["close", "closed", "constructor", "opened", "startTls"]


def test_a_worker_keeps_its_own_semantics(browser: Browser, site: ScenarioSite) -> None:
    """self.location, relative importScripts, import and fetch, nested workers, onerror, a
    script that cannot be loaded, terminate(): as on a page the extension does not touch (an
    insecure origin, where the API is absent and Worker is the browser's own)."""
    ours = browser.run("workerSemantics")
    plain = browser.run("workerSemantics", origin=f"http://insecure.test:{site.port}")
    assert ours.pop("api") == {"classic": "function", "module": "function", "nested": "function"}
    assert plain.pop("api") == {"classic": "undefined", "module": "undefined", "nested": "undefined"}
    assert ours == plain
    assert ours["classic"]["hrefIsScript"] and ours["module"]["hrefIsScript"] and ours["thrown"]["filename"]


def test_8_mib_both_ways_from_a_worker_sha256(browser: Browser) -> None:
    size = 8 * 1024 * 1024
    payload, handler = make_source(size, seed=5)
    server = TcpServer(handler)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        result = browser.run("workerBothWays", port=server.port, size=size, timeout=120)
        assert result["receivedBytes"] == size
        assert result["receivedSha"] == hashlib.sha256(payload).hexdigest()
        [uploaded] = server.wait_results(1)
        assert hashlib.sha256(uploaded).hexdigest() == result["uploadSha"] and len(uploaded) == size
    finally:
        server.close()


def test_udp_connected_and_bound_from_a_worker(browser: Browser) -> None:
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="udp")
    result = browser.run("workerUdp", count=60, timeout=60)
    assert result["problems"] == [] and result["closed"] == [{"ok": True}, {"ok": True}]
    assert result["boundInfo"] == {"localAddress": "127.0.0.1", "hasRemote": False, "controller": "[object MulticastController]"}
    assert result["connectedInfo"] == {"remoteAddress": "127.0.0.1", "remotePort": True, "hasMulticast": False}


def test_a_server_socket_in_a_worker_accepts(browser: Browser) -> None:
    browser.grant("127.0.0.1:*", kind="tcp-listen")
    browser.grant("127.0.0.1:*")
    assert browser.run("workerServer") == {"got": "through the server", "endDone": True, "isTCPSocket": True, "remotePortMatches": True}


@pytest.mark.parametrize("how", ["terminate", "close", "navigate"])
def test_a_workers_sockets_close_in_the_host_when_it_goes(browser: Browser, how: str) -> None:
    server = TcpServer(hashing_sink)  # its handler returns when the connection ends
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        browser.grant("127.0.0.1:*", kind="tcp-listen")
        inbox = browser.start("workerHold", port=server.port, how=how)
        opened = inbox.get(timeout=30)
        assert opened["ok"], opened
        listening = opened["value"]["serverPort"]
        [pid] = browser.host_pids()
        time.sleep(0.3)
        assert server.accepted == 1 and server.results == []
        assert _open_sockets(browser, server.port) == 1
        assert _listening(pid, listening)
        if how == "navigate":
            browser.navigate("about:blank")
        else:
            browser.site.signal(browser.last_token)
        assert len(server.wait_results(1, timeout=10)) == 1, f"the worker's socket stayed open after {how}"
        assert wait_for(lambda: _open_sockets(browser, server.port) == 0, timeout=10)
        # The host holds nothing for it any more: no socket, no WebSocket.
        assert wait_for(lambda: not [fd for fd in _socket_fds(pid) if fd in _tcp_inodes(server.port)], timeout=10)
        # Nor its server, which only native messaging carries: the page's API released it.
        assert wait_for(lambda: not _listening(pid, listening), timeout=10), f"the worker's server still listens after {how}"
    finally:
        server.close()


def _open_sockets(browser: Browser, port: int) -> int:
    """How many sockets to 127.0.0.1:`port` the host has open (what the popup lists)."""
    return sum(1 for _ in _host_connections(browser, port))


def _host_connections(browser: Browser, port: int) -> list[str]:
    [pid] = browser.host_pids()
    inodes = _tcp_inodes(port)
    return [fd for fd in _socket_fds(pid) if fd in inodes]


def _socket_fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.append(target[8:-1])
    return out


def _listening(pid: int, port: int) -> bool:
    """Whether the host process listens on 127.0.0.1:`port`."""
    fds = set(_socket_fds(pid))
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A" and fields[9] in fds:
            return True
    return False


def _tcp_inodes(port: int) -> set[str]:
    """Inodes of established TCP sockets whose remote end is 127.0.0.1:`port`."""
    inodes = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if int(remote.split(":")[1], 16) == port and state == "01":
            inodes.add(inode)
    return inodes


@pytest.mark.parametrize("page", ["loopback", "public"])
def test_a_worker_moves_bytes_while_its_page_is_busy(browser: Browser, echo_server: TcpServer, request: pytest.FixtureRequest, page: str) -> None:
    """The point of a worker: its socket goes on while the page's main thread spins for 3 s.
    Chromium runs a worker's WebSocket, and its MessagePort to the bulk frame, off the page's
    thread. Firefox does not: a worker's WebSocket is driven from the page's main thread, and
    so, measured, was its port to the frame (0 and 0.4 MB/s while the page spun); native
    messaging goes through the page's thread in both. No other worker transport moved both ways
    in Firefox 153 (bench/firefox_worker_busy.py, docs/API.md "Bytes while the page is busy")."""
    if browser.name == "firefox" and page == "public":
        pytest.skip("Local Network Access is Chromium's: a public page is a loopback page to Firefox")
    # On a public page Chromium refuses the worker's own WebSocket (Local Network Access, as the
    # page's): its bytes take its own port to the bulk frame.
    origin = browser.site.public_origin if page == "public" else browser.site.origin
    browser.grant(f"127.0.0.1:{echo_server.port}", origin=origin)
    result = browser.run("workerBusyPage", origin=origin, port=echo_server.port, seconds=3, chunk=64 * 1024, timeout=60)
    print(f"{browser.name}: busy {page} page {result}")
    assert result["busyMs"] >= 3000
    # Stalled, nothing arrives for the 3 s; moving, it arrives every few ms on an idle machine
    # (this one is shared: the bounds leave room for its load).
    assert result["duringMBps"] > 2, result
    assert result["longestGapMs"] < 1500, result


ABSENT = dict.fromkeys(API, "undefined")


@pytest.mark.parametrize(
    ("header", "meta", "expected"),
    [
        ("worker-src 'self'", None, ABSENT),  # blob: refused: the worker starts as asked, without the API
        ("default-src 'self' 'unsafe-inline'", None, ABSENT),
        ("worker-src 'self' blob:; script-src 'self' 'unsafe-inline'", None, API),
        ("frame-ancestors 'none'", None, API),  # a CSP that does not govern workers
        (None, "worker-src 'self'", ABSENT),
    ],
)
def test_a_csp_that_refuses_blob_workers_gets_plain_workers(browser: Browser, header: str | None, meta: str | None, expected: dict) -> None:
    if isinstance(browser, Chromium):  # its rule is installed as the extension starts, not at once
        worker = browser.context.service_workers[0]
        assert wait_for(lambda: 11 in worker.evaluate("chrome.declarativeNetRequest.getSessionRules().then((r) => r.map((x) => x.id))"))
    params = {"contentSecurityPolicy": header} if header else {}
    assert browser.run("workerUnderCsp", metaCsp=meta, **params) == expected
