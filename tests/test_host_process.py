"""The real host process over real pipes, against real loopback servers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import random
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from direct_sockets.protocol import wire
from direct_sockets.protocol.errors import Code
from tests.conftest import cli
from tests.support.hostproc import HEADER, HostProcess
from tests.support.servers import Handler, TcpServer, free_port, hashing_sink, make_source, reset_after_greeting, slow_sink

ORIGIN = "http://127.0.0.1:8000"
CHUNK = 512 * 1024


def grant(env: dict[str, str], dest: str, origin: str = ORIGIN) -> None:
    cli(env, "permissions", "grant", "--origin", origin, "--tcp", dest)


def open_tcp(host: HostProcess, sid: int, port: int, address: str = "127.0.0.1", **options: object) -> None:
    host.send({"type": "tcp_open", "id": sid, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
               "remoteAddress": address, "remotePort": port, "options": options})


@contextlib.contextmanager
def connected(host: HostProcess, env: dict[str, str], handler: Handler, sid: int = 1, **options: object) -> Iterator[TcpServer]:
    """A server with `handler`, granted, and socket `sid` opened to it through the host."""
    server = TcpServer(handler)
    try:
        grant(env, f"127.0.0.1:{server.port}")
        host.hello()
        open_tcp(host, sid, server.port, **options)
        host.expect("opened", id=sid)
        yield server
    finally:
        server.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_until(host: HostProcess, sid: int, size: int, grant_bytes: int = 1 << 20, timeout: float = 30) -> bytes:
    """Grants credit as a page would and collects `size` bytes of data messages."""
    got = bytearray()
    host.send({"type": "read", "id": sid, "bytes": grant_bytes})
    outstanding = grant_bytes
    deadline = time.monotonic() + timeout
    while len(got) < size:
        msg = host.recv(max(0.1, deadline - time.monotonic()))
        assert msg is not None and msg["type"] == "data" and msg["id"] == sid, msg
        chunk = base64.b64decode(msg["data"])
        got += chunk
        outstanding -= len(chunk)
        assert outstanding >= 0, "the host delivered more than the page granted"
        if outstanding < grant_bytes // 2:
            host.send({"type": "read", "id": sid, "bytes": grant_bytes - outstanding})
            outstanding = grant_bytes
    return bytes(got)


def send_all(host: HostProcess, sid: int, payload: bytes, window: int = 1 << 20, others: list | None = None) -> None:
    """Sends like the page does: never more than `window` unacknowledged bytes."""
    inflight, offset = 0, 0
    while offset < len(payload) or inflight:
        while offset < len(payload) and inflight + min(CHUNK, len(payload) - offset) <= window:
            piece = payload[offset : offset + CHUNK]
            host.send({"type": "send", "id": sid, "data": b64(piece)})
            inflight += len(piece)
            offset += len(piece)
        msg = host.recv(30)
        assert msg is not None
        if msg["type"] == "ack" and msg["id"] == sid:
            inflight -= msg["bytes"]
        elif others is not None:
            others.append(msg)
        else:
            raise AssertionError(msg)


# -- handshake and caller ----------------------------------------------------------------------


def test_hello_announces_version_and_limits(host: HostProcess) -> None:
    reply = host.hello()
    assert reply["version"] == 1 and reply["limits"] == wire.limits()
    assert reply["limits"]["maxChunk"] == CHUNK and reply["limits"]["sendWindow"] == 1 << 20  # what these tests send by


def test_hellos_limits_are_the_ones_the_host_enforces(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    """The extension sizes its messages and windows by hello's limits: each is exactly where the
    host draws the line (a page at the limit is served, one byte over is a fault)."""
    sink = TcpServer(slow_sink(delay=2.0))
    try:
        grant(isolated_env, f"127.0.0.1:{echo_server.port}")
        grant(isolated_env, f"127.0.0.1:{sink.port}")
        limits = host.hello()["limits"]
        open_tcp(host, 1, echo_server.port)
        host.expect("opened", id=1)
        host.send({"type": "send", "id": 1, "data": b64(b"m" * limits["maxChunk"])})
        host.expect("ack", id=1, bytes=limits["maxChunk"])
        host.send({"type": "send", "id": 1, "data": b64(b"m" * (limits["maxChunk"] + 1))})
        failed = host.expect("error", id=1)
        assert failed["code"] == Code.SCHEMA_VIOLATION and f"over {limits['maxChunk']} bytes" in failed["detail"]
        # sendWindow: a window's worth unacknowledged is the most; one byte more ends the socket.
        open_tcp(host, 2, sink.port, sendBufferSize=4096)
        host.expect("opened", id=2)
        whole, rest = divmod(limits["sendWindow"], limits["maxChunk"])
        for _ in range(whole):
            host.send({"type": "send", "id": 2, "data": b64(b"w" * limits["maxChunk"])})
        host.send({"type": "send", "id": 2, "data": b64(b"w" * (rest + 1))})
        seen = []
        while (msg := host.recv(10)) is not None and msg["type"] != "error":
            seen.append(msg)
        assert msg is not None and msg["code"] == Code.WINDOW_EXCEEDED and msg["id"] == 2, seen
    finally:
        sink.close()


def test_messages_before_hello_are_refused_and_session_continues(host: HostProcess) -> None:
    host.send({"type": "ping", "seq": 1})
    host.expect("error", code=Code.HANDSHAKE_REQUIRED)
    host.send({"type": "hello", "version": 99})
    host.expect("error", code=Code.VERSION_UNSUPPORTED)
    host.hello()
    host.send({"type": "hello", "version": 1})
    host.expect("error", code=Code.ALREADY_GREETED)
    host.send({"type": "ping", "seq": 2})
    host.expect("pong", seq=2)


def test_caller_not_in_manifest_is_refused(isolated_env: dict[str, str], chromium_manifest: Path) -> None:
    proc = HostProcess(chromium_manifest, "chrome-extension://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/", isolated_env)
    try:
        msg = proc.expect("error", code=Code.CALLER_NOT_ALLOWED)
        assert "not in allowed_origins" in msg["message"]
        assert proc.wait() == 2
    finally:
        proc.kill()


def test_firefox_style_arguments_are_checked_against_allowed_extensions(isolated_env: dict[str, str]) -> None:
    cli(isolated_env, "install", "--browser", "firefox")
    manifest = Path(isolated_env["HOME"]) / ".mozilla/native-messaging-hosts/direct_sockets.json"
    wrapper = json.loads(manifest.read_text())["path"]
    import subprocess

    from direct_sockets.protocol.framing import encode

    good = subprocess.run([wrapper, str(manifest), "direct-sockets@direct-sockets.invalid"], input=encode({"type": "hello", "version": 1}),
                          capture_output=True, env=isolated_env, timeout=20)
    assert good.returncode == 0 and b'"type":"hello"' in good.stdout
    bad = subprocess.run([wrapper, str(manifest), "evil@example.invalid"], input=b"", capture_output=True, env=isolated_env, timeout=20)
    assert bad.returncode == 2 and b'"code":122' in bad.stdout


# -- framing and validation faults --------------------------------------------------------------


def test_oversized_frame_is_skipped_without_buffering_and_session_continues(host: HostProcess) -> None:
    host.hello()
    size = 5 * 1024 * 1024
    host.send_raw(HEADER.pack(size) + b"x" * size)
    host.expect("error", code=Code.FRAME_TOO_LARGE)
    host.send({"type": "ping", "seq": 3})
    host.expect("pong", seq=3)
    assert host.rss_peak_kib() < 60 * 1024  # the 5 MiB body was never held


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", Code.INVALID_JSON),
        (b"[1, 2]", Code.NOT_AN_OBJECT),
        (b'"text"', Code.NOT_AN_OBJECT),
        (b'{"type": "\xff"}', Code.INVALID_UTF8),
        (b'{"type": "launch_missiles"}', Code.UNKNOWN_TYPE),
        (b'{"no": "type"}', Code.UNKNOWN_TYPE),
        (b'{"type": "read", "id": 1, "bytes": -5}', Code.SCHEMA_VIOLATION),
        (b'{"type": "tcp_open", "id": 1}', Code.SCHEMA_VIOLATION),
        (b'{"type": "send", "id": 1, "data": "AAAA", "extra": true}', Code.SCHEMA_VIOLATION),
        (b"[" * 100000 + b"]" * 100000, Code.INVALID_JSON),
        # An integer past Python's digit limit raises a plain ValueError: once left unanswered
        # in the decoder, the host never answered again (found by a hostile review).
        (b'{"type": "ping", "seq": ' + b"9" * 5000 + b"}", Code.INVALID_JSON),
    ],
    ids=["json", "array", "string", "utf8", "unknown-type", "no-type", "negative", "missing-fields", "extra-field", "deep-nesting", "huge-integer"],
)
def test_bad_messages_get_stable_codes(host: HostProcess, body: bytes, code: Code) -> None:
    host.hello()
    host.send_raw(HEADER.pack(len(body)) + body)
    host.expect("error", code=code)
    host.send({"type": "ping", "seq": 4})
    host.expect("pong", seq=4)


def test_an_invalid_id_is_not_echoed_in_the_error(host: HostProcess) -> None:
    # Found by tests/test_fuzz.py: the reply to a message with "id": 0 named id 0, which is not
    # a valid socket id, so the error itself broke the protocol.
    host.hello()
    host.send({"type": "accept", "id": 0})
    reply = host.expect("error", code=Code.SCHEMA_VIOLATION)
    assert "id" not in reply


def test_truncated_frame_at_eof_exits_cleanly(host: HostProcess) -> None:
    host.hello()
    host.send_raw(HEADER.pack(100) + b'{"type":')
    host.close_stdin()
    assert host.wait() == 0
    assert host.recv() is None
    assert b"truncated" in host.stderr
    assert b"Traceback" not in host.stderr


def test_truncated_header_at_eof_exits_cleanly(host: HostProcess) -> None:
    host.send_raw(b"\x05\x00")
    host.close_stdin()
    assert host.wait() == 0
    assert host.recv() is None


def test_unknown_socket_and_out_of_order(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    host.hello()
    host.send({"type": "read", "id": 77, "bytes": 10})
    host.expect("error", code=Code.UNKNOWN_SOCKET, id=77)
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    open_tcp(host, 1, echo_server.port)
    host.expect("opened", id=1)
    open_tcp(host, 1, echo_server.port)
    host.expect("error", code=Code.SOCKET_ID_IN_USE)
    host.send({"type": "send", "id": 1, "data": "not base64!!"})
    msg = host.expect("error", id=1, code=Code.SCHEMA_VIOLATION)
    assert msg["name"] == "NetworkError"  # the socket is ended: page and host no longer agree
    host.send({"type": "read", "id": 1, "bytes": 10})  # late message for an ended socket: dropped quietly
    host.send({"type": "ping", "seq": 5})
    host.expect("pong", seq=5)


def test_shutdown_twice_is_out_of_order(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    host.hello()
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    open_tcp(host, 1, echo_server.port)
    host.expect("opened", id=1)
    host.send({"type": "shutdown", "id": 1})
    host.send({"type": "shutdown", "id": 1})
    seen = [host.recv()]
    while seen[-1]["type"] != "error":
        seen.append(host.recv())
    assert [m["type"] for m in seen[:-1]] in ([], ["fin_sent"]), seen
    assert seen[-1] == {"type": "error", "id": 1, "code": Code.OUT_OF_ORDER, "name": "NetworkError", "message": "Network error.", "detail": "shutdown twice"}
    host.send({"type": "ping", "seq": 6})
    host.expect("pong", seq=6)


# -- policy --------------------------------------------------------------------------------------


def test_ungranted_destination_is_refused_without_touching_the_network(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    grant(isolated_env, f"127.0.0.1:{echo_server.port + 1 if echo_server.port < 65535 else 1}")  # a different port
    grant(isolated_env, f"127.0.0.1:{echo_server.port}", origin="https://other.example")  # another origin
    host.hello()
    open_tcp(host, 1, echo_server.port)
    open_tcp(host, 2, 9, address="no-such-host.invalid")
    host.expect("prompt", id=1)  # the user is asked; the second waits its turn in the tab
    host.send({"type": "consent", "id": 1, "decision": "deny"})
    msg = host.expect("error", id=1, code=Code.NOT_ALLOWED, name="NotAllowedError")
    host.expect("prompt", id=2, addresses=[])
    host.send({"type": "consent", "id": 2, "decision": "deny"})
    msg2 = host.expect("error", id=2, code=Code.NOT_ALLOWED, name="NotAllowedError")
    assert msg["message"] == msg2["message"]
    time.sleep(0.2)
    assert echo_server.accepted == 0


def test_wildcard_port_grant_and_revoke(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    grant(isolated_env, "127.0.0.1:*")
    host.hello()
    open_tcp(host, 1, echo_server.port)
    host.expect("opened", id=1)
    cli(isolated_env, "permissions", "revoke", "--origin", ORIGIN, "--tcp", "127.0.0.1:*")
    open_tcp(host, 2, echo_server.port)
    host.expect("prompt", id=2)  # no grant any more: the user is asked again
    host.send({"type": "consent", "id": 2, "decision": "deny"})
    host.expect("error", id=2, name="NotAllowedError")


# -- data, flow control and closing --------------------------------------------------------------


def test_echo_and_orderly_close(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    host.hello()
    open_tcp(host, 1, echo_server.port, noDelay=True, keepAliveDelay=5000, sendBufferSize=65536, receiveBufferSize=65536)
    opened = host.expect("opened", id=1, remoteAddress="127.0.0.1", remotePort=echo_server.port, localAddress="127.0.0.1")
    assert opened["localPort"] > 0
    host.send({"type": "send", "id": 1, "data": b64(b"ping")})
    host.expect("ack", id=1, bytes=4)
    assert read_until(host, 1, 4, grant_bytes=4) == b"ping"
    host.send({"type": "shutdown", "id": 1})
    host.expect("fin_sent", id=1)
    host.send({"type": "read", "id": 1, "bytes": 100})
    host.expect("eof", id=1)  # the echo server answers our FIN with its own
    host.expect("closed", id=1)


def test_ipv6_loopback(host: HostProcess, isolated_env: dict[str, str]) -> None:
    from tests.support.servers import echo

    server = TcpServer(echo, host="::1")
    try:
        grant(isolated_env, f"[::1]:{server.port}")
        host.hello()
        open_tcp(host, 1, server.port, address="::1", dnsQueryType="ipv6")
        host.expect("opened", id=1, remoteAddress="::1", localAddress="::1")
    finally:
        server.close()


def test_host_reads_only_what_the_page_granted(host: HostProcess, isolated_env: dict[str, str]) -> None:
    payload, handler = make_source(4 * 1024 * 1024)
    with connected(host, isolated_env, handler):
        host.send({"type": "read", "id": 1, "bytes": 1000})
        first = host.expect("data", id=1)
        assert len(base64.b64decode(first["data"])) <= 1000
        with pytest.raises(queue.Empty):
            host.recv(timeout=0.5)  # no credit left: nothing more arrives
        rest = read_until(host, 1, len(payload) - len(base64.b64decode(first["data"])))
        assert base64.b64decode(first["data"]) + rest == payload
        host.send({"type": "read", "id": 1, "bytes": 10})
        host.expect("eof", id=1)


def test_half_close_peer_fin_leaves_writable_usable(host: HostProcess, isolated_env: dict[str, str]) -> None:
    payload, handler = make_source(1000)
    with connected(host, isolated_env, handler) as server:
        assert read_until(host, 1, 1000, grant_bytes=4096) == payload
        host.expect("eof", id=1)
        host.send({"type": "send", "id": 1, "data": b64(b"after your FIN")})
        host.expect("ack", id=1, bytes=14)
        host.send({"type": "shutdown", "id": 1})
        host.expect("fin_sent", id=1)
        host.expect("closed", id=1)
        assert server.wait_results(1) == [b"after your FIN"]


def test_cancel_then_shutdown_closes(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    grant(isolated_env, f"127.0.0.1:{echo_server.port}")
    host.hello()
    open_tcp(host, 1, echo_server.port)
    host.expect("opened", id=1)
    host.send({"type": "cancel", "id": 1})
    host.send({"type": "send", "id": 1, "data": b64(b"still writable")})
    host.expect("ack", id=1)
    host.send({"type": "shutdown", "id": 1, "abort": True})
    host.expect("fin_sent", id=1)
    host.expect("closed", id=1)


def test_peer_reset_is_network_error(host: HostProcess, isolated_env: dict[str, str]) -> None:
    with connected(host, isolated_env, reset_after_greeting):
        assert read_until(host, 1, 5, grant_bytes=5) == b"hello"
        host.send({"type": "send", "id": 1, "data": b64(b"!")})
        host.expect("ack", id=1)
        host.send({"type": "read", "id": 1, "bytes": 100})
        msg = host.expect("error", id=1, name="NetworkError", code=Code.NETWORK_ERROR)
        assert msg["message"] == "Network error."  # generic; the reason is in the log
        assert b"Connection reset" in host.stderr or b"reset" in host.stderr.lower()


def test_connection_refused_is_network_error(host: HostProcess, isolated_env: dict[str, str]) -> None:
    port = free_port()  # nothing listens there
    grant(isolated_env, f"127.0.0.1:{port}")
    host.hello()
    open_tcp(host, 1, port)
    host.expect("error", id=1, name="NetworkError", message="Network error.")


def test_window_exceeded_ends_the_socket_only(host: HostProcess, isolated_env: dict[str, str]) -> None:
    with connected(host, isolated_env, slow_sink(delay=1.0), sendBufferSize=4096):
        for _ in range(3):  # 1.5 MiB unacknowledged > 1 MiB window
            host.send({"type": "send", "id": 1, "data": b64(b"z" * CHUNK)})
        seen = []
        while True:
            msg = host.recv(10)
            seen.append(msg)
            if msg["type"] == "error":
                break
        assert msg["code"] == Code.WINDOW_EXCEEDED and msg["id"] == 1 and msg["name"] == "NetworkError", seen
        host.send({"type": "ping", "seq": 9})
        host.expect("pong", seq=9)


def duplex(host: HostProcess, sid: int, upload: bytes, window: int = 1 << 20, credit_size: int = 1 << 20) -> bytes:
    """Sends `upload` then FIN while reading everything, as a page does; returns what arrived."""
    received = bytearray()
    inflight = offset = 0
    credit = credit_size
    host.send({"type": "read", "id": sid, "bytes": credit})
    shut = eof = closed = False
    while not closed:
        while offset < len(upload) and inflight + min(CHUNK, len(upload) - offset) <= window:
            piece = upload[offset : offset + CHUNK]
            host.send({"type": "send", "id": sid, "data": b64(piece)})
            inflight += len(piece)
            offset += len(piece)
        if offset == len(upload) and not inflight and not shut:
            host.send({"type": "shutdown", "id": sid})
            shut = True
        if credit < credit_size // 2 and not eof:
            host.send({"type": "read", "id": sid, "bytes": credit_size - credit})
            credit = credit_size
        msg = host.recv(30)
        assert msg is not None and msg.get("id") == sid, msg
        if msg["type"] == "data":
            chunk = base64.b64decode(msg["data"])
            assert len(chunk) <= min(CHUNK, credit)
            received += chunk
            credit -= len(chunk)
        elif msg["type"] == "ack":
            inflight -= msg["bytes"]
        elif msg["type"] == "eof":
            eof = True
        elif msg["type"] == "closed":
            closed = True
        else:
            assert msg["type"] == "fin_sent", msg
    return bytes(received)


def test_8_mib_both_ways_checked_by_sha256(host: HostProcess, isolated_env: dict[str, str]) -> None:
    size = 8 * 1024 * 1024
    payload, handler = make_source(size, seed=1)
    upload = random.Random(2).randbytes(size)
    with connected(host, isolated_env, handler) as server:
        received = duplex(host, 1, upload)
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
        assert server.wait_results(1) == [upload]


def test_slow_peer_keeps_host_memory_bounded(host: HostProcess, isolated_env: dict[str, str]) -> None:
    with connected(host, isolated_env, slow_sink(delay=0.002, chunk=256 * 1024), sendBufferSize=65536) as server:
        baseline = host.rss_peak_kib()
        send_all(host, 1, os.urandom(64 * 1024 * 1024))
        growth_mib = (host.rss_peak_kib() - baseline) / 1024
        assert growth_mib < 16, f"host peak RSS grew {growth_mib:.1f} MiB for a 64 MiB upload"
        host.send({"type": "shutdown", "id": 1})
        host.expect("fin_sent", id=1)
        assert server.wait_results(1, timeout=60) == [64 * 1024 * 1024]


# -- lifetime ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_exit_closes_every_socket(host: HostProcess, isolated_env: dict[str, str], how: str) -> None:
    server = TcpServer(hashing_sink)
    try:
        grant(isolated_env, f"127.0.0.1:{server.port}")
        host.hello()
        for sid in (1, 2, 3):
            open_tcp(host, sid, server.port)
            host.expect("opened", id=sid)
        if how == "eof":
            host.close_stdin()
        else:
            host.proc.send_signal(signal.SIGTERM)
        assert host.wait() == 0
        assert len(server.wait_results(3)) == 3  # each connection reached EOF at the server
        assert b"Traceback" not in host.stderr
    finally:
        server.close()


def test_release_closes_socket_and_frees_descriptor(host: HostProcess, isolated_env: dict[str, str]) -> None:
    server = TcpServer(hashing_sink)
    try:
        grant(isolated_env, f"127.0.0.1:{server.port}")
        host.hello()
        before = host.fd_count()
        for sid in range(1, 21):
            open_tcp(host, sid, server.port)
            host.expect("opened", id=sid)
        assert host.fd_count() >= before + 20
        for sid in range(1, 21):
            host.send({"type": "release", "id": sid})
        assert len(server.wait_results(20)) == 20
        host.send({"type": "ping"})
        host.expect("pong")
        assert host.fd_count() == before
    finally:
        server.close()
