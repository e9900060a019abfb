"""One TCP connection on behalf of a page: asyncio code that only moves bytes.

Every decision (what the page may do, when to read, when to close) is `TcpSocketState`'s. A
connection reads from the OS only as many bytes as the page has granted, and answers each
`send` with an `ack` once the bytes are handed to the kernel, so neither direction can make the
host hold more than one window per socket.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from typing import Any, Callable

from .connection import Connection, Emit, set_buffer_sizes
from .tcp_state import TcpSocketState

log = logging.getLogger(__name__)

_SHUTDOWN = object()


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


class TcpConnection(Connection):
    kind = "tcp socket"
    state: TcpSocketState

    def __init__(self, state: TcpSocketState, emit: Emit, on_gone: Callable[[int], None]) -> None:
        super().__init__(state, emit, on_gone)
        self._credit_changed = asyncio.Event()
        self._outbox: asyncio.Queue[bytes | object] = asyncio.Queue()

    # -- opening ------------------------------------------------------------------------------

    def start(self, host: str, port: int, options: dict[str, Any], addresses: list[Any]) -> None:
        """Connects to the first of `addresses` that answers: the ones the session resolved and
        checked, never a fresh resolution (which a rebinding DNS server could change)."""
        self.description = f"{host}:{port}"
        self._spawn(self._connect(host, port, options, addresses))

    async def _connect(self, host: str, port: int, options: dict[str, Any], infos: list[Any]) -> None:
        if not await self._connect_first(infos, lambda sock: apply_options(sock, options), f"{host}:{port}"):
            return
        assert self._sock is not None
        self.state.connected()
        peer = self._sock.getpeername()
        local = self._sock.getsockname()
        self.description = f"{host}:{port} ({peer[0]})"
        log.info("socket %d connected to %s from %s:%d", self.id, self.description, local[0], local[1])
        await self._emit(
            {"type": "opened", "id": self.id, "remoteAddress": peer[0], "remotePort": peer[1], "localAddress": local[0], "localPort": local[1]}
        )
        self._spawn(self._read_loop())
        self._spawn(self._write_loop())

    def adopt(self, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        """Takes over a connection accepted by a listening socket: it is open from the start."""
        sock.setblocking(False)
        self._sock = sock
        self.state.connected()
        self.description = f"accepted from {peer[0]}:{peer[1]}"
        self._spawn(self._read_loop())
        self._spawn(self._write_loop())

    # -- what the page asks (already checked by the state) -------------------------------------

    def grant(self, size: int) -> None:
        self.state.page_read(size)
        self._credit_changed.set()

    def send(self, data: bytes) -> None:
        self.state.page_send(len(data))
        self._outbox.put_nowait(data)

    def shutdown(self, abort: bool) -> None:
        self.state.page_shutdown()
        if abort:
            # Queued sends are dropped, as writer.abort() drops queued chunks.
            while not self._outbox.empty():
                self._outbox.get_nowait()
        self._outbox.put_nowait(_SHUTDOWN)

    async def cancel_reading(self) -> None:
        self.state.page_cancel()
        self._credit_changed.set()
        await self._maybe_finish()

    # -- moving bytes -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        try:
            while True:
                budget = self.state.read_budget
                if budget == 0:
                    if self.state.read_side.value != "open":
                        return
                    self._credit_changed.clear()
                    await self._credit_changed.wait()
                    continue
                data = await loop.sock_recv(self._sock, budget)
                if self.state.read_side.value != "open":
                    return  # cancelled while we waited: the page wants nothing more
                if not data:
                    self.state.peer_eof()
                    await self._emit({"type": "eof", "id": self.id})
                    await self._maybe_finish()
                    return
                self.state.received(len(data))
                await self._emit({"type": "data", "id": self.id, "data": base64.b64encode(data).decode("ascii")})
        except OSError as exc:
            await self.fail(f"reading: {exc}")

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        try:
            while True:
                item = await self._outbox.get()
                if item is _SHUTDOWN:
                    self._sock.shutdown(socket.SHUT_WR)
                    self.state.fin_sent()
                    await self._emit({"type": "fin_sent", "id": self.id})
                    await self._maybe_finish()
                    return
                assert isinstance(item, bytes)
                await loop.sock_sendall(self._sock, item)
                self.state.wrote(len(item))
                await self._emit({"type": "ack", "id": self.id, "bytes": len(item)})
        except OSError as exc:
            await self.fail(f"writing: {exc}")
