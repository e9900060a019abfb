"""Reliability of the real host process: integrity at scale, faults, load, and a browser that
stops reading (docs/RELIABILITY.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from direct_sockets.files import leftovers
from direct_sockets.trust.permissions import PermissionStore
from tests.conftest import cli
from tests.support.hostproc import HostProcess
from tests.support.servers import echo_server_process
from tests.test_host_process import grant

ORIGIN = "http://127.0.0.1:8000"
MiB = 1024 * 1024
BLOCK = MiB


def blocks(seed: int, total: int) -> Iterator[bytes]:
    """`total` pseudo-random bytes from `seed`, a block at a time: never all in memory."""
    rng = random.Random(seed)
    for _ in range(total // BLOCK):
        yield rng.randbytes(BLOCK)


def expected_sha(seed: int, total: int) -> str:
    digest = hashlib.sha256()
    for block in blocks(seed, total):
        digest.update(block)
    return digest.hexdigest()


class DuplexServer:
    """Sends `total` bytes from `seed` while hashing what it receives, both at once."""

    def __init__(self, seed: int, total: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received_sha: str | None = None
        self.received = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, args=(seed, total), daemon=True).start()

    def _serve(self, seed: int, total: int) -> None:
        conn, _ = self.sock.accept()

        def send() -> None:
            for block in blocks(seed, total):
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        digest = hashlib.sha256()
        while data := conn.recv(1 << 20):
            digest.update(data)
            self.received += len(data)
        sender.join()
        conn.close()
        self.received_sha = digest.hexdigest()
        self.done.set()

    def close(self) -> None:
        self.sock.close()


def open_socket(host: HostProcess, sid: int, port: int, origin: str = ORIGIN, bulk: bool = False) -> dict:
    host.send({"type": "tcp_open", "id": sid, "origin": origin, "tabId": 1, "frameId": 0, "incognito": False,
               "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}, "bulk": bulk})
    return host.expect("opened", id=sid, timeout=30)


def pump_duplex(send: Callable[[bytes], None], send_control: Callable[[dict], None], receive: Callable[[], object],
                upload: Iterator[bytes], window: int, credit_size: int) -> tuple[str, int]:
    """Both directions at once, as a page does: sends under the window, grants credit as it
    reads, shuts down after the last byte, reads to `closed`. Returns the SHA-256 and size of
    what arrived."""
    digest = hashlib.sha256()
    received = inflight = 0
    credit = credit_size
    send_control({"type": "read", "bytes": credit})
    pending = next(upload, None)
    shut = eof = False
    while True:
        while pending is not None and inflight + len(pending) <= window:
            for offset in range(0, len(pending), 512 * 1024):
                send(pending[offset : offset + 512 * 1024])
            inflight += len(pending)
            pending = next(upload, None)
        if pending is None and not inflight and not shut:
            send_control({"type": "shutdown"})
            shut = True
        if credit < credit_size // 2 and not eof:  # (after the end, the socket may be gone)
            send_control({"type": "read", "bytes": credit_size - credit})
            credit = credit_size
        event = receive()
        if isinstance(event, bytes):
            digest.update(event)
            received += len(event)
            credit -= len(event)
            assert credit >= 0, "the host delivered more than the page granted"
        elif event["type"] == "ack":
            inflight -= event["bytes"]
        elif event["type"] == "closed":
            return digest.hexdigest(), received
        else:
            assert event["type"] in ("eof", "fin_sent"), event
            eof = eof or event["type"] == "eof"


@pytest.mark.parametrize("path", ["bulk", "native"])
def test_one_gib_both_ways_at_once_checked_by_sha256(path: str, host: HostProcess, isolated_env: dict[str, str]) -> None:
    total = 1024 * MiB
    server = DuplexServer(seed=21, total=total)
    try:
        grant(isolated_env, f"127.0.0.1:{server.port}")
        host.hello()
        opened = open_socket(host, 1, server.port, bulk=path == "bulk")
        started = time.monotonic()
        if path == "bulk":
            offer = opened["bulk"]
            with connect(offer["url"], origin=ORIGIN, compression=None, max_size=None) as ws:
                ws.send(offer["token"])
                ws.recv(timeout=10)

                def receive() -> object:
                    message = ws.recv(timeout=60)
                    return message if isinstance(message, bytes) else json.loads(message)

                def send(message: str | bytes) -> None:
                    # As a browser's WebSocket does, a send after the host closed is dropped: the
                    # socket's end is already on its way (a read grant can cross it).
                    try:
                        ws.send(message)
                    except ConnectionClosed:
                        pass

                sha, size = pump_duplex(send, lambda m: send(json.dumps(m)), receive, blocks(22, total), opened["bulk"]["window"], 4 * MiB)
        else:
            def receive() -> object:
                message = host.recv(60)
                assert message is not None and message.get("id") == 1, message
                return base64.b64decode(message["data"]) if message["type"] == "data" else message

            sha, size = pump_duplex(
                lambda data: host.send({"type": "send", "id": 1, "data": base64.b64encode(data).decode()}),
                lambda m: host.send({**m, "id": 1}), receive, blocks(22, total), MiB, MiB,
            )
        seconds = time.monotonic() - started
        assert server.done.wait(60)
        assert size == total and sha == expected_sha(21, total)
        assert server.received == total and server.received_sha == expected_sha(22, total)
        print(f"1 GiB each way at once over {path}: {seconds:.1f} s ({2 * total / seconds / 1e6:.0f} MB/s both ways)")
    finally:
        server.close()


def test_permission_store_survives_being_killed_mid_write(isolated_env: dict[str, str]) -> None:
    """A writer killed at any moment leaves the store as it was before or after its write:
    every write it finished is kept, and at most the one under way is added."""
    store = PermissionStore(Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json")
    # Each writer goes on where the store stands, so each grant it finishes (and reports) is new.
    writer = (
        "import sys\n"
        "from direct_sockets.trust.permissions import Grant, PermissionStore\n"
        "from pathlib import Path\n"
        "store = PermissionStore(Path(sys.argv[1]))\n"
        "i = len(store.load())\n"
        "while True:\n"
        "    i += 1\n"
        "    store.grant(Grant(f'https://site{i % 500}.example', 'tcp', f'host{i}.example', 1 + i % 65000))\n"
        "    print(i, flush=True)\n"
    )
    rng = random.Random(5)
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(store.path)], env=isolated_env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        # Killed at a random moment after its first write, not after its start: how long
        # Python takes to start says nothing about the store (and varies with the machine).
        first = proc.stdout.readline()
        assert first, "the writer ended before its first write"
        time.sleep(rng.random() * 0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished = int([first, *proc.stdout][-1])
        proc.stdout.close()
        kept = len(store.load())  # raises StoreDamaged if a write was torn
        assert finished <= kept <= finished + 1, (finished, kept)
    left = leftovers(store.path)
    store.grant(store.load()[0])  # the next writer clears what killed ones left
    assert not leftovers(store.path), left


def test_a_browser_that_stops_reading_cannot_grow_the_host(host: HostProcess) -> None:
    """The browser floods the host and reads nothing back: the host stops reading its pipe
    rather than hold the flood, and once read again it answers every message, in order."""
    host.hello()
    baseline = host.rss_peak_kib()
    host.reading.clear()
    count = 100_000
    sent = threading.Event()

    def flood() -> None:
        for seq in range(count):
            host.send({"type": "ping", "seq": seq})
        sent.set()

    threading.Thread(target=flood, daemon=True).start()
    time.sleep(3)
    assert not sent.is_set(), "the host read a flood it could not answer"
    growth_mib = (host.rss_peak_kib() - baseline) / 1024
    assert growth_mib < 16, f"host RSS grew {growth_mib:.1f} MiB"
    host.reading.set()
    for seq in range(count):
        assert host.expect("pong", timeout=30)["seq"] == seq
    assert sent.wait(30)


def assert_back_to(host: HostProcess, fds: int) -> None:
    """Once the host has handled what came before, its descriptors return to `fds`."""
    host.send({"type": "ping", "seq": 99})
    host.expect("pong", seq=99)
    deadline = time.monotonic() + 10
    while host.fd_count() != fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.fd_count() == fds


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_a_thousand_sockets_across_origins_then_back_to_the_start(host: HostProcess, isolated_env: dict[str, str]) -> None:
    proc, port = echo_server_process()
    try:
        origins = [f"http://127.0.0.1:{9000 + i}" for i in range(20)]
        for origin in origins:
            cli(isolated_env, "permissions", "grant", "--origin", origin, "--tcp", f"127.0.0.1:{port}")
        host.hello()
        open_socket(host, 1, port, origins[0])  # warm: the first socket's imports and buffers
        host.send({"type": "release", "id": 1})
        host.send({"type": "ping", "seq": 0})
        host.expect("pong", seq=0)  # the release is done
        fds, rss = host.fd_count(), rss_kib(host.pid)
        count = 1000
        for i in range(count):
            host.send({"type": "tcp_open", "id": 10 + i, "origin": origins[i % 20], "tabId": 1 + i % 20, "frameId": 0,
                       "incognito": False, "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}})
        opened = {host.expect("opened", timeout=60)["id"] for _ in range(count)}
        assert opened == set(range(10, 10 + count))
        assert host.fd_count() >= fds + count
        # Every one of them works: a message each way on each.
        for i in range(count):
            host.send({"type": "read", "id": 10 + i, "bytes": 64})
            host.send({"type": "send", "id": 10 + i, "data": base64.b64encode(f"socket {i}".encode()).decode()})
        echoed: dict[int, bytes] = {}
        acks = 0
        while acks < count or len(echoed) < count:
            message = host.recv(60)
            assert message is not None
            if message["type"] == "ack":
                acks += 1
            else:
                assert message["type"] == "data", message
                echoed[message["id"]] = echoed.get(message["id"], b"") + base64.b64decode(message["data"])
        assert all(echoed[10 + i] == f"socket {i}".encode() for i in range(count))
        with_open_mib = rss_kib(host.pid) / 1024
        assert with_open_mib < 200, f"{with_open_mib:.0f} MiB with {count} sockets open"
        for i in range(count):
            host.send({"type": "release", "id": 10 + i})
        assert_back_to(host, fds)
        after_mib = rss_kib(host.pid) / 1024
        print(f"host RSS: {rss / 1024:.1f} MiB at the start, {with_open_mib:.1f} with {count} sockets, {after_mib:.1f} after")
        assert after_mib - rss / 1024 < 16
    finally:
        proc.kill()


def test_a_burst_of_ten_thousand_attempts_meets_the_rate_limiter(host: HostProcess, isolated_env: dict[str, str]) -> None:
    proc, port = echo_server_process()
    try:
        grant(isolated_env, f"127.0.0.1:{port}")
        host.hello()
        fds = host.fd_count()
        count = 10_000
        started = time.monotonic()
        for i in range(count):
            host.send({"type": "tcp_open", "id": 1 + i, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
                       "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}})
        outcomes: dict[str, int] = {}
        opened_ids = []
        for _ in range(count):
            message = host.recv(60)
            assert message is not None and message["type"] in ("opened", "error"), message
            outcomes[message.get("name", message["type"])] = outcomes.get(message.get("name", message["type"]), 0) + 1
            if message["type"] == "opened":
                opened_ids.append(message["id"])
        elapsed = time.monotonic() - started
        # The burst of 64, then 16 a second: everything else refused as any refusal is.
        assert 64 <= outcomes.get("opened", 0) <= 64 + 16 * elapsed + 16, (outcomes, elapsed)
        assert outcomes.get("NotAllowedError", 0) == count - outcomes["opened"]
        host.send({"type": "ping", "seq": 7})
        assert host.expect("pong", seq=7)
        for sid in opened_ids:
            host.send({"type": "release", "id": sid})
        assert_back_to(host, fds)
    finally:
        proc.kill()
