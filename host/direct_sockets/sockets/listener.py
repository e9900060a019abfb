"""A listening TCP socket on behalf of a page: accepts only as many connections as the page asked
for, each becoming an ordinary `TcpConnection` under the id the page chose for it. A peer the
administrator's policy blocks (`decision.peer_blocked`, asked through `peer_blocked`) is closed
as soon as it is accepted: the page never hears of it."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any, Callable

from .connection import Connection, Emit
from ..protocol.errors import Code, ProtocolError
from ..protocol.listen_state import ListenState
from .server_certs import ServedCertificate
from .tcp import TcpConnection
from .tls import TlsFailed, TlsLayer

log = logging.getLogger(__name__)

# Connections the kernel may queue before the page accepts them, when the page does not say.
DEFAULT_BACKLOG = 128
# accept() failing for want of descriptors or memory: the listener waits and tries again.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_RETRY_DELAY = 0.5  # seconds


class TcpListener(Connection):
    kind = "tcp server"
    state: ListenState

    def __init__(
        self,
        state: ListenState,
        emit: Emit,
        on_gone: Callable[[int], None],
        new_connection: Callable[[int], TcpConnection],
        certificate: ServedCertificate | None = None,
        peer_blocked: Callable[[str, int], bool] = lambda address, port: False,
    ) -> None:
        super().__init__(state, emit, on_gone)
        self._new_connection = new_connection
        self._peer_blocked = peer_blocked
        self._accept_wanted = asyncio.Event()
        self._certificate = certificate
        self._context = certificate.context() if certificate is not None else None
        self._handshaking = 0  # accepted connections in their TLS handshake, each owed an id

    def start(self, message: dict[str, Any]) -> None:
        address, port = message["localAddress"], message.get("localPort", 0)
        self.description = f"listening on {address}:{port}"
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            # Inside the `try`: out of descriptors (EMFILE) is this socket's failure, told.
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._spawn(self.fail(f"listening on {address}:{port}: {exc}"))
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if message.get("ipv6Only") else 0)
            sock.bind((address, port))
            sock.listen(min(message.get("backlog", DEFAULT_BACKLOG), socket.SOMAXCONN))
        except OSError as exc:
            sock.close()
            self._spawn(self.fail(f"listening on {address}:{port}: {exc}"))
            return
        self._sock = sock
        self.state.listening()
        local = sock.getsockname()
        self.description = f"listening on {local[0]}:{local[1]}"
        log.info("tcp server %d %s", self.id, self.description)
        opened: dict[str, Any] = {"type": "opened", "id": self.id, "localAddress": local[0], "localPort": local[1]}
        if self._certificate is not None:
            opened["tls"] = {"certificate": self._certificate.details}
        self._spawn(self._emit(opened))
        self._spawn(self._accept_loop())

    def credit(self, socket_id: int) -> None:
        self.state.page_accept(socket_id)
        self._accept_wanted.set()

    async def cancel_reading(self) -> None:
        self.state.page_cancel()
        await self._maybe_finish()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self._os_socket()
        while True:
            # A connection still in its TLS handshake holds one of the page's ids in reserve,
            # so that a slow client delays only itself.
            if not (self.state.may_accept and len(self.state.accept_ids) > self._handshaking):
                self._accept_wanted.clear()
                await self._accept_wanted.wait()
                continue
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    # The host is out of descriptors for now: the connection waits in the
                    # kernel's backlog, the listener lives on and tries again (as asyncio's
                    # own servers do), and the log says why.
                    log.warning("tcp server %d: accepting: %s; trying again in %.1f s", self.id, exc, ACCEPT_RETRY_DELAY)
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                    continue
                await self.fail(f"accepting: {exc}")
                return
            try:
                peer, local = conn.getpeername(), conn.getsockname()
            except OSError as exc:  # gone before we looked: it never uses one of the page's ids
                log.info("tcp server %d: accepted connection vanished: %s", self.id, exc)
                conn.close()
                continue
            if self._peer_blocked(peer[0], peer[1]):
                # Before any TLS or any id: a blocked network gets nothing from the page.
                log.info("tcp server %d: closed a connection from %s:%d: the administrator's policy blocks it", self.id, peer[0], peer[1])
                conn.close()
                continue
            if self._context is None:
                await self._hand_to_page(conn, peer, local, None)
            else:
                self._handshaking += 1
                self._spawn(self._secure(conn, peer, local))

    async def _secure(self, conn: socket.socket, peer: Any, local: Any) -> None:
        if self._context is None:
            conn.close()
            raise ProtocolError(Code.INTERNAL_ERROR, f"tcp server {self.id}: a TLS handshake without a certificate", self.id)
        conn.setblocking(False)
        layer = TlsLayer(self._context, server_side=True)
        try:
            await layer.handshake(conn)
        except (TlsFailed, OSError) as exc:
            # The page never hears of a client that could not speak TLS to it.
            log.info("tcp server %d: TLS handshake with %s:%d failed: %s", self.id, peer[0], peer[1], exc)
            conn.close()
            return
        except BaseException:  # the server closed meanwhile
            conn.close()
            raise
        finally:
            self._handshaking -= 1
            self._accept_wanted.set()
        if not self.state.may_accept:
            conn.close()  # the page stopped accepting meanwhile
            return
        await self._hand_to_page(conn, peer, local, layer)

    async def _hand_to_page(self, conn: socket.socket, peer: Any, local: Any, layer: TlsLayer | None) -> None:
        connection = self._new_connection(self.state.take_accept_id())
        connection.adopt(conn, peer, layer)
        log.info("tcp server %d accepted %s:%d as socket %d", self.id, peer[0], peer[1], connection.id)
        accepted: dict[str, Any] = {
            "type": "accepted", "id": self.id, "socketId": connection.id, "remoteAddress": peer[0], "remotePort": peer[1],
            "localAddress": local[0], "localPort": local[1],
        }
        if layer is not None:
            accepted["tls"] = layer.summary()
        await self._emit(accepted)
