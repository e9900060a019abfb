"""One native messaging session: the handshake, and routing each message by its kind to its
handler. The parts it wires together each hold one role: the table of the session's sockets
(table.py), the admission path every socket and destination goes through (admission.py),
asking the user (prompts.py), building sockets (factory.py), opening them (opening.py), a UDP
socket's decided requests (udp_requests.py) and the options page's requests (options_page.py).

Every inbound message is checked against its schema before anything looks at it. A fault in
one message is answered with an error carrying a stable code, and the session goes on serving
its other sockets.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from .. import PROTOCOL_VERSION, __version__
from ..protocol.errors import Code, ProtocolError
from ..protocol.framing import Event, FrameError
from ..protocol.validation import check_inbound
from ..protocol.wire import MAX_CHUNK, decode_data, limits
from ..sockets.connection import Connection
from ..sockets.listener import TcpListener
from ..sockets.server_certs import ServerCertificates
from ..sockets.tcp import TcpConnection
from ..sockets.udp import UdpConnection
from ..trust.consent import ConsentBroker
from ..trust.decision import Allow, Request
from ..trust.permissions import PermissionStore
from ..trust.policy import PolicyFile
from . import options_page
from .admission import Admission
from .factory import SocketFactory
from .opening import Opening
from .private_log import PRIVATE
from .prompts import Prompts
from .table import Emit, SocketTable
from .udp_requests import UdpRequests

log = logging.getLogger(__name__)

Handler = Callable[[Any, dict[str, Any]], Awaitable[None]]


class Session:
    def __init__(
        self, emit: Emit, store: PermissionStore, policy: PolicyFile | None = None, consent: ConsentBroker | None = None,
        certificates: ServerCertificates | None = None,
    ) -> None:
        self._emit = emit
        self._store = store
        self.table = SocketTable(emit)
        self.prompts = Prompts(self.table, emit, consent, lambda *args, **kwargs: self.admission.settle(*args, **kwargs),
                               lambda: self.admission.private_generation)
        self.admission = Admission(self.table, store, policy, self.prompts.ask)
        self.factory = SocketFactory(
            self.table, self.admission, self.prompts, certificates or ServerCertificates(store.path.parent / "server-certificates"),  # beside the store
        )
        self._opening = Opening(self.table, self.admission, self.prompts, self.factory)
        self._udp = UdpRequests(self.table, self.admission)
        self.bulk = self.factory.bulk
        self.sockets = self.table.sockets
        self.requesters = self.table.requesters
        self.greeted = False
        # Messages for the session as a whole, before any socket id is looked at.
        self._session_handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "ping": self._ping,
            "grants_list": self._grants_request,
            "grants_revoke": self._grants_request,
            "private_ended": self._private_ended,
            "tcp_open": self._opening.open,
            "udp_open": self._opening.open,
            "tcp_listen": self._opening.open,
            "consent": self.prompts.answer,
        }
        # Messages for one open socket: the kinds of socket each is for, and its handler.
        self._handlers: dict[str, tuple[type[Connection] | tuple[type[Connection], ...], Handler]] = {
            "send": (TcpConnection, self._send),
            "read": (TcpConnection, self._read),
            "shutdown": ((TcpConnection, UdpConnection), self._shutdown),
            "cancel": (Connection, self._cancel),
            "release": (Connection, self._release),
            "udp_send": (UdpConnection, self._udp.send),
            "udp_read": (UdpConnection, self._udp_read),
            "join": (UdpConnection, self._udp.membership),
            "leave": (UdpConnection, self._udp.membership),
            "accept": (TcpListener, self._accept),
            "start_tls": (TcpConnection, self._start_tls),
            "bulk_declined": (TcpConnection, self._bulk_declined),
        }

    def from_private_window(self, event: Event) -> bool:
        """Whether a message comes from a private window (read before it is validated, so it
        takes nothing for granted): an open says so itself, anything else by its socket."""
        body = getattr(event, "body", None)
        if not isinstance(body, dict):
            return False
        if body.get("incognito") is True:
            return True
        socket_id = body.get("id")
        if not isinstance(socket_id, int) or isinstance(socket_id, bool):
            return False
        requester = self.requesters.get(socket_id)
        if requester is None and (pending := self.table.pending.get(socket_id)) is not None:
            requester = pending.message
        return bool(requester and requester.get("incognito") is True)

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
        if kind in self._session_handlers:
            await self._session_handlers[kind](message)
            return
        socket_id = message["id"]
        if socket_id in self.table.pending and socket_id not in self.sockets:
            if kind != "release":
                raise ProtocolError(Code.OUT_OF_ORDER, f"{kind} while the user is being asked", socket_id)
            await self.prompts.stop_asking(socket_id, allowed=None)
            return
        if socket_id in self.table.deciding:
            if kind != "release":
                raise ProtocolError(Code.OUT_OF_ORDER, f"{kind} before the socket opened", socket_id)
            self.table.mark_ended(socket_id)  # the decision sees it and opens nothing
            return
        connection = self.sockets.get(socket_id)
        if connection is None:
            if socket_id in self.table.ended:
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
        # The limits the host enforces, so the extension uses exactly these (docs/PROTOCOL.md).
        await self._emit({"type": "hello", "version": PROTOCOL_VERSION, "host": f"direct-sockets {__version__}", "limits": limits()})

    async def _ping(self, message: dict[str, Any]) -> None:
        await self._emit({"type": "pong", **({"seq": message["seq"]} if "seq" in message else {})})

    async def _grants_request(self, message: dict[str, Any]) -> None:
        await options_page.grants_request(self._store, self._emit, message)

    # -- per-socket messages ----------------------------------------------------------------------

    async def _send(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        connection.send(decode_data(message["data"], "send", connection.id, MAX_CHUNK, allow_empty=False))

    async def _read(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        connection.credit(message["bytes"])

    async def _shutdown(self, connection: TcpConnection | UdpConnection, message: dict[str, Any]) -> None:
        if isinstance(connection, TcpConnection):
            connection.shutdown(bool(message.get("abort")))
        else:
            connection.shutdown()

    async def _cancel(self, connection: Any, message: dict[str, Any]) -> None:
        await connection.cancel_reading()

    async def _release(self, connection: Connection, message: dict[str, Any]) -> None:
        connection.release()

    async def _udp_read(self, connection: UdpConnection, message: dict[str, Any]) -> None:
        connection.credit(message["datagrams"])

    async def _accept(self, connection: TcpListener, message: dict[str, Any]) -> None:
        socket_id = message["socketId"]
        self.table.check_unused(socket_id, by=connection.id)
        self.table.check_room(connection.id)  # an accepted connection is a socket like any other
        connection.credit(socket_id)
        if socket_id in connection.state.accept_ids:
            self.table.reserved[socket_id] = connection.id

    async def _bulk_declined(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        connection.decline_bulk(message.get("reason", "declined by the extension"))

    async def _start_tls(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        new_id = message["newId"]
        self.table.check_unused(new_id, by=connection.id)
        why_not = connection.may_start_tls()
        if why_not is not None:
            raise ProtocolError(Code.OUT_OF_ORDER, f"start_tls: {why_not}", connection.id)
        requester = self.requesters[connection.id]
        assert connection.destination is not None
        host, port = connection.destination
        # The policy may have changed since the socket opened: the core looks again at the
        # address it is connected to.
        request = Request(requester["origin"], requester["incognito"], "start-tls", host, port, self.table.checked.get(connection.id))
        decision = self.admission.first(request)
        if not isinstance(decision, Allow):
            await connection.fail(f"start_tls: {getattr(decision, 'reason', decision)}", Code.NOT_ALLOWED, "NotAllowedError")
            return
        self.factory.upgrade(connection, new_id, message["options"], decision.addresses)

    # -- the session as a whole -------------------------------------------------------------------

    async def _private_ended(self, _message: dict[str, Any]) -> None:
        """The last private window closed (the extension noticed): the private session's grants,
        certificates and prompt counts go, and what private windows still had open or asked is
        ended, so "until private windows close" means that (questionnaire 2.14)."""
        self.admission.private_grants.clear()
        self.admission.private_generation += 1
        self.factory.private_certificates.clear()
        marked = PRIVATE.set(True)  # ending them logs their sockets: without sites or destinations
        try:
            await self.prompts.withdraw_private()
            for socket_id, requester in list(self.requesters.items()):
                connection = self.sockets.get(socket_id)
                if connection is not None and requester.get("incognito") is True:
                    await connection.fail("the private windows closed", Code.NOT_ALLOWED, "NotAllowedError")
        finally:
            PRIVATE.reset(marked)
        self.prompts.consent.forget_private()
        log.info("the private windows closed: their grants, certificates and sockets are gone")

    def close_all(self) -> None:
        self.prompts.close_all()
        self.table.close_all()
