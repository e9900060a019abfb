"""The bulk path: a TCP socket's bytes over a loopback WebSocket instead of native messaging.

Native messaging carries every decision (opening, consent, policy, release) and stays the only
way in. Once a socket is open, the host may offer it a WebSocket: `opened` carries a URL on
127.0.0.1 and a 256-bit secret made for that socket alone. The page's API (or the extension's
bulk frame for it) connects and sends the secret as its first message; the host answers `attached`, and
from then on that socket's stream (data, credit, acknowledgements, the end) travels over that
WebSocket, binary frames for bytes, JSON text for the rest (docs/BULK.md).

A secret works once, only within `ATTACH_TIMEOUT`, and only for the socket it was made for: a
second client, a replay or a guess gets the connection closed with 1008 and nothing else. No
message on the WebSocket can open anything.

Each WebSocket is `websockets`' Sans-I/O protocol on an asyncio `Protocol`: what arrives is
handed to its socket in the same callback, and what the socket sends is written at once. Its
asyncio layer (a task per connection, a queue of messages, a lock per send) cost the round
trip more than the relay's own work (docs/BULK.md, measured).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

if TYPE_CHECKING:
    from .tcp import TcpConnection

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 10.0  # seconds from `opened` for the WebSocket to attach, and for its secret
CLOSE_TIMEOUT = 10.0  # seconds for the page to answer our close before the connection is cut
MAX_FRAME = 1024 * 1024  # the most a page's binary frame may carry (its chunks are at most 1 MiB)
WRITE_LIMIT = 1024 * 1024  # bytes buffered towards the page before a sender waits
SECRET_MAX = 100  # characters: a secret is 43; anything longer is not one


class ChannelClosed(Exception):
    """The socket's WebSocket is closed or closing: nothing more can be sent on it."""


class BulkServer:
    """One loopback WebSocket server per host process, started when first needed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock | None = None
        self._offers: dict[str, "TcpConnection"] = {}
        self._channels: set[BulkChannel] = set()
        self.url = ""

    async def offer(self, connection: "TcpConnection") -> dict[str, str] | None:
        """A secret for this connection's WebSocket; None if the server cannot run."""
        try:
            await self._start()
        except OSError as exc:
            log.warning("bulk path unavailable: %s", exc)
            return None
        token = secrets.token_urlsafe(32)
        self._offers[token] = connection
        asyncio.get_running_loop().call_later(ATTACH_TIMEOUT, self._expire, token)
        return {"url": self.url, "token": token}

    def withdraw(self, connection: "TcpConnection") -> None:
        for token, offered in list(self._offers.items()):
            if offered is connection:
                del self._offers[token]

    def _expire(self, token: str) -> None:
        connection = self._offers.pop(token, None)
        if connection is not None:
            log.info("socket %d: its WebSocket never came; it stays on native messaging", connection.id)
            connection.decline_bulk("no WebSocket within the time allowed")

    async def _start(self) -> None:
        if self._server is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is not None:
                return
            self._server = await asyncio.get_running_loop().create_server(lambda: BulkChannel(self), self._host, 0)
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"ws://{self._host}:{port}/"
            log.info("bulk path listening on %s", self.url)

    def claim(self, token: str) -> "TcpConnection | None":
        # Constant-time comparison: the secret must not leak through timing.
        for offered, connection in list(self._offers.items()):
            if hmac.compare_digest(offered.encode(), token.encode()):
                del self._offers[offered]
                return connection
        return None

    async def close(self) -> None:
        for channel in list(self._channels):
            channel.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class BulkChannel(asyncio.Protocol):
    """One WebSocket on the bulk path: first the secret, then one socket's stream.

    Compression is never negotiated (bytes of sockets are not worth it, and it costs CPU), and
    no pings are sent: on loopback a dead peer closes the TCP connection.
    """

    def __init__(self, server: BulkServer) -> None:
        self._server = server
        self._protocol = ServerProtocol(max_size=MAX_FRAME)
        self._transport: asyncio.Transport | None = None
        self._socket: "TcpConnection | None" = None  # once the secret was claimed
        self._refusing = False  # a fault ended the socket: what follows is dropped
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = False
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(ATTACH_TIMEOUT, self._no_secret)
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_LIMIT)
        self._server._channels.add(self)

    def data_received(self, data: bytes) -> None:
        self._protocol.receive_data(data)
        self._after_receiving()

    def eof_received(self) -> bool | None:
        self._protocol.receive_eof()
        self._after_receiving()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server._channels.discard(self)
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._wake_senders()
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.channel_lost(self)

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

    def send_text(self, text: str) -> None:
        if not self.is_open:
            raise ChannelClosed
        self._protocol.send_text(text.encode())
        self._flush()

    async def drain(self) -> None:
        """Waits while the page is behind; raises `ChannelClosed` when it is gone."""
        if self._paused and not self._lost:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._lost:
            raise ChannelClosed

    def close(self, code: int, reason: str) -> None:
        """Starts the closing handshake; the connection is cut if the page does not answer."""
        if self.is_open:
            self._protocol.send_close(code, reason)
            self._flush()
        if not self._lost and self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.abort()

    # -- inside -------------------------------------------------------------------------------

    def _flush(self) -> None:
        assert self._transport is not None
        for data in self._protocol.data_to_send():
            if data:
                self._transport.write(data)
            else:  # the end of the stream: a server closes first
                self._transport.close()

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
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    def _handshake(self, request: Request) -> None:
        response = self._protocol.accept(request)
        if "Server" in response.headers:
            del response.headers["Server"]
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
            # JSON text is read as UTF-8 there: text that is not is a fault like any other.
            self._refusing = not self._socket.from_page(data, text=opcode is Opcode.TEXT)
        elif opcode is Opcode.TEXT:
            self._secret(data)
        else:
            self._refuse("wrong secret")

    def _secret(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connection = self._server.claim(data.decode("ascii", "replace")) if len(data) < SECRET_MAX else None
        if connection is None:
            self._refuse("wrong secret")
            return
        if connection.attach(self):
            self._socket = connection
        else:
            self.close(1008, "too late")

    def _refuse(self, reason: str) -> None:
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        log.warning("bulk path: refused a WebSocket from %s: %s", peer, reason)
        self._refusing = True
        self.close(1008, reason)

    def _no_secret(self) -> None:
        self._timer = None
        if self._socket is not None or self._lost:
            return
        if self._protocol.state is State.CONNECTING:
            self.abort()  # not even a handshake
        else:
            self._refuse("no secret")


def event_text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
