"""Real TCP servers on loopback for the tests, each connection served by its own thread."""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Callable

Handler = Callable[[socket.socket], None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment it is asked for)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TcpServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.accepted = 0
        self.errors: list[BaseException] = []
        self.results: list[object] = []
        self._stop = False
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            result = self.handler(conn)
            if result is not None:
                self.results.append(result)
        except BaseException as exc:  # recorded for the test to inspect
            self.errors.append(exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def wait_results(self, count: int, timeout: float = 30) -> list[object]:
        deadline = time.monotonic() + timeout
        while len(self.results) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.results

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def recv_all(conn: socket.socket) -> bytes:
    chunks = []
    while data := conn.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def echo(conn: socket.socket) -> None:
    """Echoes until the peer's FIN, then sends its own."""
    while data := conn.recv(1 << 16):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def reset_after_greeting(conn: socket.socket) -> None:
    """Says hello, waits for one byte, then resets the connection (RST, not FIN)."""
    conn.sendall(b"hello")
    conn.recv(1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def hashing_sink(conn: socket.socket) -> tuple[int, str]:
    """Reads to EOF; returns (length, sha256) and answers with the digest."""
    h, n = hashlib.sha256(), 0
    while data := conn.recv(1 << 16):
        h.update(data)
        n += len(data)
    conn.sendall(h.hexdigest().encode())
    return n, h.hexdigest()


def make_source(size: int, seed: int = 7) -> tuple[bytes, Handler]:
    """A server that sends `size` pseudo-random bytes, then FIN, while it reads to the peer's
    EOF, as a full-duplex peer does; it returns what it read. Its reading does not wait for its
    sending, so a client that stops reading cannot keep it from hearing what that client sends
    next. Such a client closes with bytes unread, which its kernel answers with a reset (RFC
    1122, 4.2.2.13): the sending may then end in an error, which is no fault of the client's."""
    import random

    payload = random.Random(seed).randbytes(size)

    def send(conn: socket.socket) -> None:
        try:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def handler(conn: socket.socket) -> bytes:
        sender = threading.Thread(target=send, args=(conn,), daemon=True)
        sender.start()
        received = recv_all(conn)
        sender.join(timeout=30)
        return received

    return payload, handler


def slow_sink(delay: float = 0.05, chunk: int = 64 * 1024) -> Handler:
    """Reads slowly: one chunk per `delay` seconds, with a small receive buffer."""

    def handler(conn: socket.socket) -> int:
        total = 0
        while data := conn.recv(chunk):
            total += len(data)
            time.sleep(delay)
        return total

    return handler


def echo_server_process(read_size: int = 65536) -> "tuple[subprocess.Popen[bytes], int]":
    """A TCP echo server in a process of its own (asyncio): a thousand connections need no
    thousand threads, and a benchmark's server shares no GIL with what it measures."""
    port = free_port()
    code = (
        "import asyncio\n"
        "async def echo(r, w):\n"
        "    try:\n"
        f"        while d := await r.read({read_size}):\n"
        "            w.write(d); await w.drain()\n"
        "    finally:\n"
        "        w.close()\n"
        "async def main():\n"
        f"    s = await asyncio.start_server(echo, '127.0.0.1', {port}, backlog=4096, limit={max(read_size, 1 << 16) * 4})\n"
        "    print('ready', flush=True); await s.serve_forever()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc, port
