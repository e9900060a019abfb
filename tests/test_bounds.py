"""The host's bounds, tried as an attacker would: another local process flooding the bulk port,
a host out of descriptors, a client that never reads, failed claims of a socket's WebSocket, and
a background task that raises (issue 14, findings 8 and 12; docs/RELIABILITY.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from direct_sockets.session import limits
from direct_sockets.sockets.bulk import CLAIM_TIMEOUT, MAX_UNCLAIMED
from direct_sockets.protocol.errors import Code, ProtocolError
from direct_sockets.install.installer import extension_ids
from direct_sockets.protocol.listen_state import ListenState
from direct_sockets.trust.permissions import PermissionStore
from direct_sockets.session.router import Session
from direct_sockets.sockets.tcp import TcpConnection
from direct_sockets.sockets.tcp_io import JOIN_BELOW, Outbox
from direct_sockets.protocol.tcp_state import TcpSocketState
from direct_sockets.protocol.udp_state import UdpMode, UdpSocketState
from direct_sockets.protocol.framing import Message
from tests.conftest import cli
from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer
from tests.test_bulk import ORIGIN, attach, open_bulk
from tests.test_host_process import grant

CHROME_ORIGIN = f"chrome-extension://{extension_ids().chrome}"


@pytest.fixture
def low_host(isolated_env: dict[str, str], chromium_manifest: Path) -> Iterator[HostProcess]:
    """A host started with 256 descriptors, soft and hard, as a browser with a low limit would."""
    proc = HostProcess(chromium_manifest, f"{CHROME_ORIGIN}/", isolated_env, nofile=(256, 256))
    yield proc
    proc.kill()


def nofile_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise RuntimeError("no limit")


def reply_to(host: HostProcess, sid: int, timeout: float) -> dict[str, Any]:
    """The host's answer to opening socket `sid`: `opened` or its `error`, in `timeout` s
    (answers for other sockets that come first are kept for their turn)."""
    early: dict[int, dict[str, Any]] = host.__dict__.setdefault("early_replies", {})
    deadline = time.monotonic() + timeout
    while sid not in early:
        message = host.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert message is not None, host.stderr.decode(errors="replace")
        if message["type"] in ("opened", "error") and "id" in message:
            early[message["id"]] = message
    return early.pop(sid)


def open_tcp(host: HostProcess, sid: int, port: int, origin: str = ORIGIN) -> None:
    host.send({"type": "tcp_open", "id": sid, "origin": origin, "tabId": 1, "frameId": 0, "incognito": False,
               "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}})


# -- finding 8: descriptors -------------------------------------------------------------------


def test_the_socket_cap_leaves_room_under_the_descriptor_limit() -> None:
    assert limits.socket_cap(256) == (256 - limits.HEADROOM) // 2 == 64
    assert limits.socket_cap(1024) == 448
    assert limits.socket_cap(1 << 20) == limits.SOCKET_CEILING
    assert limits.socket_cap(100) == limits.SOCKET_FLOOR
    # Every socket on the bulk path (two descriptors) and the headroom fit under the limit.
    for nofile in (256, 1024, 4096, 10240):
        assert limits.socket_cap(nofile) * 2 + limits.HEADROOM <= nofile


def test_the_host_raises_its_descriptor_limit_and_caps_sockets_under_it(
    isolated_env: dict[str, str], chromium_manifest: Path, echo_server: TcpServer,
) -> None:
    host = HostProcess(chromium_manifest, f"{CHROME_ORIGIN}/", isolated_env, nofile=(128, 256))
    try:
        origins = [f"http://127.0.0.1:{9100 + i}" for i in range(2)]  # under the rate limiter's burst each
        for origin in origins:
            grant(isolated_env, f"127.0.0.1:{echo_server.port}", origin)
        host.hello()
        assert nofile_of(host.pid) == (256, 256)  # the soft limit raised to the hard one
        cap = limits.socket_cap(256)
        for sid in range(1, cap + 1):
            open_tcp(host, sid, echo_server.port, origins[sid % 2])
        assert all(reply_to(host, sid, 30)["type"] == "opened" for sid in range(1, cap + 1))
        open_tcp(host, cap + 1, echo_server.port, origins[0])
        refused = host.expect("error", timeout=10)
        assert refused["code"] == Code.TOO_MANY_SOCKETS, refused
        assert host.fd_count() + limits.HEADROOM <= 256
    finally:
        host.kill()


def flood(port: int, count: int) -> list[socket.socket]:
    """`count` connections to `port` that say nothing, opened without waiting for each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        held.append(sock)
    return held


def test_a_flood_of_connections_to_the_bulk_port_cannot_starve_the_host(
    low_host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer,
) -> None:
    """Another local process holds 1,100 silent connections to the bulk port of a host with 256
    descriptors: the host keeps at most MAX_UNCLAIMED of them, for at most CLAIM_TIMEOUT, and
    a page's new sockets still open, on native messaging and on the bulk path."""
    host = low_host
    offer = open_bulk(host, isolated_env, echo_server.port, sid=1)
    bulk_port = int(offer["url"].rsplit(":", 1)[1].strip("/"))
    baseline = host.fd_count()
    held = flood(bulk_port, 1100)
    try:
        time.sleep(1.5)  # the host accepts what it will
        assert host.fd_count() <= baseline + MAX_UNCLAIMED + 1
        open_tcp(host, 2, echo_server.port)
        assert reply_to(host, 2, 10)["type"] == "opened"  # not a hang, not an error
        second = open_bulk(host, isolated_env, echo_server.port, sid=3)
        second["id"] = 3
        with attach(second) as ws:  # a page's WebSocket claims its socket in the middle of it
            ws.send(json.dumps({"type": "read", "bytes": 16}))
            ws.send(b"through")
            assert json.loads(ws.recv(timeout=10))["type"] == "ack"
            assert ws.recv(timeout=10) == b"through"
        # What the host accepted of the flood is cut once its time to claim is up.
        deadline = time.monotonic() + CLAIM_TIMEOUT + 5
        while host.fd_count() > baseline + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host.fd_count() <= baseline + 2  # sockets 2 and 3
    finally:
        for sock in held:
            sock.close()


def test_out_of_descriptors_fails_sockets_at_once_and_the_host_recovers(
    host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer,
) -> None:
    """A host whose descriptor table is full: each new socket fails at once with the generic
    NetworkError (the reason in `detail` for the extension), never a silent hang; TCP and bound
    UDP alike. Once descriptors are free again, sockets open."""
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--udp-bind", "127.0.0.1:*")
    host.hello()
    room = 3
    resource.prlimit(host.pid, resource.RLIMIT_NOFILE, (host.fd_count() + room, host.fd_count() + room))
    replies = []
    for sid in range(1, room + 5):
        open_tcp(host, sid, echo_server.port)
        replies.append(reply_to(host, sid, 5))
    host.send({"type": "udp_open", "id": 50, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
               "mode": "bound", "localAddress": "127.0.0.1", "options": {}})
    replies.append(reply_to(host, 50, 5))
    failed = [r for r in replies if r["type"] == "error"]
    assert 1 <= len([r for r in replies if r["type"] == "opened"]) <= room
    assert len(failed) >= 5
    for error in failed:
        assert error["name"] == "NetworkError" and error["message"] == "Network error.", error
        # A failure the host handles (201), not a task that crashed on it (190, see below).
        assert error["code"] == Code.NETWORK_ERROR and "Too many open files" in error["detail"], error
    for reply in replies:
        if reply["type"] == "opened":
            host.send({"type": "release", "id": reply["id"]})
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)
    open_tcp(host, 100, echo_server.port)
    assert reply_to(host, 100, 5)["type"] == "opened"


# -- finding 12: who may claim a socket's WebSocket -----------------------------------------------


def close_of(url: str, origin: str | None, first: str | None) -> tuple[int, str, float]:
    """How the bulk server ends a client from `origin` whose first message is `first`: the
    close code, its reason, and how long it took."""
    started = time.monotonic()
    with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
        if first is not None:
            ws.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=CLAIM_TIMEOUT + 10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - started


def test_every_failed_claim_is_closed_alike_and_only_the_sockets_own_origins_claim(
    host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer,
) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    url, token = offer["url"], offer["token"]
    attempts = {
        "a wrong secret": (ORIGIN, "a guess that is not the secret at all, no no"),
        "the secret from another site": ("https://evil.example", token),
        "the secret from an opaque origin": ("null", token),
        "the secret with no Origin": (None, token),
        "the secret from another extension": ("chrome-extension://abcdefghijklmnopabcdefghijklmnop", token),
        "bytes for a secret": (ORIGIN, token.encode()),
    }
    seen = {}
    for what, (origin, first) in attempts.items():
        code, reason, took = close_of(url, origin, first)  # type: ignore[arg-type]
        seen[what] = (code, reason)
        assert took < 3, f"{what}: {took:.1f} s to close"
    code, reason, took = close_of(url, ORIGIN, None)  # silence
    seen["silence"] = (code, reason)
    assert took < CLAIM_TIMEOUT + 2
    assert set(seen.values()) == {(1008, "")}, seen  # one answer for all: no reason, no oracle
    # None of that used the offer up: the page's own WebSocket still claims its socket.
    with attach(offer) as ws:
        ws.send(json.dumps({"type": "read", "bytes": 16}))
        ws.send(b"still mine")
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        assert ws.recv(timeout=10) == b"still mine"
        assert close_of(url, ORIGIN, token)[:2] == (1008, "")  # a replay, even from the right origin


def test_the_extensions_bulk_frame_may_claim(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    with connect(offer["url"], origin=CHROME_ORIGIN) as ws:  # type: ignore[arg-type]
        ws.send(offer["token"])
        assert json.loads(ws.recv(timeout=10)) == {"type": "attached", "id": 1}


# -- bounds on what a client can make the host hold ----------------------------------------------


def test_small_writes_queue_as_few_entries() -> None:
    """A window's worth of one-byte writes, queued behind a peer that does not read, is a
    handful of entries, in order (not a million objects)."""
    outbox = Outbox()
    window = 4 * 1024 * 1024
    for i in range(window):
        outbox.put(bytes([i % 251]))
    assert len(outbox) <= 2 * window // JOIN_BELOW + 2
    outbox.put(b"x" * JOIN_BELOW)  # a large write stays whole, after the small ones
    outbox.put(b"tail")

    async def drain() -> bytes:
        got = bytearray()
        while not outbox.empty():
            got += await outbox.get()  # type: ignore[operator]
        return bytes(got)

    assert asyncio.run(drain()) == bytes(i % 251 for i in range(window)) + b"x" * JOIN_BELOW + b"tail"


# -- no silent failures ---------------------------------------------------------------------------


def test_broken_invariants_are_clean_errors_not_asserts() -> None:
    """What the host's own code guarantees fails as a ProtocolError with code 190 (which the
    session turns into that socket's failure), also under `python -O`."""
    tcp = TcpSocketState(1, 1024, 1024)
    tcp.connected()
    udp = UdpSocketState(2, UdpMode.BOUND, 4)
    listen = ListenState(3)
    for broken in (tcp.connected, lambda: tcp.wrote(1), tcp.fin_sent, lambda: tcp.received(1), tcp.close,
                   udp.sent, udp.received, udp.writing_closed, udp.close, listen.take_accept_id, listen.close):
        with pytest.raises(ProtocolError) as raised:
            broken()
        assert raised.value.code == Code.INTERNAL_ERROR and raised.value.socket_id in (1, 2, 3)


def run_in_loop(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_a_socket_task_that_raises_is_logged_and_fails_the_socket(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, echo_server: TcpServer,
) -> None:
    async def planted(self: TcpConnection) -> None:
        raise RuntimeError("planted fault in the write loop")

    monkeypatch.setattr(TcpConnection, "_write_loop", planted)
    messages: list[dict[str, Any]] = []
    gone: list[int] = []

    async def run() -> None:
        async def emit(message: dict[str, Any]) -> None:
            messages.append(message)

        connection = TcpConnection(TcpSocketState(7, 1 << 20, 1 << 19), emit, gone.append)
        infos = await asyncio.get_running_loop().getaddrinfo("127.0.0.1", echo_server.port, type=socket.SOCK_STREAM)
        connection.start("127.0.0.1", echo_server.port, {}, list(infos))
        while not any(m["type"] == "error" for m in messages):
            await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="direct_sockets"):
        run_in_loop(run())
    error = next(m for m in messages if m["type"] == "error")
    assert error["id"] == 7 and error["name"] == "NetworkError" and error["message"] == "Network error."
    assert error["code"] == Code.INTERNAL_ERROR and "planted" in error["detail"]
    assert gone == [7]  # the session forgets it, its descriptor closed
    crash = [r for r in caplog.records if "internal error in tcp socket 7" in r.getMessage()]
    assert crash and crash[0].exc_info is not None and "planted fault" in caplog.text and "Traceback" in caplog.text


def test_a_session_task_that_raises_fails_the_socket_it_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    messages: list[dict[str, Any]] = []

    async def run() -> None:
        async def emit(message: dict[str, Any]) -> None:
            messages.append(message)

        session = Session(emit, PermissionStore(tmp_path / "permissions.json"))
        await session.handle_event(Message({"type": "hello", "version": 1}))

        async def deciding(socket_id: int) -> None:  # as a decision, a prompt, does
            await asyncio.sleep(0)
            raise RuntimeError("planted fault in a decision")

        session.table.deciding.add(12)
        session.table.spawn(deciding(12))
        while not any(m["type"] == "error" for m in messages):
            await asyncio.sleep(0.01)
        assert 12 not in session.table.deciding
        session.close_all()

    with caplog.at_level(logging.ERROR, logger="direct_sockets"):
        run_in_loop(run())
    error = next(m for m in messages if m["type"] == "error")
    assert error["id"] == 12 and error["name"] == "NetworkError" and error["message"] == "Network error.", error
    assert "planted" in caplog.text and "Traceback" in caplog.text
