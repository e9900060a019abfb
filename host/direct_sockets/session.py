"""One native messaging session: the handshake, and routing each message to its socket.

Every inbound message is checked against its schema before anything looks at it. A fault in
one message is answered with an error carrying a stable code, and the session goes on serving
its other sockets.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
from typing import Any, Awaitable, Callable

from . import PROTOCOL_VERSION, __version__
from .errors import PAGE_MESSAGE, Code, ProtocolError
from .framing import Event, FrameError
from .permissions import PermissionStore
from .tcp import TcpConnection
from .tcp_state import TcpSocketState
from .validation import check_inbound

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]

MAX_DATA_CHUNK = 512 * 1024  # bytes of socket data in one message, both ways (see PROTOCOL.md)
SEND_WINDOW = 1024 * 1024  # unacknowledged bytes a page may have in flight per socket
MAX_SOCKETS = 4096
RECENTLY_ENDED = 4096  # ids whose late messages are dropped quietly


class Session:
    def __init__(self, emit: Emit, store: PermissionStore) -> None:
        self._emit = emit
        self._store = store
        self.greeted = False
        self.sockets: dict[int, TcpConnection] = {}
        # A page's message can cross the host's report that its socket ended (an error, or
        # `closed`); such a message is expected, not a fault, so it is dropped without a reply.
        self._ended: collections.OrderedDict[int, None] = collections.OrderedDict()

    async def handle_event(self, event: Event) -> None:
        if isinstance(event, FrameError):
            log.warning("bad frame: %s", event.detail)
            await self._emit({"type": "error", "code": int(event.code), "message": event.detail})
            return
        try:
            await self._dispatch(event.body)
        except ProtocolError as exc:
            await self._fault(exc)

    async def _fault(self, exc: ProtocolError) -> None:
        log.warning("protocol fault %d: %s", exc.code, exc.detail)
        connection = self.sockets.get(exc.socket_id) if exc.socket_id is not None else None
        if connection is not None:
            # The page and the host no longer agree on this socket's state: end it.
            await connection.fail(exc.detail, exc.code)
            return
        reply: dict[str, Any] = {"type": "error", "code": int(exc.code), "message": exc.detail}
        if exc.socket_id is not None:
            reply["id"] = exc.socket_id
        await self._emit(reply)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = check_inbound(message)
        if kind == "hello":
            await self._hello(message)
            return
        if not self.greeted:
            raise ProtocolError(Code.HANDSHAKE_REQUIRED, f"{kind} before hello", message.get("id"))
        if kind == "ping":
            await self._emit({"type": "pong", **({"seq": message["seq"]} if "seq" in message else {})})
        elif kind == "tcp_open":
            await self._open(message)
        else:
            socket_id = message["id"]
            connection = self.sockets.get(socket_id)
            if connection is None:
                if socket_id in self._ended:
                    return
                raise ProtocolError(Code.UNKNOWN_SOCKET, f"{kind} for unknown socket {socket_id}", socket_id)
            await self._to_socket(kind, connection, message)

    async def _hello(self, message: dict[str, Any]) -> None:
        if self.greeted:
            raise ProtocolError(Code.ALREADY_GREETED, "hello twice")
        if message["version"] != PROTOCOL_VERSION:
            raise ProtocolError(Code.VERSION_UNSUPPORTED, f"protocol version {message['version']} is not {PROTOCOL_VERSION}")
        self.greeted = True
        await self._emit(
            {"type": "hello", "version": PROTOCOL_VERSION, "host": f"direct-sockets {__version__}", "maxChunk": MAX_DATA_CHUNK, "sendWindow": SEND_WINDOW}
        )

    async def _open(self, message: dict[str, Any]) -> None:
        socket_id = message["id"]
        if socket_id in self.sockets or socket_id in self._ended:
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} was used before")
        if len(self.sockets) >= MAX_SOCKETS:
            raise ProtocolError(Code.TOO_MANY_SOCKETS, f"more than {MAX_SOCKETS} sockets", socket_id)
        origin, host, port = message["origin"], message["remoteAddress"], message["remotePort"]
        # Policy first, before any name is resolved or packet sent: a page learns nothing about
        # a destination it may not reach (security-model.md, "What errors reveal").
        if not self._store.allows(origin, "tcp", host, port):
            log.info("denied %s -> tcp %s:%d (no grant)", origin, host, port)
            self._mark_ended(socket_id)
            await self._emit(
                {"type": "error", "id": socket_id, "code": int(Code.NOT_ALLOWED), "name": "NotAllowedError", "message": PAGE_MESSAGE[Code.NOT_ALLOWED]}
            )
            return
        state = TcpSocketState(socket_id, SEND_WINDOW, MAX_DATA_CHUNK)
        connection = TcpConnection(state, self._emit, self._gone)
        self.sockets[socket_id] = connection
        log.info("%s (tab %s, frame %s) opens tcp %s:%d", origin, message["tabId"], message["frameId"], host, port)
        connection.start(host, port, message["options"])

    async def _to_socket(self, kind: str, connection: TcpConnection, message: dict[str, Any]) -> None:
        if kind == "send":
            try:
                data = base64.b64decode(message["data"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(Code.SCHEMA_VIOLATION, f"send: data: not base64: {exc}", connection.id) from exc
            if not data:
                raise ProtocolError(Code.SCHEMA_VIOLATION, "send: data: empty", connection.id)
            if len(data) > MAX_DATA_CHUNK:
                raise ProtocolError(Code.SCHEMA_VIOLATION, f"send: data: over {MAX_DATA_CHUNK} bytes", connection.id)
            connection.send(data)
        elif kind == "read":
            connection.grant(message["bytes"])
        elif kind == "shutdown":
            connection.shutdown(bool(message.get("abort")))
        elif kind == "cancel":
            await connection.cancel_reading()
        elif kind == "release":
            connection.release()

    def _gone(self, socket_id: int) -> None:
        if self.sockets.pop(socket_id, None) is not None:
            self._mark_ended(socket_id)

    def _mark_ended(self, socket_id: int) -> None:
        self._ended[socket_id] = None
        while len(self._ended) > RECENTLY_ENDED:
            self._ended.popitem(last=False)

    def close_all(self) -> None:
        for connection in list(self.sockets.values()):
            connection.release()
