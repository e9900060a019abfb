"""The bulk path: a TCP socket's bytes over a loopback WebSocket instead of native messaging.

Native messaging carries every decision (opening, consent, policy, release) and stays the only
way in. Once a socket is open, the host may offer it a WebSocket: `opened` carries a URL on
127.0.0.1 and a 256-bit secret made for that socket alone. The page's API (or the extension's
bulk frame for it) connects and sends the secret as its first message; the host answers `attached`, and
from then on that socket's stream (data, credit, acknowledgements, the end) travels over that
WebSocket, binary frames for bytes, JSON text for the rest (docs/BULK.md).

A secret works once, only within `ATTACH_TIMEOUT`, only for the socket it was made for, and only
from a WebSocket whose `Origin` may hold it: the socket's own page (its WebSocket) or the
extension (its bulk frame). Every failed claim (a guess, a replay, a late secret, another
origin, silence) is closed alike, with 1008 and no reason, at once; why goes to the host log
only. No message on the WebSocket can open anything.

Connections that have not claimed a socket are bounded: at most `MAX_UNCLAIMED` at once (the
oldest is dropped for a new one) and each for at most `CLAIM_TIMEOUT`, so another local process
cannot hold the host's descriptors by connecting and saying nothing.

Each WebSocket is `websockets`' Sans-I/O protocol on an asyncio `Protocol`: what arrives is
handed to its socket in the same callback, and what the socket sends is written at once. Its
asyncio layer (a task per connection, a queue of messages, a lock per send) cost the round
trip more than the relay's own work (docs/BULK.md, measured).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any, Callable

from ..trust.destinations import InvalidDestination, normalize_origin
from ..protocol.errors import Code, ProtocolError

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
# Connections that have not claimed a socket yet, and how long one may take to: a page's
# WebSocket sends its secret the moment it opens, and the page gives up after 3 s anyway.
MAX_UNCLAIMED = 64
CLAIM_TIMEOUT = 5.0  # seconds from the TCP connection to the secret
# Bytes buffered towards a client that does not read (a pong flood, or a sender that ignored
# `paused`): beyond this the connection is cut, since nothing legitimate gets there.
MAX_BUFFERED = 8 * 1024 * 1024


class ChannelClosed(Exception):
    """The socket's WebSocket is closed or closing: nothing more can be sent on it."""


class BulkServer:
    """One loopback WebSocket server per host process, started when first needed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock | None = None
        # Offers by the SHA-256 of their secret: a lookup reveals nothing about the secret's
        # bytes, and the secret itself is then compared in constant time.
        self._offers: dict[bytes, tuple[str, "TcpConnection"]] = {}
        self._channels: set[BulkChannel] = set()
        # Connections that have not claimed a socket, oldest first (`MAX_UNCLAIMED`).
        self._unclaimed: collections.OrderedDict[BulkChannel, None] = collections.OrderedDict()
        self.url = ""
        # Who may claim (`claim_origins`): the socket's page, and the extension's own origin.
        # The session sets these; until then only a page whose origin is known may claim.
        self.page_origin: Callable[["TcpConnection"], str | None] = lambda connection: None
        self.extension_origin: str | None = None

    async def offer(self, connection: "TcpConnection") -> dict[str, str] | None:
        """A secret for this connection's WebSocket; None if the server cannot run."""
        try:
            await self._start()
        except OSError as exc:
            log.warning("bulk path unavailable: %s", exc)
            return None
        token = secrets.token_urlsafe(32)
        key = _key(token)
        self._offers[key] = (token, connection)
        asyncio.get_running_loop().call_later(ATTACH_TIMEOUT, self._expire, key)
        return {"url": self.url, "token": token}

    def for_caller(self, browser: str, extension: str) -> None:
        """Who the extension is, as the browser that started the host said (caller.py).
        Chromium's bulk frame sends its `chrome-extension://ID` origin, which the host knows.
        Firefox has no bulk frame (its `moz-extension://UUID` would name the install to pages,
        and the host could not know the UUID anyway): there only the page's own WebSocket
        claims."""
        if browser == "chromium":
            self.extension_origin = extension.rstrip("/")

    def withdraw(self, connection: "TcpConnection") -> None:
        for key, (_, offered) in list(self._offers.items()):
            if offered is connection:
                del self._offers[key]

    def _expire(self, key: bytes) -> None:
        _, connection = self._offers.pop(key, (None, None))
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

    def claim(self, token: str, origin: str | None) -> "TcpConnection | None":
        """The socket `token` was made for, if `origin` may claim it; the offer is then used up.
        A secret from the wrong origin leaves the offer for the page (and is logged)."""
        key = _key(token)
        token_offered, connection = self._offers.get(key, ("", None))
        # Constant-time comparison: the secret must not leak through timing.
        if connection is None or not hmac.compare_digest(token_offered.encode(), token.encode()):
            return None
        if not self._may_claim(origin, connection):
            log.warning("bulk path: socket %d's secret came from origin %r, which may not hold it", connection.id, origin)
            return None
        del self._offers[key]
        return connection

    def _may_claim(self, origin: str | None, connection: "TcpConnection") -> bool:
        if origin is None:  # a browser's WebSocket always has one
            return False
        if self.extension_origin is not None and origin == self.extension_origin:
            return True
        page = self.page_origin(connection)
        if page is None:
            return False
        try:
            return normalize_origin(origin) == normalize_origin(page)
        except InvalidDestination:  # "null" (an opaque origin), or nothing like an origin
            return False

    # -- connections that have not claimed a socket -------------------------------------------

    def connected(self, channel: "BulkChannel") -> None:
        self._channels.add(channel)
        self._unclaimed[channel] = None
        while len(self._unclaimed) > MAX_UNCLAIMED:
            # The oldest goes: holding connections open then gains a flood nothing, and a page's
            # WebSocket, which claims the moment it opens, is the newest.
            oldest, _ = self._unclaimed.popitem(last=False)
            oldest.drop("more than %d connections without a secret" % MAX_UNCLAIMED)

    def claimed(self, channel: "BulkChannel") -> None:
        self._unclaimed.pop(channel, None)

    def lost(self, channel: "BulkChannel") -> None:
        self._channels.discard(channel)
        self._unclaimed.pop(channel, None)

    async def close(self) -> None:
        for channel in list(self._channels):
            channel.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


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
        self._origin: str | None = None  # the handshake's `Origin` header, if it had one
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(CLAIM_TIMEOUT, self._no_secret)
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP server's: a Transport
        self._transport.set_write_buffer_limits(high=WRITE_LIMIT)
        self._server.connected(self)

    def data_received(self, data: bytes) -> None:
        self._protocol.receive_data(data)
        self._after_receiving()

    def eof_received(self) -> bool | None:
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
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    def _handshake(self, request: Request) -> None:
        # Kept for the claim: refusing here would tell a wrong origin from a wrong secret.
        self._origin = request.headers.get("Origin")
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
            self._refuse("bytes before the secret")

    def _secret(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connection = self._server.claim(data.decode("ascii", "replace"), self._origin) if len(data) < SECRET_MAX else None
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


def event_text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
