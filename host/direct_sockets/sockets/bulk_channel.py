"""One WebSocket on the bulk path (bulk.py): first the socket's secret, then that socket's stream.

Each is `websockets`' Sans-I/O protocol on an asyncio `Protocol`: what arrives is handed to its
socket in the same callback, and what the socket sends is written at once. Its asyncio layer
(a task per connection, a queue of messages, a lock per send) cost the round trip more than the
relay's own work (docs/BULK.md, measured). To its socket a channel is a `PageLink`; the server
that made it is a `Claims`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Protocol

from ..protocol.bulk_control import decode_claim, decode_control, encode_control
from ..protocol.errors import Code, ProtocolError
from .bulk_frame import FrameSite, is_upgrade, response_for
from .bulk_link import BulkSocket, ChannelClosed

from websockets.datastructures import MultipleValuesError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 10.0  # seconds for the page to answer our close before the connection is cut
MAX_FRAME = 1024 * 1024  # the most a page's binary frame may carry (its chunks are at most 1 MiB)
WRITE_LIMIT = 1024 * 1024  # bytes buffered towards the page before a sender waits
CLAIM_TIMEOUT = 5.0  # seconds from the TCP connection to the secret
# Bytes buffered towards a client that does not read (a pong flood, or a sender that ignored
# `paused`): beyond this the connection is cut, since nothing legitimate gets there.
MAX_BUFFERED = 8 * 1024 * 1024


class Claims(Protocol):
    """The server, as its channels see it: it counts the ones that claim nothing, and judges
    a secret."""

    def connected(self, channel: "BulkChannel") -> None: ...

    def claimed(self, channel: "BulkChannel") -> None: ...

    def lost(self, channel: "BulkChannel") -> None: ...

    def claim(self, token: str, origin: str | None, page: str | None = None, site: FrameSite | None = None) -> BulkSocket | None: ...


class BulkChannel(asyncio.Protocol):
    """One WebSocket on the bulk path: first the secret, then one socket's stream.

    Compression is never negotiated (bytes of sockets are not worth it, and it costs CPU), and
    no pings are sent: on loopback a dead peer closes the TCP connection.
    """

    def __init__(self, server: Claims, site: FrameSite | None = None) -> None:
        """`site`: the page whose frame this connection's listener serves (bulk_frame.py), or
        None on the bulk server's own port."""
        self._server = server
        self._site = site
        self._protocol = ServerProtocol(max_size=MAX_FRAME)
        self._transport: asyncio.Transport | None = None
        self._socket: BulkSocket | None = None  # once the secret was claimed
        self._refusing = False  # a fault ended the socket: what follows is dropped
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = False
        self._origin: str | None = None  # the handshake's `Origin` header, if it had one
        self._answered = False  # a plain HTTP request was answered: whatever follows is ignored
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(CLAIM_TIMEOUT, self._no_secret)
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP server's: a Transport
        self._transport.set_write_buffer_limits(high=WRITE_LIMIT)
        # Small messages (a read's credit, an ack, a short echo) go at once, whatever listener
        # accepted us: Nagle would hold one behind the last for a delayed ACK (40 ms on Linux).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connected(self)

    def data_received(self, data: bytes) -> None:
        if self._answered:  # a second, pipelined request: one answer per connection
            return
        self._protocol.receive_data(data)
        self._after_receiving()

    def eof_received(self) -> bool | None:
        if not self._answered:
            self._protocol.receive_eof()
            self._after_receiving()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server.lost(self)
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._wake_senders()
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.link_lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_senders()

    # -- for the socket -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._lost and self._protocol.state is State.OPEN

    @property
    def paused(self) -> bool:
        """Enough is buffered towards the page: the sender should wait for `drain()`."""
        return self._paused

    def send_bytes(self, data: bytes | memoryview) -> None:
        """Frames `data` at once: the caller may reuse its memory as soon as this returns."""
        if not self.is_open:
            raise ChannelClosed
        self._protocol.send_binary(data)
        self._flush()

    def send_control(self, message: dict[str, Any]) -> None:
        if not self.is_open:
            raise ChannelClosed
        self._protocol.send_text(encode_control(message).encode())
        self._flush()

    async def drain(self) -> None:
        """Waits while the page is behind; raises `ChannelClosed` when it is gone."""
        if self._paused and not self._lost:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._lost:
            raise ChannelClosed

    def close(self, reason: str) -> None:
        """Starts a normal closing handshake (1000); the connection is cut if the page does
        not answer."""
        if self.is_open:
            self._protocol.send_close(1000, reason)
            self._flush()
        if not self._lost and self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.abort()

    # -- inside -------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._transport is None:
            raise ProtocolError(Code.INTERNAL_ERROR, "bulk path: sending before the connection was made")
        for data in self._protocol.data_to_send():
            if data:
                self._transport.write(data)
            else:  # the end of the stream: a server closes first
                self._transport.close()
        if self._transport.get_write_buffer_size() > MAX_BUFFERED and not self._lost:
            # A client that sends (pings, say) and never reads: its answers would pile up here.
            self.drop(f"over {MAX_BUFFERED} bytes waiting for a client that does not read")

    def _wake_senders(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _after_receiving(self) -> None:
        events = self._protocol.events_received()
        self._flush()  # the handshake's answer, a pong, the reply to a close
        if self._protocol.close_expected() and self._close_timer is None and not self._lost:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)
        for event in events:
            if self._answered:  # a plain request was answered: what came with it is ignored
                break
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    def _handshake(self, request: Request) -> None:
        if self._protocol.eof_sent:  # bytes came after the request, and the protocol gave up on them
            self._answered = True
            self.drop("more than one request")
            return
        try:
            # Kept for the claim: refusing here would tell a wrong origin from a wrong secret.
            self._origin = request.headers.get("Origin")
            # The host's own frame (or a 404) to a plain request: the response ends the connection.
            plain = response_for(request, self._site.port) if self._site is not None and not is_upgrade(request) else None
        except MultipleValuesError:  # no browser sends a header twice
            self.drop("a request that names a header twice")
            return
        response = plain if plain is not None else self._protocol.accept(request)
        if "Server" in response.headers:
            del response.headers["Server"]
        # Anything but a WebSocket's answer ends the connection: what follows it is not read.
        self._answered = response.status_code != 101
        self._protocol.send_response(response)
        self._flush()

    def _frame(self, frame: Frame) -> None:
        # A message may come in fragments; the protocol keeps their total under MAX_FRAME.
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if frame.fin:
                self._message(frame.opcode, frame.data)
                return
            self._fragment_opcode, self._fragments = frame.opcode, [frame.data]
        elif frame.opcode is Opcode.CONT and self._fragment_opcode is not None:
            self._fragments.append(frame.data)
            if frame.fin:
                opcode, data = self._fragment_opcode, b"".join(self._fragments)
                self._fragment_opcode, self._fragments = None, []
                self._message(opcode, data)

    def _message(self, opcode: Opcode, data: bytes) -> None:
        if self._refusing or not self.is_open:
            return
        if self._socket is not None:
            self._from_page(self._socket, opcode, data)
        elif opcode is Opcode.TEXT:
            self._secret(data)
        else:
            self._refuse("bytes before the secret")

    def _from_page(self, socket: BulkSocket, opcode: Opcode, data: bytes) -> None:
        """Bytes go to the socket as they are; text is a control message, decoded and checked
        here: text that is not UTF-8 JSON of a schema's form ends the socket with its code."""
        message: bytes | dict[str, Any] = data
        if opcode is Opcode.TEXT:
            try:
                message = decode_control(data)
            except ProtocolError as exc:
                self._refusing = True
                socket.page_fault(exc)
                return
        self._refusing = not socket.from_page(message)

    def _secret(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        claim = decode_claim(data, from_frame=self._site is not None)
        connection = self._server.claim(claim[0], self._origin, claim[1], self._site) if claim is not None else None
        if connection is None:
            self._refuse("no live offer for that secret from that origin")
            return
        if connection.attach(self):
            self._socket = connection
            self._server.claimed(self)
        else:
            self._refuse("the secret came too late")

    def _refuse(self, reason: str) -> None:
        """A failed claim: whatever the reason, the client sees the same close (1008, no reason
        text) and the connection goes at once; the reason is for the host log only."""
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        log.warning("bulk path: refused a WebSocket from %s (origin %r): %s", peer, self._origin, reason)
        self._refusing = True
        if self.is_open:
            self._protocol.send_close(1008)
        self._flush()
        if self._transport is not None:
            self._transport.close()  # what is buffered (the close frame) goes first

    def drop(self, reason: str) -> None:
        """Cut at once, without a word: a connection that claimed nothing in time, or one too
        many, or one whose client does not read."""
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        log.warning("bulk path: dropped a connection from %s: %s", peer, reason)
        self._refusing = True
        self.abort()

    def _no_secret(self) -> None:
        self._timer = None
        if self._socket is not None or self._lost:
            return
        if self._protocol.state is State.CONNECTING:
            self.drop("no handshake in time")
        else:
            self._refuse("no secret in time")
