"""What a TCP connection's loops stand on: plain reads and writes with the same calls as TLS's,
the queue of what the page sent, and the socket options set before connecting."""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any

from .connection import set_buffer_sizes


class PlainIO:
    """A plain socket's reads and writes, with the same calls as `TlsLayer`: a connection's
    loops do not care which one they drive."""

    ragged_eof = False

    async def recv(self, sock: socket.socket, budget: int) -> bytes:
        return await asyncio.get_running_loop().sock_recv(sock, budget)

    async def sendall(self, sock: socket.socket, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(sock, data)

    async def close_write(self, sock: socket.socket) -> None:
        """Nothing before FIN in plain TCP (TLS sends its close_notify here)."""


PLAIN = PlainIO()

# Writes smaller than this join the one queued before them (see `Outbox`).
JOIN_BELOW = 64 * 1024


class Outbox:
    """What the page sent and the kernel has not taken yet, in order, perhaps ending with the
    shutdown. The send window bounds its bytes; joining small writes bounds its entries too: a
    page may send a window's worth of tiny messages (measured: a 4 MiB window of two-byte
    writes as 2 million queued objects took 113 MiB). Entries: at most
    2 * window / JOIN_BELOW + 2."""

    def __init__(self) -> None:
        self._items: collections.deque[bytes | bytearray | object] = collections.deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put(self, item: bytes | object) -> None:
        tail = self._items[-1] if self._items else None
        if isinstance(item, bytes) and len(item) < JOIN_BELOW and isinstance(tail, (bytes, bytearray)) and len(tail) < JOIN_BELOW:
            if isinstance(tail, bytes):
                tail = self._items[-1] = bytearray(tail)
            tail += item
        else:
            self._items.append(item)
        self._ready.set()

    def clear(self) -> None:
        self._items.clear()

    async def get(self) -> bytes | bytearray | object:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


def apply_options(sock: socket.socket, options: dict[str, Any]) -> None:
    """The draft's TCPSocketOptions, set before connecting (buffer sizes must be)."""
    if options.get("noDelay"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if "keepAliveDelay" in options:
        seconds = max(1, options["keepAliveDelay"] // 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, min(seconds, 32767))
        elif hasattr(socket, "TCP_KEEPALIVE"):  # macOS
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPALIVE, min(seconds, 32767))
    set_buffer_sizes(sock, options)
