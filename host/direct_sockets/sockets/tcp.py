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
from typing import Any, Awaitable, Callable

from .bulk_link import ChannelClosed, Offers, PageLink
from .bulk_stream import BulkStream
from .connection import Connection, Emit
from ..protocol.errors import Code, ProtocolError
from ..protocol.tcp_state import Phase, ReadSide, TcpSocketState, WriteSide
from ..protocol.wire import BULK_CHUNK
from .tcp_io import PLAIN, Outbox, apply_options
from .tls import ClientTls, TlsFailed, TlsLayer, probe_certificate, spki_sha256

log = logging.getLogger(__name__)

_SHUTDOWN = object()

# Asks the user whether to trust a certificate no authority vouches for (DER, why it failed);
# answers the pin to connect with, or None.
AskTrust = Callable[["TcpConnection", bytes, str], Awaitable["str | None"]]


class TcpConnection(Connection):
    kind = "tcp socket"
    state: TcpSocketState

    def __init__(
        self, state: TcpSocketState, emit: Emit, on_gone: Callable[[int], None], bulk: Offers | None = None,
        bulk_message_size: int = BULK_CHUNK,
    ) -> None:
        super().__init__(state, emit, on_gone)
        # The bulk path (bulk_stream.py): offered at `opened` when the extension asks for it.
        self._bulk = BulkStream(self, bulk, bulk_message_size, self._spawn, self._emit) if bulk is not None else None
        self._credit_changed = asyncio.Event()
        self._writing = False  # the write loop is handing bytes to the kernel
        self._outbox = Outbox()
        self.tls: TlsLayer | None = None
        self.starttls_allowed = False  # opened with secureTransport "starttls", not yet upgraded
        self.destination: tuple[str, int] | None = None  # host and port as the page named them

    @property
    def has_os_socket(self) -> bool:
        return self._sock is not None

    @property
    def _link(self) -> PageLink | None:
        """Where the stream goes while it is on the bulk path; None on native messaging."""
        return self._bulk.link if self._bulk is not None else None

    async def _stream_decided(self) -> None:
        """Until the bulk path attaches or is declined, the stream waits: it never travels two
        ways at once."""
        if self._bulk is not None:
            await self._bulk.decided.wait()

    # -- opening ------------------------------------------------------------------------------

    def start(
        self, host: str, port: int, options: dict[str, Any], addresses: list[Any],
        tls: ClientTls | None = None, ask_trust: AskTrust | None = None,
    ) -> None:
        """Connects to the first of `addresses` that answers: the ones the session resolved and
        checked, never a fresh resolution (which a rebinding DNS server could change)."""
        self.description = f"{host}:{port}"
        self.destination = (host, port)
        self.starttls_allowed = options.get("secureTransport") == "starttls"
        self._spawn(self._connect(host, port, options, addresses, tls, ask_trust))

    async def _connect(
        self, host: str, port: int, options: dict[str, Any], infos: list[Any], tls: ClientTls | None, ask_trust: AskTrust | None
    ) -> None:
        if not await self._connect_first(infos, lambda sock: apply_options(sock, options), f"{host}:{port}"):
            return
        peer = self._os_socket().getpeername()
        self.description = f"{host}:{port} ({peer[0]})"
        if tls is not None:
            # Only the address that answered is used again (to look at the certificate, and
            # to connect once it is trusted): never a new resolution.
            address = [info for info in infos if info[4][:2] == peer[:2]][:1]
            if not await self._secure(tls, ask_trust, address, options):
                return
        await self._opened()

    async def _secure(self, tls: ClientTls, ask_trust: AskTrust | None, infos: list[Any], options: dict[str, Any]) -> bool:
        """The TLS handshake as a client; the user may be asked to trust a certificate."""
        try:
            await self._handshake(tls)
            return True
        except TlsFailed as exc:
            failure = exc
        if not (failure.askable and ask_trust is not None and not tls.page_decides and infos):
            await self.fail(failure.reason)
            return False
        family, _, _, _, address = infos[0]
        der = failure.certificate
        if der is None:
            try:
                chain = await probe_certificate(address, family, tls.server_name)
            except (OSError, TlsFailed) as exc:
                await self.fail(f"{failure.reason}; then fetching the certificate: {exc}")
                return False
            der = chain[0] if chain else None
        if der is None:
            await self.fail(f"{failure.reason}; the server sent no certificate")
            return False
        pin = await ask_trust(self, der, failure.reason)
        if pin is None or pin != spki_sha256(der):
            await self.fail(f"{failure.reason}; the user did not trust the certificate")
            return False
        # The failed handshake ended that connection: connect again to the same address.
        self._os_socket().close()
        self._sock = None
        if not await self._connect_first(infos, lambda sock: apply_options(sock, options), self.description):
            return False
        try:
            await self._handshake(ClientTls(tls.server_name, tls.alpn, trusted=(pin,)))
        except TlsFailed as exc:
            await self.fail(exc.reason)
            return False
        return True

    async def _handshake(self, tls: ClientTls) -> None:
        layer = TlsLayer(tls.context(), server_side=False, server_hostname=tls.server_name)
        await layer.handshake(self._os_socket())
        tls.check_pin(layer.object.getpeercert(binary_form=True))
        self.tls = layer
        log.info("socket %d: %s with %s, %s", self.id, layer.object.version(), self.description, layer.object.cipher()[0])

    async def _opened(self) -> None:
        sock = self._os_socket()
        self.state.connected()
        peer = sock.getpeername()
        local = sock.getsockname()
        log.info("socket %d connected to %s from %s:%d", self.id, self.description, local[0], local[1])
        opened: dict[str, Any] = {
            "type": "opened", "id": self.id, "remoteAddress": peer[0], "remotePort": peer[1], "localAddress": local[0], "localPort": local[1]
        }
        if self.tls is not None:
            opened["tls"] = self.tls.summary()
        if self._bulk is not None:
            offer = await self._bulk.offer(self.state.send_window)
            if offer is not None:
                opened["bulk"] = offer
        await self._emit(opened)
        self._spawn(self._read_loop())
        self._spawn(self._write_loop())

    def adopt(self, sock: socket.socket, peer: tuple[Any, ...], tls: TlsLayer | None = None) -> None:
        """Takes over a connection accepted by a listening socket (its TLS handshake, if any,
        done): it is open from the start."""
        sock.setblocking(False)
        self._sock = sock
        self.tls = tls
        self.state.connected()
        self.description = f"accepted from {peer[0]}:{peer[1]}"
        self._spawn(self._read_loop())
        self._spawn(self._write_loop())

    # -- STARTTLS: the connection moves to a new socket id, secured -----------------------------

    def may_start_tls(self) -> str | None:
        """Why this socket cannot be upgraded now; None when it can."""
        if not self.starttls_allowed:
            return "the socket was not opened with secureTransport \"starttls\""
        if self.state.phase is not Phase.OPEN or self.state.write_side is not WriteSide.OPEN or self.state.read_side is not ReadSide.OPEN:
            return f"the socket is {self.state.phase.value}, reading {self.state.read_side.value}, writing {self.state.write_side.value}"
        if self.state.unacked or not self._outbox.empty():
            return "writes are still in flight"
        return None

    def hand_over(self) -> socket.socket:
        """Stops moving plaintext and gives the OS socket away; this socket ends silently.
        Nothing more is read as plaintext: bytes the peer sent after its go-ahead belong to the
        TLS handshake (and plaintext injected there makes it fail, as it must)."""
        sock = self._os_socket()
        self._sock = None
        self.starttls_allowed = False
        self.state.failed()
        self._teardown()
        if self._bulk is not None:
            self._bulk.close_ending("continues under TLS")
        return sock

    def upgrade(self, sock: socket.socket, destination: tuple[str, int] | None, description: str, tls: ClientTls) -> None:
        self._sock = sock
        self.destination = destination
        self.description = description
        self._spawn(self._upgrade(tls))

    async def _upgrade(self, tls: ClientTls) -> None:
        try:
            await self._handshake(tls)
        except TlsFailed as exc:
            # A STARTTLS dialogue cannot be replayed on a new connection, so there is no
            # trust prompt here: the page's pins or CAs, or the user's earlier trust, decide.
            await self.fail(exc.reason)
            return
        await self._opened()

    # -- the bulk path: what the connection tells it, or asks of it ---------------------------

    def decline_bulk(self, reason: str) -> None:
        """The stream stays on native messaging (the extension could not connect, or never did)."""
        if self._bulk is not None:
            self._bulk.decline(reason)

    async def _stream(self, message: dict[str, Any]) -> None:
        link = self._link
        if link is not None:
            link.send_control(message)
            await link.drain()
        else:
            await self._emit(message)

    async def _stream_data(self, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.send_bytes(data)
            await link.drain()
        else:
            await self._emit({"type": "data", "id": self.id, "data": base64.b64encode(data).decode("ascii")})

    async def _emit_end(self, message: dict[str, Any]) -> None:
        # The page hears of the end on its link, after the last bytes; the background (its
        # routes, the badge, the popup) on native messaging, as for every socket.
        if self._bulk is not None and self._bulk.tell_end(message):
            message = {**message, "bulk": True}
        await self._emit(message)

    def _teardown(self) -> None:
        if self._bulk is not None:
            self._bulk.teardown()
        super()._teardown()

    def release(self) -> None:
        super().release()
        if self._bulk is not None:
            self._bulk.close_ending("released")

    # -- what the page asks (already checked by the state) -------------------------------------

    def credit(self, size: int) -> None:
        """The page has room for `size` more bytes (`read`)."""
        self.state.page_read(size)
        self._wake_reading()

    def _wake_reading(self) -> None:
        """The page granted credit or stopped reading: whichever reader waits looks again."""
        self._credit_changed.set()
        if self._bulk is not None:
            self._bulk.wake()

    def send(self, data: bytes) -> None:
        self.state.page_send(len(data))
        bulk = self._bulk
        if bulk is not None and bulk.link is not None and self.tls is None and self._sock is not None and not self._writing and self._outbox.empty():
            # A plain socket on the bulk path with nothing ahead of these bytes: straight to
            # the kernel, without waking the write loop (docs/BULK.md, measured). What the
            # kernel does not take now, and any error, is left to the loop.
            try:
                sent = self._sock.send(data)
            except OSError:
                sent = 0
            if sent:
                bulk.wrote(sent, more_queued=False)
            if sent == len(data):
                return
            data = data[sent:]
        self._outbox.put(data)

    def shutdown(self, abort: bool) -> None:
        self.state.page_shutdown()
        if abort:
            # Queued sends are dropped, as writer.abort() drops queued chunks.
            self._outbox.clear()
        self._outbox.put(_SHUTDOWN)

    async def cancel_reading(self) -> None:
        self._stop_reading()
        await self._maybe_finish()

    def cancel(self) -> None:
        """`cancel_reading` at once (the bulk path's `cancel`): a fault in it is the page's."""
        self._stop_reading()
        self._spawn(self._maybe_finish())

    def _stop_reading(self) -> None:
        self.state.page_cancel()
        self._wake_reading()

    # -- moving bytes -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        await self._stream_decided()
        sock = self._os_socket()
        io = self.tls or PLAIN
        link = self._link
        if self._bulk is not None and link is not None and io is PLAIN:
            await self._pumped(await self._bulk.pump(sock, link))
            return
        try:
            while True:
                budget = self.state.read_budget
                if budget == 0:
                    if self.state.read_side is not ReadSide.OPEN:
                        return
                    self._credit_changed.clear()
                    await self._credit_changed.wait()
                    continue
                data = await io.recv(sock, budget)
                if self.state.read_side is not ReadSide.OPEN:
                    return  # cancelled while we waited: the page wants nothing more
                if not data:
                    if io.ragged_eof:
                        log.info("socket %d: the peer ended TLS without close_notify", self.id)
                    await self._peer_ended()
                    return
                self.state.received(len(data))
                await self._stream_data(data)
        except ChannelClosed:
            self.release()  # the page's side of the bulk path is gone
        except OSError as exc:
            await self.fail(f"reading: {exc}")

    async def _pumped(self, how: object) -> None:
        """How reading a plain socket onto its link ended (`BulkStream.pump`)."""
        if isinstance(how, ProtocolError):
            raise how
        if isinstance(how, OSError):
            await self.fail(f"reading: {how}")
        elif how == "gone":
            self.release()
        elif how == "eof":
            try:
                await self._peer_ended()
            except ChannelClosed:
                self.release()

    async def _peer_ended(self) -> None:
        self.state.peer_eof()
        await self._stream({"type": "eof", "id": self.id})
        await self._maybe_finish()

    async def _write_loop(self) -> None:
        await self._stream_decided()
        sock = self._os_socket()
        io = self.tls or PLAIN
        unreported = 0
        try:
            while True:
                item = await self._outbox.get()
                if item is _SHUTDOWN:
                    if self._bulk is not None:
                        self._bulk.ack()
                    if unreported:
                        await self._stream({"type": "ack", "id": self.id, "bytes": unreported})
                    await io.close_write(sock)
                    sock.shutdown(socket.SHUT_WR)
                    self.state.fin_sent()
                    await self._stream({"type": "fin_sent", "id": self.id})
                    await self._maybe_finish()
                    return
                if not isinstance(item, (bytes, bytearray)):
                    raise ProtocolError(Code.INTERNAL_ERROR, f"socket {self.id}: {item!r} among the writes", self.id)
                self._writing = True
                try:
                    await io.sendall(sock, item)
                finally:
                    self._writing = False
                if self._bulk is not None and self._link is not None:
                    self._bulk.wrote(len(item), more_queued=not self._outbox.empty())
                    continue
                self.state.wrote(len(item))
                # Acknowledgements only open the page's send window: while more is queued they
                # are gathered, up to a quarter of the window, to spare a message per write.
                unreported += len(item)
                if self._outbox.empty() and unreported < self.state.send_window // 4:
                    await asyncio.sleep(0)  # one turn of the loop: sends that arrive together share an ack
                if self._outbox.empty() or unreported >= self.state.send_window // 4:
                    await self._stream({"type": "ack", "id": self.id, "bytes": unreported})
                    unreported = 0
        except ChannelClosed:
            self.release()
        except OSError as exc:
            await self.fail(f"writing: {exc}")
