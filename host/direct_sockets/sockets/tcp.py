"""One TCP connection on behalf of a page: asyncio code that only moves bytes.

Every decision (what the page may do, when to read, when to close) is `TcpSocketState`'s. A
connection reads from the OS only as many bytes as the page has granted, and answers each
`send` with an `ack` once the bytes are handed to the kernel, so neither direction can make the
host hold more than one window per socket.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import json
import logging
import socket
from typing import Any, Awaitable, Callable

from .bulk import BulkChannel, BulkServer, ChannelClosed, event_text
from .connection import Connection, Emit, set_buffer_sizes
from ..protocol.errors import Code, ProtocolError
from ..protocol.validation import check_inbound
from ..protocol.tcp_state import TcpSocketState
from ..protocol.wire import BULK_CHUNK
from .tls import ClientTls, TlsFailed, TlsLayer, probe_certificate, spki_sha256

log = logging.getLogger(__name__)

_SHUTDOWN = object()
STATS_INTERVAL = 1.0  # seconds between byte counts of a bulk socket, for the popup


@functools.cache
def read_buffer() -> memoryview:
    """Where plain sockets on the bulk path read into, one for the whole host: each read is
    framed (copied) for its WebSocket before the next one, in the same callback. A fresh buffer
    per read cost a map, a remap and an unmap of up to 1 MiB for every few bytes read
    (docs/BULK.md)."""
    return memoryview(bytearray(BULK_CHUNK))


class PlainIO:
    """A plain socket's reads and writes, with the same calls as `TlsLayer`: the loops below
    do not care which one they drive."""

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

# Asks the user whether to trust a certificate no authority vouches for (DER, why it failed);
# answers the pin to connect with, or None.
AskTrust = Callable[["TcpConnection", bytes, str], Awaitable["str | None"]]


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

    def __init__(
        self, state: TcpSocketState, emit: Emit, on_gone: Callable[[int], None], bulk: BulkServer | None = None,
        bulk_message_size: int = BULK_CHUNK,
    ) -> None:
        super().__init__(state, emit, on_gone)
        # The bulk path (bulk.py): offered at `opened` when the extension asks for it. Until the
        # WebSocket attaches or is declined, the stream waits, so that it never travels two ways.
        self._bulk_server = bulk
        self._bulk_message_size = bulk_message_size
        self._ws: BulkChannel | None = None
        self._ending_ws: BulkChannel | None = None  # after the socket ended: told of the end, then closed
        self._stream_ready = asyncio.Event()
        self._stream_ready.set()
        self._credit_changed = asyncio.Event()
        # While the page reads a plain socket over its WebSocket: how to wake that reading when
        # credit comes, and how to stop it (`_pump_to_page`).
        self._pump: tuple[Callable[[], None], Callable[[], None]] | None = None
        self._writing = False  # the write loop is handing bytes to the kernel
        self._unreported = 0  # bytes written on the bulk path and not yet acknowledged
        self._ack_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # known once on the bulk path
        self._outbox = Outbox()
        self.tls: TlsLayer | None = None
        self.starttls_allowed = False  # opened with secureTransport "starttls", not yet upgraded
        self.destination: tuple[str, int] | None = None  # host and port as the page named them

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
        if self._bulk_server is not None:
            offer = await self._bulk_server.offer(self)
            if offer is not None:
                self._stream_ready.clear()
                opened["bulk"] = {**offer, "window": self.state.send_window}
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
        if self.state.phase.value != "open" or self.state.write_side.value != "open" or self.state.read_side.value != "open":
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
        self._close_ending_ws(1000, "continues under TLS")
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

    # -- the bulk path ------------------------------------------------------------------------

    def decline_bulk(self, reason: str) -> None:
        """The stream stays on native messaging (the extension could not connect, or never did)."""
        if self._bulk_server is not None:
            self._bulk_server.withdraw(self)
        if not self._stream_ready.is_set() and self._ws is None:
            log.info("socket %d stays on native messaging: %s", self.id, reason)
            self._stream_ready.set()

    def attach(self, ws: BulkChannel) -> bool:
        """The socket's WebSocket is here: the stream moves to it, and for as long as the socket
        lives what the page sends on it comes to `from_page`. False
        when it came too late (the stream stayed on native messaging, or the socket is gone)."""
        if self._stream_ready.is_set() or self._sock is None:
            return False
        self._ws = ws
        self._loop = asyncio.get_running_loop()
        # A WebSocket has no 1 MiB message limit to keep under: larger reads, fewer messages, up
        # to the size the extension says suits its browser (Firefox: 64 KiB, docs/BULK.md).
        self.state.max_chunk = self._bulk_message_size
        ws.send_text(event_text({"type": "attached", "id": self.id}))
        self._stream_ready.set()
        self._spawn(self._report_bytes())
        log.info("socket %d: its stream moved to the bulk path", self.id)
        return True

    def from_page(self, data: bytes, text: bool) -> bool:
        """A message the page sent on its WebSocket: bytes it wrote, or JSON text (credit, the
        end of writing or of reading). False once a fault ended the socket: nothing more is
        taken from that WebSocket."""
        try:
            if text:
                self._page_message(data)
            else:
                self.send(data)
        except ProtocolError as exc:
            self._spawn(self.fail(exc.detail, exc.code))
            return False
        return True

    def channel_lost(self, ws: BulkChannel) -> None:
        if self._ending_ws is ws:
            self._ending_ws = None
        if self._ws is ws and self.state.phase.value not in ("closed", "failed"):
            # The page (or the frame's content script) went away without a word: as a release.
            log.info("socket %d: its WebSocket closed; releasing it", self.id)
            self.release()

    async def _report_bytes(self) -> None:
        """The background no longer sees this socket's bytes pass: the popup's counters come
        from here, about once a second while they change."""
        reported = (0, 0)
        while self._ws is not None:
            await asyncio.sleep(STATS_INTERVAL)
            counts = (self.state.bytes_sent, self.state.bytes_received)
            if counts != reported and self._ws is not None:
                reported = counts
                await self._emit({"type": "stats", "id": self.id, "sent": counts[0], "received": counts[1]})

    def _page_message(self, text: bytes) -> None:
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(Code.INVALID_JSON, f"bulk path: {exc}", self.id) from exc
        if not isinstance(message, dict) or message.get("type") not in ("read", "shutdown", "cancel"):
            raise ProtocolError(Code.SCHEMA_VIOLATION, "bulk path: only read, shutdown and cancel travel here", self.id)
        message["id"] = self.id  # a socket's WebSocket speaks for that socket only
        check_inbound(message)
        if message["type"] == "read":
            self.grant(message["bytes"])
        elif message["type"] == "shutdown":
            self.shutdown(bool(message.get("abort")))
        else:
            self._stop_reading()
            self._spawn(self._maybe_finish())

    async def _stream(self, message: dict[str, Any]) -> None:
        if self._ws is not None:
            self._ws.send_text(event_text(message))
            await self._ws.drain()
        else:
            await self._emit(message)

    async def _stream_data(self, data: bytes) -> None:
        if self._ws is not None:
            self._ws.send_bytes(data)
            await self._ws.drain()
        else:
            await self._emit({"type": "data", "id": self.id, "data": base64.b64encode(data).decode("ascii")})

    async def _emit_end(self, message: dict[str, Any]) -> None:
        # The page hears of the end on the WebSocket, after the last bytes; the background
        # (its routes, the badge, the popup) on native messaging, as for every socket.
        ws = self._ending_ws
        if ws is not None:
            # The WebSocket may be the page's own: it gets what a page may know, no reason.
            told = {k: v for k, v in message.items() if k not in ("detail", "code")}
            try:
                ws.send_text(event_text(told))
            except ChannelClosed:
                pass
            self._close_ending_ws(1000, "socket ended")
            message = {**message, "bulk": True}
        await self._emit(message)

    def _close_ending_ws(self, code: int, reason: str) -> None:
        ws, self._ending_ws = self._ending_ws, None
        if ws is not None:
            ws.close(code, reason)

    def _teardown(self) -> None:
        if self._pump is not None:
            self._pump[1]()  # before the socket closes: its descriptor may be reused at once
        if self._bulk_server is not None:
            self._bulk_server.withdraw(self)
        # Nothing more streams; the WebSocket stays open just long enough to say how it ended.
        self._ending_ws, self._ws = self._ws, None
        super()._teardown()

    def release(self) -> None:
        super().release()
        self._close_ending_ws(1000, "released")

    # -- what the page asks (already checked by the state) -------------------------------------

    def grant(self, size: int) -> None:
        self.state.page_read(size)
        self._wake_reading()

    def _wake_reading(self) -> None:
        """The page granted credit or stopped reading: whichever reader waits looks again."""
        self._credit_changed.set()
        if self._pump is not None:
            self._pump[0]()

    def send(self, data: bytes) -> None:
        self.state.page_send(len(data))
        if self._ws is not None and self.tls is None and self._sock is not None and not self._writing and self._outbox.empty():
            # A plain socket on the bulk path with nothing ahead of these bytes: straight to
            # the kernel, without waking the write loop (docs/BULK.md, measured). What the
            # kernel does not take now, and any error, is left to the loop.
            try:
                sent = self._sock.send(data)
            except OSError:
                sent = 0
            if sent:
                self._wrote(sent)
            if sent == len(data):
                return
            data = data[sent:]
        self._outbox.put(data)

    def _wrote(self, size: int) -> None:
        """Bytes handed to the kernel on the bulk path. Acknowledgements only open the page's
        send window, so they are gathered: the writes of one turn of the event loop share one,
        and none waits for more than a quarter of the window."""
        self.state.wrote(size)
        self._unreported += size
        if self._unreported >= self.state.send_window // 4:
            self._ack()
        elif self._ack_handle is None and self._outbox.empty():  # else the write loop's last write does it
            self._ack_handle = (self._loop or asyncio.get_running_loop()).call_soon(self._ack)

    def _ack(self) -> None:
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        if self._unreported and self._ws is not None:
            try:
                self._ws.send_text(event_text({"type": "ack", "id": self.id, "bytes": self._unreported}))
            except ChannelClosed:
                return  # the page is gone: the WebSocket's loss releases the socket
            self._unreported = 0

    def shutdown(self, abort: bool) -> None:
        self.state.page_shutdown()
        if abort:
            # Queued sends are dropped, as writer.abort() drops queued chunks.
            self._outbox.clear()
        self._outbox.put(_SHUTDOWN)

    async def cancel_reading(self) -> None:
        self._stop_reading()
        await self._maybe_finish()

    def _stop_reading(self) -> None:
        self.state.page_cancel()
        self._wake_reading()

    # -- moving bytes -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        await self._stream_ready.wait()
        sock = self._os_socket()
        io = self.tls or PLAIN
        if self._ws is not None and io is PLAIN:
            await self._pump_to_page(sock, self._ws)
            return
        try:
            while True:
                budget = self.state.read_budget
                if budget == 0:
                    if self.state.read_side.value != "open":
                        return
                    self._credit_changed.clear()
                    await self._credit_changed.wait()
                    continue
                data = await io.recv(sock, budget)
                if self.state.read_side.value != "open":
                    return  # cancelled while we waited: the page wants nothing more
                if not data:
                    if io.ragged_eof:
                        log.info("socket %d: the peer ended TLS without close_notify", self.id)
                    self.state.peer_eof()
                    await self._stream({"type": "eof", "id": self.id})
                    await self._maybe_finish()
                    return
                self.state.received(len(data))
                await self._stream_data(data)
        except ChannelClosed:
            self.release()  # the page's side of the bulk path is gone
        except OSError as exc:
            await self.fail(f"reading: {exc}")

    async def _pump_to_page(self, sock: socket.socket, ws: BulkChannel) -> None:
        """The read loop for a plain socket on the bulk path. The socket stays registered with
        the event loop while the page has credit and keeps up, and each read goes to the
        WebSocket in the callback that made it: no task switch and no registering anew for
        each read (docs/BULK.md, measured)."""
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        ended: asyncio.Future[object] = loop.create_future()
        registered = False
        buffer = read_buffer()

        def finish(how: object) -> None:
            stop()
            if not ended.done():
                ended.set_result(how)

        def stop() -> None:
            nonlocal registered
            if registered:
                registered = False
                loop.remove_reader(fd)

        def wake() -> None:
            nonlocal registered
            if ended.done():
                return
            if self.state.read_side.value != "open":
                finish("cancelled")
            elif not registered and self.state.read_budget and not ws.paused:
                registered = True
                loop.add_reader(fd, readable)

        async def wake_when_drained() -> None:
            try:
                await ws.drain()
            except ChannelClosed:
                finish("gone")
                return
            wake()

        def readable() -> None:
            budget = self.state.read_budget
            if budget == 0:  # the page has not granted more: its next `read` wakes us
                stop()
                wake()
                return
            try:
                size = sock.recv_into(buffer, budget)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                finish(exc)
                return
            if not size:
                finish("eof")
                return
            try:
                self.state.received(size)
                ws.send_bytes(buffer[:size])
            except ChannelClosed:
                finish("gone")
                return
            except ProtocolError as exc:  # a broken invariant: raised in the task, not here
                finish(exc)
                return
            if ws.paused:  # the page is behind: read again once the WebSocket drained
                stop()
                self._spawn(wake_when_drained())

        self._pump = (wake, stop)
        try:
            wake()
            how = await ended
        finally:
            stop()
            self._pump = None
        if isinstance(how, ProtocolError):
            raise how
        if isinstance(how, OSError):
            await self.fail(f"reading: {how}")
        elif how == "gone":
            self.release()
        elif how == "eof":
            self.state.peer_eof()
            try:
                await self._stream({"type": "eof", "id": self.id})
            except ChannelClosed:
                self.release()
                return
            await self._maybe_finish()

    async def _write_loop(self) -> None:
        await self._stream_ready.wait()
        sock = self._os_socket()
        io = self.tls or PLAIN
        unreported = 0
        try:
            while True:
                item = await self._outbox.get()
                if item is _SHUTDOWN:
                    self._ack()
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
                if self._ws is not None:
                    self._wrote(len(item))
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
