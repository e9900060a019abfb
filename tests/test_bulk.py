"""The bulk path through the real host process: a socket's stream over its loopback WebSocket,
with the secret, the ordering, the integrity, the backpressure and the ways it can go wrong."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import socket
import time
from typing import Any, Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer, hashing_sink, make_source, slow_sink
from tests.test_host_process import b64, grant, read_until

ORIGIN = "http://127.0.0.1:8000"


def open_bulk(host: HostProcess, env: dict[str, str], port: int, sid: int = 1, **extra: Any) -> dict[str, Any]:
    grant(env, f"127.0.0.1:{port}")
    if not getattr(host, "_greeted", False):
        host.hello()
        host._greeted = True  # type: ignore[attr-defined]
    host.send({"type": "tcp_open", "id": sid, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
               "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}, "bulk": True, **extra})
    opened = host.expect("opened", id=sid)
    assert opened["bulk"]["url"].startswith("ws://127.0.0.1:")
    return opened["bulk"]


def attach(offer: dict[str, Any]) -> ClientConnection:
    ws = connect(offer["url"], origin=ORIGIN, compression=None, max_size=None).__enter__()
    ws.send(offer["token"])
    assert json.loads(ws.recv(timeout=10)) == {"type": "attached", "id": ws_id(offer, ws)}
    return ws


@contextlib.contextmanager
def attached_to_source(
    host: HostProcess, env: dict[str, str], size: int, seed: int, **extra: Any,
) -> Iterator[tuple[bytes, TcpServer, ClientConnection]]:
    """A socket on the bulk path to a peer that sends `size` pseudo-random bytes, then FIN, and
    reads to the end: what it sends, the peer, and the attached WebSocket."""
    payload, handler = make_source(size, seed=seed)
    server = TcpServer(handler)
    try:
        with attach(open_bulk(host, env, server.port, **extra)) as ws:
            yield payload, server, ws
    finally:
        server.close()


def ws_id(offer: dict[str, Any], ws: ClientConnection) -> int:
    return offer.setdefault("id", 1)


def refused(url: str, first: str | None) -> int:
    """How the server answers a client with `first` as its secret: the close code."""
    with connect(url, origin=ORIGIN) as ws:
        if first is not None:
            ws.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=15)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code


def duplex_ws(
    ws: ClientConnection, upload: bytes, window: int = 1 << 20, credit_size: int = 1 << 20, sizes: list[int] | None = None,
) -> tuple[bytes, list[str]]:
    """Sends `upload` then FIN and reads to the end, as the bridge does for a page; returns what
    arrived and the order of the events (and the size of each message in `sizes`)."""
    received = bytearray()
    events: list[str] = []
    inflight = offset = 0
    credit = credit_size
    ws.send(json.dumps({"type": "read", "bytes": credit}))
    shut = closed = False
    while not closed:
        while offset < len(upload) and inflight + min(512 * 1024, len(upload) - offset) <= window:
            piece = upload[offset : offset + 512 * 1024]
            ws.send(piece)
            inflight += len(piece)
            offset += len(piece)
        if offset == len(upload) and not inflight and not shut:
            ws.send(json.dumps({"type": "shutdown"}))
            shut = True
        if credit < credit_size // 2:
            ws.send(json.dumps({"type": "read", "bytes": credit_size - credit}))
            credit = credit_size
        message = ws.recv(timeout=30)
        if isinstance(message, bytes):
            assert len(message) <= credit, "the host delivered more than the page granted"
            if sizes is not None:
                sizes.append(len(message))
            received += message
            credit -= len(message)
            continue
        event = json.loads(message)
        events.append(event["type"])
        if event["type"] == "ack":
            inflight -= event["bytes"]
        elif event["type"] == "closed":
            closed = True
        else:
            assert event["type"] in ("eof", "fin_sent"), event
    return bytes(received), events


def test_echo_over_the_bulk_path(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    with attach(offer) as ws:
        ws.send(json.dumps({"type": "read", "bytes": 1024}))
        ws.send(b"hello, bulk")
        assert json.loads(ws.recv(timeout=10)) == {"type": "ack", "id": 1, "bytes": 11}
        assert ws.recv(timeout=10) == b"hello, bulk"
        ws.send(json.dumps({"type": "shutdown"}))
        events = []
        for _ in range(3):
            try:
                events.append(json.loads(ws.recv(timeout=10))["type"])
            except ConnectionClosed:
                break
        assert events == ["fin_sent", "eof", "closed"]
    # The background hears of the end on native messaging too, marked as already told.
    assert host.expect("closed", id=1) == {"type": "closed", "id": 1, "bulk": True}


def test_fragmented_messages_are_joined(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    """A WebSocket message may arrive in fragments (RFC 6455, 5.4): bytes and JSON alike are
    taken once whole, in order."""
    offer = open_bulk(host, isolated_env, echo_server.port)
    with attach(offer) as ws:
        ws.send(iter(['{"type": "re', 'ad", "bytes"', ": 1024}"]))  # a text message in three frames
        ws.send(iter([b"frag", b"men", b"ted"]))
        ws.send(b", whole")
        received = b""
        while len(received) < len(b"fragmented, whole"):
            message = ws.recv(timeout=10)
            if isinstance(message, bytes):
                received += message
        assert received == b"fragmented, whole"


def test_text_that_is_not_utf8_is_a_fault(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    with attach(offer) as ws:
        ws.send(b"\xff\xfe not text", text=True)  # bytes sent as a text frame, unchecked
        error = json.loads(ws.recv(timeout=10))
        assert error == {"type": "error", "id": 1, "name": "NetworkError", "message": "Network error."}
    told = host.expect("error", id=1)
    assert told["bulk"] is True and told["code"] == 100, told  # INVALID_JSON


def test_cancel_reading_stops_delivery_and_writing_goes_on(host: HostProcess, isolated_env: dict[str, str]) -> None:
    with attached_to_source(host, isolated_env, 4 << 20, seed=9) as (payload, server, ws):
        ws.send(json.dumps({"type": "read", "bytes": 65536}))
        got = b""
        while len(got) < 65536:
            message = ws.recv(timeout=10)
            assert isinstance(message, bytes)
            got += message
        assert got == payload[:65536]
        ws.send(json.dumps({"type": "cancel"}))
        ws.send(json.dumps({"type": "read", "bytes": 1 << 20}))  # too late: reading is over
        ws.send(b"still writing")
        ws.send(json.dumps({"type": "shutdown"}))
        events = []
        while "closed" not in events:
            message = ws.recv(timeout=10)
            assert not isinstance(message, bytes), "bytes arrived after the page cancelled reading"
            events.append(json.loads(message)["type"])
        assert events[-2:] == ["fin_sent", "closed"]
        assert server.wait_results(1) == [b"still writing"]


def test_a_slow_peer_gets_every_byte_in_order(host: HostProcess, isolated_env: dict[str, str]) -> None:
    """Writes go to the kernel at once while it takes them, and queue behind what it did not
    take: with a peer that reads slowly, the two ways mix, and the order must hold."""
    upload = random.Random(10).randbytes(6 << 20)
    server = TcpServer(slow_sink(delay=0.002, chunk=256 * 1024))
    sink = TcpServer(hashing_sink)
    try:
        for sid, port in ((1, server.port), (2, sink.port)):
            offer = open_bulk(host, isolated_env, port, sid=sid)
            offer["id"] = sid
            with attach(offer) as ws:
                duplex_ws(ws, upload, window=4 << 20)
            host.expect("closed", id=sid)
        assert server.wait_results(1) == [len(upload)]
        assert sink.wait_results(1) == [(len(upload), hashlib.sha256(upload).hexdigest())]
    finally:
        server.close()
        sink.close()


def test_eight_mib_both_ways_by_sha256(host: HostProcess, isolated_env: dict[str, str]) -> None:
    upload = random.Random(6).randbytes(8 << 20)
    with attached_to_source(host, isolated_env, 8 << 20, seed=5) as (payload, server, ws):
        received, events = duplex_ws(ws, upload)
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
        assert server.wait_results(1) == [upload]
        assert events[-1] == "closed" and events.index("eof") < events.index("closed")


def test_messages_to_the_page_keep_to_the_size_the_extension_asked(host: HostProcess, isolated_env: dict[str, str]) -> None:
    """Firefox does best with messages of at most 64 KiB (docs/BULK.md): the extension says so
    in `tcp_open`, and the host cuts what it reads to that size."""
    sizes: list[int] = []
    with attached_to_source(host, isolated_env, 4 << 20, seed=8, bulkMessageSize=65536) as (payload, _, ws):
        received, _ = duplex_ws(ws, b"", credit_size=4 << 20, sizes=sizes)
    assert received == payload
    assert max(sizes) == 65536  # full messages, none larger


def test_a_message_size_out_of_range_is_refused(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    host.hello()
    for sid, size in ((1, 1024), (2, 2 << 20), (3, "64k")):
        host.send({"type": "tcp_open", "id": sid, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
                   "remoteAddress": "127.0.0.1", "remotePort": echo_server.port, "options": {}, "bulk": True, "bulkMessageSize": size})
        error = host.expect("error", id=sid)
        assert error["code"] == 111 and "bulkMessageSize" in error["message"], error  # the schema refuses it


def test_secret_is_one_time_and_checked(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    assert refused(offer["url"], "a guess that is not the secret at all, no no") == 1008
    with attach(offer) as ws:
        # A replay of the secret, while the first client holds the socket, gets nothing.
        assert refused(offer["url"], offer["token"]) == 1008
        # Nor does a client that says nothing, whether after the handshake or before it.
        port = int(offer["url"].rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert refused(offer["url"], None) == 1008  # takes the 5 s a claim may take
            silent.settimeout(5)
            assert silent.recv(1) == b"", "a connection with no handshake stayed open"
        ws.send(json.dumps({"type": "read", "bytes": 16}))
        ws.send(b"still mine")
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        assert ws.recv(timeout=10) == b"still mine"
        fds = host.fd_count()  # the socket and its WebSocket among them
    # The WebSocket closing is the page going away: the socket is released in the host (both
    # descriptors go), and a late message for it is dropped quietly (no error before the pong).
    deadline = time.monotonic() + 10
    while host.fd_count() > fds - 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.fd_count() == fds - 2, "the socket stayed open in the host"
    host.send({"type": "read", "id": 1, "bytes": 1})
    host.send({"type": "ping", "seq": 9})
    while (message := host.recv()) is not None and message["type"] == "stats":
        pass  # the popup's byte counts, sent while the socket lived, may come first (a busy machine)
    assert message == {"type": "pong", "seq": 9}, message


def test_a_request_that_is_not_a_websocket_gets_nothing(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    """The bulk port speaks only WebSocket: a plain HTTP request is told to upgrade, and learns
    nothing else (no `Server` header, no socket)."""
    offer = open_bulk(host, isolated_env, echo_server.port)
    port = int(offer["url"].rsplit(":", 1)[1].strip("/"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/", headers={"Authorization": offer["token"]})
    response = connection.getresponse()
    assert response.status == 426 and response.getheader("Server") is None
    response.read()
    connection.close()
    with attach(offer) as ws:  # the offer is still there for the page's own WebSocket
        ws.send(json.dumps({"type": "read", "bytes": 16}))
        ws.send(b"only mine")
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        assert ws.recv(timeout=10) == b"only mine"


def test_a_secret_for_one_socket_never_reaches_another(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    first = open_bulk(host, isolated_env, echo_server.port, sid=1)
    second = open_bulk(host, isolated_env, echo_server.port, sid=2)
    second["id"] = 2
    with attach(second) as ws2, attach(first) as ws1:
        ws1.send(json.dumps({"type": "read", "bytes": 64}))
        ws2.send(json.dumps({"type": "read", "bytes": 64}))
        ws1.send(b"one")
        ws2.send(b"two")
        assert json.loads(ws1.recv(timeout=10)) == {"type": "ack", "id": 1, "bytes": 3}
        assert ws1.recv(timeout=10) == b"one"
        assert json.loads(ws2.recv(timeout=10)) == {"type": "ack", "id": 2, "bytes": 3}
        assert ws2.recv(timeout=10) == b"two"


def test_declined_bulk_stays_on_native_messaging(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    host.send({"type": "bulk_declined", "id": 1, "reason": "the page's CSP refused the WebSocket"})
    host.send({"type": "send", "id": 1, "data": b64(b"by native messaging")})
    host.expect("ack", id=1)
    assert read_until(host, 1, 19) == b"by native messaging"
    assert refused(offer["url"], offer["token"]) == 1008  # the offer is gone


def test_faults_on_the_bulk_path_end_the_socket(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    offer = open_bulk(host, isolated_env, echo_server.port)
    with attach(offer) as ws:
        ws.send(json.dumps({"type": "tcp_open", "remoteAddress": "127.0.0.1", "remotePort": 1}))  # nothing opens here
        error = json.loads(ws.recv(timeout=10))
        # The WebSocket may be the page's own: the reason is not on it, only on native messaging.
        assert error == {"type": "error", "id": 1, "name": "NetworkError", "message": "Network error."}
    told = host.expect("error", id=1)
    assert told["bulk"] is True and "only read" in told["detail"]
    offer = open_bulk(host, isolated_env, echo_server.port, sid=2)
    offer["id"] = 2
    with attach(offer) as ws:
        chunk = os.urandom(512 * 1024)
        try:
            for _ in range(32):  # 16 MiB without waiting for acks: far over the 1 MiB send window
                ws.send(chunk)
        except ConnectionClosed:
            pass
        messages = []
        while True:
            message = json.loads(ws.recv(timeout=10))
            messages.append(message["type"])
            if message["type"] == "error":
                break
        assert message["name"] == "NetworkError" and "detail" not in message
        assert "window" in host.expect("error", id=2)["detail"]


def test_a_page_that_stops_reading_keeps_host_memory_flat(host: HostProcess, isolated_env: dict[str, str]) -> None:
    with attached_to_source(host, isolated_env, 64 << 20, seed=8) as (_, _, ws):
        baseline = host.rss_peak_kib()
        ws.send(json.dumps({"type": "read", "bytes": 1 << 20}))
        got = 0
        while got < 1 << 20:
            message = ws.recv(timeout=10)
            assert isinstance(message, bytes)
            got += len(message)
        time.sleep(1.5)  # the peer keeps pushing; the page grants nothing more
        growth_mib = (host.rss_peak_kib() - baseline) / 1024
        assert growth_mib < 16, f"host RSS grew {growth_mib:.1f} MiB while the page did not read"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # nothing beyond the credit
