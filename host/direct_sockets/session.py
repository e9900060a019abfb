"""One native messaging session: the handshake, the policy check on every socket a page asks
for, and routing each message to its socket.

Every inbound message is checked against its schema before anything looks at it. A fault in
one message is answered with an error carrying a stable code, and the session goes on serving
its other sockets.
"""

from __future__ import annotations

import base64
import binascii
import collections
import ipaddress
import logging
from typing import Any, Awaitable, Callable

from . import PROTOCOL_VERSION, __version__
from .connection import Connection
from .errors import PAGE_MESSAGE, Code, ProtocolError
from .framing import Event, FrameError
from .listen_state import ListenState
from .listener import TcpListener
from .permissions import PermissionStore
from .tcp import TcpConnection
from .tcp_state import TcpSocketState
from .udp import MAX_DATAGRAM, UdpConnection
from .udp_state import UdpMode, UdpSocketState
from .validation import check_inbound

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]

MAX_DATA_CHUNK = 512 * 1024  # bytes of TCP data in one message, both ways (see PROTOCOL.md)
SEND_WINDOW = 1024 * 1024  # unacknowledged TCP bytes a page may have in flight per socket
UDP_SEND_WINDOW = 32  # unacknowledged datagrams a page may have in flight per socket
MAX_SOCKETS = 4096
RECENTLY_ENDED = 4096  # ids whose late messages are dropped quietly
BOUND_UDP_MIN_PORT = 1024  # the draft: bound UDP only on 0 or 1024 and above
LISTEN_MIN_PORT = 32768  # the draft: TCP listening only on 0 or 32768 and above


def _ip_literal(text: str, what: str, socket_id: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: not an IP address: {text!r}", socket_id) from exc


def _decode(data: str, what: str, socket_id: int, limit: int, allow_empty: bool) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: data: not base64: {exc}", socket_id) from exc
    if not raw and not allow_empty:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: data: empty", socket_id)
    if len(raw) > limit:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: data: over {limit} bytes", socket_id)
    return raw


class Session:
    def __init__(self, emit: Emit, store: PermissionStore) -> None:
        self._emit = emit
        self._store = store
        self.greeted = False
        self.sockets: dict[int, Connection] = {}
        self.origins: dict[int, str] = {}
        # Ids the page named in advance for connections a listening socket will accept.
        self._reserved: dict[int, int] = {}
        # A page's message can cross the host's report that its socket ended (an error, or
        # `closed`); such a message is expected, not a fault, so it is dropped without a reply.
        self._ended: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._handlers: dict[str, tuple[type[Connection] | tuple[type[Connection], ...], Callable[[Any, dict[str, Any]], Awaitable[None]]]] = {
            "send": (TcpConnection, self._send),
            "read": (TcpConnection, self._read),
            "shutdown": ((TcpConnection, UdpConnection), self._shutdown),
            "cancel": (Connection, self._cancel),
            "release": (Connection, self._release),
            "udp_send": (UdpConnection, self._udp_send),
            "udp_read": (UdpConnection, self._udp_read),
            "join": (UdpConnection, self._membership),
            "leave": (UdpConnection, self._membership),
            "accept": (TcpListener, self._accept),
        }

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
            return
        openers = {"tcp_open": self._open_tcp, "udp_open": self._open_udp, "tcp_listen": self._listen}
        if kind in openers:
            await self._open(message, openers[kind])
            return
        socket_id = message["id"]
        connection = self.sockets.get(socket_id)
        if connection is None:
            if socket_id in self._ended:
                return
            raise ProtocolError(Code.UNKNOWN_SOCKET, f"{kind} for unknown socket {socket_id}", socket_id)
        accepted, handler = self._handlers[kind]
        if not isinstance(connection, accepted):
            raise ProtocolError(Code.WRONG_KIND, f"{kind} is not for a {connection.kind}", socket_id)
        await handler(connection, message)

    async def _hello(self, message: dict[str, Any]) -> None:
        if self.greeted:
            raise ProtocolError(Code.ALREADY_GREETED, "hello twice")
        if message["version"] != PROTOCOL_VERSION:
            raise ProtocolError(Code.VERSION_UNSUPPORTED, f"protocol version {message['version']} is not {PROTOCOL_VERSION}")
        self.greeted = True
        await self._emit(
            {"type": "hello", "version": PROTOCOL_VERSION, "host": f"direct-sockets {__version__}", "maxChunk": MAX_DATA_CHUNK, "sendWindow": SEND_WINDOW}
        )

    # -- opening: policy first, before any name is resolved or packet sent ----------------------

    def _id_taken(self, socket_id: int) -> bool:
        return socket_id in self.sockets or socket_id in self._ended or socket_id in self._reserved

    async def _open(self, message: dict[str, Any], opener: Callable[[dict[str, Any]], Connection | None]) -> None:
        socket_id = message["id"]
        if self._id_taken(socket_id):
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} was used before")
        if len(self.sockets) >= MAX_SOCKETS:
            raise ProtocolError(Code.TOO_MANY_SOCKETS, f"more than {MAX_SOCKETS} sockets", socket_id)
        connection = opener(message)
        if connection is None:
            # A page learns nothing about a destination it may not reach: one message for
            # every refusal, and the network untouched (security-model.md).
            self._mark_ended(socket_id)
            await self._emit(
                {"type": "error", "id": socket_id, "code": int(Code.NOT_ALLOWED), "name": "NotAllowedError", "message": PAGE_MESSAGE[Code.NOT_ALLOWED]}
            )
            return
        self.sockets[socket_id] = connection
        self.origins[socket_id] = message["origin"]

    def _allowed(self, message: dict[str, Any], kind: str, host: str, port: int) -> bool:
        if self._store.allows(message["origin"], kind, host, port):
            return True
        log.info("denied %s (tab %s, frame %s) -> %s %s:%s (no grant)", message["origin"], message["tabId"], message["frameId"], kind, host, port)
        return False

    def _open_tcp(self, message: dict[str, Any]) -> Connection | None:
        host, port = message["remoteAddress"], message["remotePort"]
        if not self._allowed(message, "tcp", host, port):
            return None
        connection = TcpConnection(TcpSocketState(message["id"], SEND_WINDOW, MAX_DATA_CHUNK), self._emit, self._gone)
        log.info("%s (tab %s, frame %s) opens tcp %s:%d", message["origin"], message["tabId"], message["frameId"], host, port)
        connection.start(host, port, message["options"])
        return connection

    def _open_udp(self, message: dict[str, Any]) -> Connection | None:
        mode = UdpMode(message["mode"])
        if mode is UdpMode.CONNECTED:
            if not self._allowed(message, "udp", message["remoteAddress"], message["remotePort"]):
                return None
        else:
            _ip_literal(message["localAddress"], "udp_open: localAddress", message["id"])
            port = message.get("localPort", 0)
            if 0 < port < BOUND_UDP_MIN_PORT or not self._allowed(message, "udp-bind", message["localAddress"], port):
                return None
        connection = UdpConnection(UdpSocketState(message["id"], mode, UDP_SEND_WINDOW), self._emit, self._gone)
        connection.start(message)
        return connection

    def _listen(self, message: dict[str, Any]) -> Connection | None:
        _ip_literal(message["localAddress"], "tcp_listen: localAddress", message["id"])
        port = message.get("localPort", 0)
        if 0 < port < LISTEN_MIN_PORT or not self._allowed(message, "tcp-listen", message["localAddress"], port):
            return None
        origin = message["origin"]

        def new_connection(socket_id: int) -> TcpConnection:
            connection = TcpConnection(TcpSocketState(socket_id, SEND_WINDOW, MAX_DATA_CHUNK), self._emit, self._gone)
            self._reserved.pop(socket_id, None)
            self.sockets[socket_id] = connection
            self.origins[socket_id] = origin
            return connection

        listener = TcpListener(ListenState(message["id"]), self._emit, self._gone, new_connection)
        listener.start(message)
        return listener

    # -- per-socket messages ----------------------------------------------------------------------

    async def _send(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        connection.send(_decode(message["data"], "send", connection.id, MAX_DATA_CHUNK, allow_empty=False))

    async def _read(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        connection.grant(message["bytes"])

    async def _shutdown(self, connection: TcpConnection | UdpConnection, message: dict[str, Any]) -> None:
        if isinstance(connection, TcpConnection):
            connection.shutdown(bool(message.get("abort")))
        else:
            connection.shutdown()

    async def _cancel(self, connection: Any, message: dict[str, Any]) -> None:
        await connection.cancel_reading()

    async def _release(self, connection: Connection, message: dict[str, Any]) -> None:
        connection.release()

    async def _udp_send(self, connection: UdpConnection, message: dict[str, Any]) -> None:
        data = _decode(message["data"], "udp_send", connection.id, MAX_DATAGRAM, allow_empty=True)
        if ("remoteAddress" in message) != ("remotePort" in message):
            raise ProtocolError(Code.SCHEMA_VIOLATION, "udp_send: remoteAddress and remotePort go together", connection.id)
        if "remoteAddress" not in message:
            connection.send(data, None)
            return
        host, port = message["remoteAddress"], message["remotePort"]
        if not self._store.allows(self.origins[connection.id], "udp", host, port):
            log.info("denied %s -> udp send to %s:%s (no grant)", self.origins[connection.id], host, port)
            await connection.refuse_send(f"no grant for {host}:{port}")
            return
        connection.send(data, (host, port, message.get("dnsQueryType")))

    async def _udp_read(self, connection: UdpConnection, message: dict[str, Any]) -> None:
        connection.grant(message["datagrams"])

    async def _membership(self, connection: UdpConnection, message: dict[str, Any]) -> None:
        join = message["type"] == "join"
        req, group_text, source_text = message["req"], message["groupAddress"], message.get("sourceAddress")

        async def failed(name: str, text: str) -> None:
            await self._emit({"type": "request_failed", "id": connection.id, "req": req, "name": name, "message": text})

        group = _ip_literal(group_text, f"{message['type']}: groupAddress", connection.id)
        if not group.is_multicast:
            await failed("TypeError", "Not a multicast group address.")
            return
        if source_text is not None:
            source = _ip_literal(source_text, f"{message['type']}: sourceAddress", connection.id)
            if source.version != group.version or source.is_multicast or source.is_loopback or source.is_unspecified:
                await failed("TypeError", "Not a valid source address for this group.")
                return
        if join and not self._store.allows(self.origins[connection.id], "multicast", str(group), 0):
            log.info("denied %s -> join %s (no grant)", self.origins[connection.id], group)
            await failed("NotAllowedError", PAGE_MESSAGE[Code.NOT_ALLOWED])
            return
        try:
            connection.membership(join, str(group), source_text)
        except OSError as exc:
            log.warning("udp socket %d: %s %s: %s", connection.id, message["type"], group, exc)
            await failed("NetworkError", PAGE_MESSAGE[Code.NETWORK_ERROR])
            return
        await self._emit({"type": "done", "id": connection.id, "req": req})

    async def _accept(self, connection: TcpListener, message: dict[str, Any]) -> None:
        socket_id = message["socketId"]
        if self._id_taken(socket_id):
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} was used before", connection.id)
        connection.grant(socket_id)
        if socket_id in connection.state.accept_ids:
            self._reserved[socket_id] = connection.id

    # -- bookkeeping ------------------------------------------------------------------------------

    def _gone(self, socket_id: int) -> None:
        connection = self.sockets.pop(socket_id, None)
        if connection is None:
            return
        self.origins.pop(socket_id, None)
        self._mark_ended(socket_id)
        if isinstance(connection, TcpListener):
            for reserved in connection.state.accept_ids:
                self._reserved.pop(reserved, None)
                self._mark_ended(reserved)

    def _mark_ended(self, socket_id: int) -> None:
        self._ended[socket_id] = None
        while len(self._ended) > RECENTLY_ENDED:
            self._ended.popitem(last=False)

    def close_all(self) -> None:
        for connection in list(self.sockets.values()):
            connection.release()
