"""One native messaging session: the handshake, the policy check on every socket a page asks
for, and routing each message to its socket.

Every inbound message is checked against its schema before anything looks at it. A fault in
one message is answered with an error carrying a stable code, and the session goes on serving
its other sockets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from .. import PROTOCOL_VERSION, __version__
from . import limits
from ..sockets import tasks
from ..sockets.connection import Connection, family_for
from ..trust.consent import PROMPT_TIMEOUT_SECONDS, ConsentBroker, RateLimiter, service_name
from ..trust.decision import REMOTE_KINDS, UNKNOWN, Allow, Ask, Consent, Facts, Refuse, Request, Resolve, decide, grant_kind, peer_blocked
from ..trust.destinations import InvalidDestination, canonical_ip, is_ip, normalize_host, normalize_origin
from ..protocol.errors import PAGE_MESSAGE, Code, ProtocolError
from ..protocol.framing import Event, FrameError
from ..protocol.listen_state import ListenState
from ..sockets.listener import TcpListener
from ..trust.permissions import Grant, PermissionStore, StoreDamaged
from .private_log import PRIVATE
from ..trust.policy import PolicyFile
from ..sockets.bulk import BulkServer
from ..sockets.server_certs import PrivateCertificates, ServedCertificate, ServerCertificates
from ..sockets.tcp import BULK_CHUNK, TcpConnection
from ..protocol.tcp_state import TcpSocketState
from ..sockets.tls import ClientTls, describe, spki_sha256
from ..sockets.udp import MAX_DATAGRAM, UdpConnection
from ..protocol.udp_state import UdpMode, UdpSocketState
from ..protocol.validation import check_inbound

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]

MAX_DATA_CHUNK = 512 * 1024  # bytes of TCP data in one message, both ways (see PROTOCOL.md)
SEND_WINDOW = 1024 * 1024  # unacknowledged TCP bytes a page may have in flight per socket
BULK_SEND_WINDOW = 4 * 1024 * 1024  # the same, for a socket whose stream is on the bulk path
UDP_SEND_WINDOW = 32  # unacknowledged datagrams a page may have in flight per socket
# Interim (the extension's branch, until the session's protocol/wire.py lands): the limits the
# extension's page API takes from the hello, the values it used to copy by hand.
HELLO_LIMITS = {
    "maxChunk": MAX_DATA_CHUNK, "bulkChunk": BULK_CHUNK, "sendWindow": SEND_WINDOW, "receiveWindow": 1024 * 1024,
    "bulkReceiveWindow": 4 * 1024 * 1024, "maxBulkSendWindow": 16 * 1024 * 1024, "udpSendWindow": UDP_SEND_WINDOW,
    "udpReceiveWindow": 64, "maxDatagram": 65507, "acceptWindow": 4,
}
MAX_SOCKETS = limits.socket_cap()  # under the descriptor limit, with headroom (limits.py)
RESOLVE_TIMEOUT = 10.0
MAX_QUESTIONS_PER_SOCKET = 32  # what an open socket may have waiting for the user (sends, joins)
MAX_WAITING_SEND_BYTES = 1024 * 1024  # bytes of a bound socket's datagrams waiting for the user
RECENTLY_ENDED = 4096  # ids whose late messages are dropped quietly
BOUND_UDP_MIN_PORT = 1024  # the draft: bound UDP only on 0 or 1024 and above
LISTEN_MIN_PORT = 32768  # the draft: TCP listening only on 0 or 32768 and above


def _ip_literal(text: str, what: str, socket_id: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: not an IP address: {text!r}", socket_id) from exc


def _addresses(infos: list[Any]) -> list[str]:
    return list(dict.fromkeys(_canonical(info[4][0]) for info in infos))


def _canonical(address: str) -> str:
    """An address as the decision core checks it (an IPv4-mapped address is its IPv4 one)."""
    text, _, zone = address.partition("%")
    return str(canonical_ip(text)) + (f"%{zone}" if zone else "")


def _prompt_kind(kind: str) -> str:
    return grant_kind(kind) if kind == "udp-send" else kind


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


@dataclass
class Outcome:
    """How one request ends, whatever the decision core says: `allow` with the checked
    addresses (getaddrinfo entries, [] for local kinds), `refuse`, or `fail` when the one name
    lookup failed; `ended` says the request's socket went away meanwhile."""

    allow: Callable[[list[Any], Allow], Awaitable[None]]
    refuse: Callable[[], Awaitable[None]]
    fail: Callable[[str], Awaitable[None]]
    ended: Callable[[], bool]


@dataclass
class PendingOpen:
    """A request waiting for the user's answer: a socket to open (its id is taken; only
    `release` may name it), or something an open socket wants next (`action`)."""

    message: dict[str, Any]  # the open, or the requester of an open socket
    kind: str
    host: str
    port: int
    tab: tuple[int, bool]
    scope: str = "unknown"
    timer: asyncio.TimerHandle | None = None
    shown: bool = False
    action: Outcome | None = None  # set for an open socket's question
    details: dict[str, Any] | None = None  # more for the prompt (a certificate and why)
    pin: str = ""  # kind certificate: the key a grant would trust
    request: Request | None = None  # what the decision core was asked
    ask: Ask | None = None  # what it said to show
    outcome: Outcome | None = None


def _site(requester: dict[str, Any]) -> tuple[str, bool]:
    """What the consent budgets count by: normal and private windows of an origin apart."""
    return (requester["origin"], requester["incognito"] is True)


def prompt_timeout() -> float:
    try:
        return min(600.0, max(1.0, float(os.environ.get("DIRECT_SOCKETS_PROMPT_TIMEOUT", PROMPT_TIMEOUT_SECONDS))))
    except ValueError:
        return PROMPT_TIMEOUT_SECONDS


class Session:
    def __init__(
        self, emit: Emit, store: PermissionStore, policy: PolicyFile | None = None, consent: ConsentBroker | None = None,
        certificates: ServerCertificates | None = None,
    ) -> None:
        self._emit = emit
        self._store = store
        self.bulk = BulkServer()
        self._certificates = certificates or ServerCertificates(store.path.parent / "server-certificates")  # beside the store
        self._policy = policy
        self._consent = consent or ConsentBroker(timeout_seconds=prompt_timeout())
        self._attempts = RateLimiter()
        # Grants made in private windows: kept here, in memory, never written (questionnaire 2.14).
        self._private_grants: set[Grant] = set()
        # And the private session's TLS server certificates: made in memory, never written.
        self._private_certificates = PrivateCertificates()
        # The addresses the decision core allowed each socket: STARTTLS and a certificate
        # prompt are decided on the address the socket is connected to.
        self._checked: dict[int, tuple[str, ...]] = {}
        self._waiting_sends: dict[int, list[int]] = {}  # per bound socket: datagrams, bytes waiting
        self._pending: dict[int, PendingOpen] = {}
        self._deciding: set[int] = set()  # opens being decided (a policy check, a name lookup)
        self._actions: dict[int, collections.deque[PendingOpen]] = {}  # per socket, waiting to ask
        # Who asked for each socket (origin, tab, frame, private window), as the extension
        # stamped it on the open; an accepted connection inherits its listener's.
        self.requesters: dict[int, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.greeted = False
        self.sockets: dict[int, Connection] = {}
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
        if requester is None and (pending := self._pending.get(socket_id)) is not None:
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
        if kind == "ping":
            await self._emit({"type": "pong", **({"seq": message["seq"]} if "seq" in message else {})})
            return
        if kind in ("grants_list", "grants_revoke"):
            await self._grants_request(message)
            return
        if kind == "private_ended":
            await self._private_ended()
            return
        openers = {"tcp_open": self._open_tcp, "udp_open": self._open_udp, "tcp_listen": self._listen}
        if kind in openers:
            await self._open(message, openers[kind])
            return
        socket_id = message["id"]
        if kind == "consent":
            await self._answer(message)
            return
        if socket_id in self._pending and socket_id not in self.sockets:
            if kind != "release":
                raise ProtocolError(Code.OUT_OF_ORDER, f"{kind} while the user is being asked", socket_id)
            await self._stop_asking(socket_id, allowed=None)
            return
        if socket_id in self._deciding:
            if kind != "release":
                raise ProtocolError(Code.OUT_OF_ORDER, f"{kind} before the socket opened", socket_id)
            self._mark_ended(socket_id)  # the decision sees it and opens nothing
            return
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
            {"type": "hello", "version": PROTOCOL_VERSION, "host": f"direct-sockets {__version__}", "maxChunk": MAX_DATA_CHUNK, "sendWindow": SEND_WINDOW, "limits": HELLO_LIMITS}
        )

    # -- opening: policy first, before any name is resolved or packet sent ----------------------

    def _id_taken(self, socket_id: int) -> bool:
        return (
            socket_id in self.sockets or socket_id in self._ended or socket_id in self._reserved
            or socket_id in self._pending or socket_id in self._deciding
        )

    async def _open(self, message: dict[str, Any], opener: Callable[[dict[str, Any], list[Any]], Connection]) -> None:
        socket_id = message["id"]
        if self._id_taken(socket_id):
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} was used before")
        if len(self.sockets) + len(self._pending) + len(self._deciding) >= MAX_SOCKETS:
            raise ProtocolError(Code.TOO_MANY_SOCKETS, f"more than {MAX_SOCKETS} sockets", socket_id)
        destination = self._destination(message)
        if destination is None:
            await self._refuse(socket_id)
            return
        if not self._attempts.allow(_site(message)):
            log.info("refused %s -> %s: too many socket requests", message["origin"], destination)
            await self._refuse(socket_id)
            return
        # Deciding may mean looking a name up: not on the path every other message waits on.
        self._deciding.add(socket_id)
        self._spawn(self._decide(message, opener, destination))

    async def _decide(self, message: dict[str, Any], opener: Callable[[dict[str, Any], list[Any]], Connection], destination: tuple[str, str, int]) -> None:
        socket_id = message["id"]
        kind, host, port = destination
        version = {"ipv4": 4, "ipv6": 6}.get(message.get("options", {}).get("dnsQueryType") or "", 0)
        request = Request(message["origin"], message["incognito"], kind, host, port, ip_version=version)  # type: ignore[arg-type]
        try:
            await self._settle(socket_id, message, request, self._open_outcome(message, opener))
        finally:
            self._deciding.discard(socket_id)

    def _open_outcome(self, message: dict[str, Any], opener: Callable[[dict[str, Any], list[Any]], Connection]) -> Outcome:
        """How an open ends: the socket opened with the checked addresses, or refused."""
        socket_id = message["id"]

        async def allow(infos: list[Any], decision: Allow) -> None:
            if decision.addresses and message["type"] != "tcp_open" and message.get("mode") != "connected":
                # A local address in whatever spelling the page used: bind the one checked.
                self._start({**message, "localAddress": decision.addresses[0]}, opener, infos)
            else:
                self._start(message, opener, infos)
            self._checked[socket_id] = decision.addresses

        async def refuse() -> None:
            await self._refuse(socket_id)

        async def fail(detail: str) -> None:
            await self._network_error(socket_id, detail)

        return Outcome(allow, refuse, fail, lambda: socket_id in self._ended)

    async def _settle(self, socket_id: int, requester: dict[str, Any], request: Request, outcome: Outcome, details: dict[str, Any] | None = None) -> None:
        """Runs the decision core (`decision.py`) for one request until it allows, refuses or
        asks; looks a name up only when the core says so, once, and acts only on the
        addresses the core checked."""
        infos: list[Any] = []
        decision = decide(request, self._facts(request))
        if isinstance(decision, Resolve):
            looked_up = await self._lookup(decision.host, request, requester)
            if outcome.ended():
                return  # released meanwhile
            if looked_up is None:
                await outcome.fail(f"resolving {decision.host} failed")
                return
            infos = looked_up
            canonical = tuple(dict.fromkeys(info[3] for info in infos if info[3]))
            request = replace(request, addresses=tuple(_addresses(infos)), canonical=canonical)
            decision = decide(request, self._facts(request))
        if isinstance(decision, Refuse) or isinstance(decision, Resolve):
            log.info("refused %s -> %s %s:%s: %s", request.origin, request.kind, request.host, request.port,
                     decision.reason if isinstance(decision, Refuse) else "asked to resolve twice")
            await outcome.refuse()
            return
        if isinstance(decision, Ask):
            if self._consent.in_cooldown((request.origin, request.incognito)):
                log.info("refused %s -> %s %s:%s without asking: refused too often lately", request.origin, request.kind, request.host, request.port)
                await outcome.refuse()
                return
            if request.consent is not None:
                log.warning("%s resolves to %s (%s): asking again", decision.host, list(decision.addresses), decision.scope)
            await self._ask(socket_id, requester, replace(request, host=decision.host), decision, outcome, details)
            return
        if decision.grant is not None:
            if decision.remember != "always":
                self._private_grants.add(decision.grant)
            else:
                try:
                    self._store.grant(decision.grant)
                except (OSError, ValueError) as exc:  # allowed this time; the user can see why it is not remembered
                    log.error("could not remember %s: %s", decision.grant, exc)
        await outcome.allow(self._sockaddrs(decision, infos, request, requester), decision)

    def _facts(self, request: Request) -> Facts:
        """The policy in force and the user's grants for the request's origin (private-window
        ones for private windows only)."""
        policy = self._policy.current() if self._policy is not None else None
        try:
            grants = [g for g in self._store.load() if g.origin == normalize_origin(request.origin)]
        except (StoreDamaged, OSError, InvalidDestination):
            grants = []  # a damaged store grants nothing
        if request.incognito:
            grants += list(self._private_grants)
        return Facts(policy, tuple(grants))

    async def _lookup(self, host: str, request: Request, requester: dict[str, Any]) -> list[Any] | None:
        """The one name lookup for a request the core allowed to resolve; None if it failed."""
        flags = socket.AI_CANONNAME  # the name the resolver really answered for: checked too
        if request.kind == "udp-send":
            family = self._send_family(requester)
            if family == socket.AF_INET6:
                flags |= socket.AI_V4MAPPED  # a dual-stack socket reaches IPv4 as mapped addresses
        else:
            family = family_for(requester.get("options", {}).get("dnsQueryType"))
        try:
            infos = await asyncio.wait_for(
                self._getaddrinfo(host, request.port, family=family, type=socket.SOCK_STREAM if request.kind == "tcp" else socket.SOCK_DGRAM, flags=flags),
                timeout=RESOLVE_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("resolving %s: %s", host, exc or "timed out")
            return None
        return list(infos) or None

    async def _getaddrinfo(self, host: str, port: int, *, family: int, type: int, flags: int) -> list[Any]:
        return await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=type, flags=flags)

    def _send_family(self, requester: dict[str, Any]) -> int:
        """The family a bound socket's datagrams go out in: the page's dnsQueryType, which
        must then be the socket's own."""
        return int(requester.get("family", socket.AF_UNSPEC))

    def _sockaddrs(self, decision: Allow, infos: list[Any], request: Request, requester: dict[str, Any]) -> list[Any]:
        """getaddrinfo-style entries for exactly the addresses the core allowed, in the order it
        gave them: those of the lookup, or made from the literal without any lookup."""
        if request.kind not in REMOTE_KINDS:
            return []
        socktype = socket.SOCK_STREAM if request.kind == "tcp" else socket.SOCK_DGRAM
        wanted = self._send_family(requester) if request.kind == "udp-send" else family_for(requester.get("options", {}).get("dnsQueryType"))
        found = {_canonical(info[4][0]): info for info in infos}
        result = []
        for address in decision.addresses:
            info = found.get(address)
            if info is None:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                if wanted == socket.AF_INET6 and family == socket.AF_INET and request.kind == "udp-send":
                    info = (socket.AF_INET6, socktype, 0, "", (f"::ffff:{address}", request.port, 0, 0))
                else:
                    info = socket.getaddrinfo(address, request.port, family, socktype, 0, socket.AI_NUMERICHOST)[0]
            if wanted in (socket.AF_UNSPEC, info[0]):
                result.append(info)
        return result

    def _destination(self, message: dict[str, Any]) -> tuple[str, str, int] | None:
        """What a grant must cover for this socket; None when the draft forbids it outright."""
        socket_id = message["id"]
        if message["type"] == "tcp_open":
            return "tcp", message["remoteAddress"], message["remotePort"]
        if message["type"] == "udp_open":
            if message["mode"] == "connected":
                return "udp", message["remoteAddress"], message["remotePort"]
            _ip_literal(message["localAddress"], "udp_open: localAddress", socket_id)
            port = message.get("localPort", 0)
            return None if 0 < port < BOUND_UDP_MIN_PORT else ("udp-bind", message["localAddress"], port)
        _ip_literal(message["localAddress"], "tcp_listen: localAddress", socket_id)
        port = message.get("localPort", 0)
        return None if 0 < port < LISTEN_MIN_PORT else ("tcp-listen", message["localAddress"], port)

    async def _refuse(self, socket_id: int) -> None:
        # A page learns nothing about a destination it may not reach: one message for every
        # refusal, and the network untouched (security-model.md).
        self._mark_ended(socket_id)
        await self._emit(
            {"type": "error", "id": socket_id, "code": int(Code.NOT_ALLOWED), "name": "NotAllowedError", "message": PAGE_MESSAGE[Code.NOT_ALLOWED]}
        )

    async def _network_error(self, socket_id: int, detail: str) -> None:
        log.warning("socket %d failed before opening: %s", socket_id, detail)
        self._mark_ended(socket_id)
        await self._emit(
            {"type": "error", "id": socket_id, "code": int(Code.NETWORK_ERROR), "name": "NetworkError", "message": PAGE_MESSAGE[Code.NETWORK_ERROR], "detail": detail}
        )

    def _start(self, message: dict[str, Any], opener: Callable[[dict[str, Any], list[Any]], Connection], infos: list[Any]) -> None:
        connection = opener(message, infos)
        self.sockets[message["id"]] = connection
        self.requesters[message["id"]] = {k: message[k] for k in ("id", "origin", "tabId", "frameId", "incognito")}
        if message["type"] == "udp_open" and message["mode"] == "bound":
            address = ipaddress.ip_address(message["localAddress"])
            self.requesters[message["id"]]["family"] = int(socket.AF_INET6 if address.version == 6 else socket.AF_INET)

    def _opener_for(self, message: dict[str, Any]) -> Callable[[dict[str, Any], list[Any]], Connection]:
        return {"tcp_open": self._open_tcp, "udp_open": self._open_udp, "tcp_listen": self._listen}[message["type"]]

    # -- asking the user ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        # A decision or a prompt that raises is logged with its traceback (tasks.py), and the
        # socket it worked for fails with the generic NetworkError rather than wait forever.
        socket_id = tasks.socket_id_of(coro)

        def crashed(exc: BaseException) -> None:
            connection = self.sockets.get(socket_id) if socket_id is not None else None
            if connection is not None:
                report = connection.fail(f"internal error: {exc!r}", Code.INTERNAL_ERROR)
            elif socket_id is not None and socket_id not in self._ended:
                self._deciding.discard(socket_id)
                report = self._network_error(socket_id, f"internal error: {exc!r}")
            else:
                report = self._emit({"type": "error", "code": int(Code.INTERNAL_ERROR), "message": "internal error"})
            tasks.spawn(self._tasks, report, "reporting an internal error")

        tasks.spawn(self._tasks, coro, f"the session (socket {socket_id})", crashed)

    async def _ask(self, socket_id: int, requester: dict[str, Any], request: Request, ask: Ask, outcome: Outcome, details: dict[str, Any] | None = None) -> None:
        """Queues the prompt the core asked for (one per tab at a time; one per socket at a
        time for what an open socket asks next)."""
        question = socket_id in self.sockets  # an open socket's, not an open's
        pending = PendingOpen(dict(requester), request.kind, ask.host, request.port, (requester["tabId"], requester["incognito"]),
                              scope=ask.scope, action=outcome if question else None, details=details, pin=request.pin,
                              request=request, ask=ask, outcome=outcome)
        if question:  # one at a time per socket
            if socket_id in self._pending or self._actions.get(socket_id):
                waiting = self._actions.setdefault(socket_id, collections.deque())
                if len(waiting) >= MAX_QUESTIONS_PER_SOCKET:
                    await outcome.refuse()
                    return
                waiting.append(pending)
                return
        await self._ask_action(pending)

    async def _show_prompt(self, socket_id: int) -> None:
        pending = self._pending.get(socket_id)
        if pending is None or pending.shown:
            return
        pending.shown = True
        message = pending.message
        ask = pending.ask
        assert ask is not None
        timeout = self._consent.timeout_seconds
        pending.timer = asyncio.get_running_loop().call_later(timeout, lambda: self._spawn(self._stop_asking(socket_id, allowed=False)))
        prompt: dict[str, Any] = {
            "type": "prompt", "id": socket_id, "origin": message["origin"], "tabId": message["tabId"],
            "frameId": message["frameId"], "incognito": message["incognito"], "kind": _prompt_kind(pending.kind),
            # A name not looked up yet has no addresses and the scope 'unknown': it is looked
            # up only once the user allows, and asked about again if it is then on the local
            # network or this device (docs/PROTOCOL.md).
            "host": ask.host, "port": pending.port, "addresses": list(ask.addresses), "scope": ask.scope,
            # An https page opening a socket without TLS is downgrading (questionnaire 2.16).
            "plaintext": message["origin"].startswith("https:") and pending.kind != "certificate" and not self._secured(message),
            "offerAlways": not message["incognito"], "timeoutSeconds": timeout,
        }
        if (service := service_name(pending.port)) is not None:
            prompt["service"] = service
        if pending.details:
            prompt.update(pending.details)
        log.info("asking the user: %s -> %s %s:%s (%s)", message["origin"], pending.kind, ask.host, pending.port, list(ask.addresses))
        await self._emit(prompt)

    async def _answer(self, message: dict[str, Any]) -> None:
        socket_id, decision = message["id"], message["decision"]
        pending = self._pending.get(socket_id)
        if pending is None or not pending.shown or pending.timer is None:
            if socket_id in self._ended:
                return  # the answer crossed a timeout or a release
            raise ProtocolError(Code.UNKNOWN_SOCKET, f"consent for socket {socket_id}, which is not waiting for one")
        origin = pending.message["origin"]
        if decision == "deny":
            log.info("the user refused %s -> %s %s:%s", origin, pending.kind, pending.host, pending.port)
            await self._stop_asking(socket_id, allowed=False, notify=False)
            return
        incognito = pending.message["incognito"]
        if (decision == "always" and incognito) or (decision == "session" and not incognito):
            raise ProtocolError(Code.SCHEMA_VIOLATION, f"consent: {decision!r} is not offered {'in' if incognito else 'outside'} private windows")
        assert pending.request is not None and pending.ask is not None and pending.outcome is not None
        request = pending.request
        remember = "" if decision == "once" else decision
        consent = Consent(pending.ask.scope, remember)  # type: ignore[arg-type]
        request = replace(request, consent=consent, addresses=pending.ask.addresses if pending.ask.addresses else None)
        if "host" in message and message["host"] != pending.host:
            host = message["host"]
            if pending.kind == "certificate":
                raise ProtocolError(Code.SCHEMA_VIOLATION, "consent: a certificate is trusted for the host that presented it")
            if pending.kind in ("udp-bind", "tcp-listen") and not is_ip(host):
                raise ProtocolError(Code.SCHEMA_VIOLATION, "consent: a local address must be an IP address")
            if pending.kind == "multicast" and not (is_ip(host) and ipaddress.ip_address(host).is_multicast):
                raise ProtocolError(Code.SCHEMA_VIOLATION, "consent: a group must be a multicast address")
            try:
                normalize_host(host)
            except InvalidDestination as exc:
                raise ProtocolError(Code.SCHEMA_VIOLATION, f"consent: {exc}") from exc
            if pending.action is None:
                address_field = "localAddress" if pending.kind in ("udp-bind", "tcp-listen") else "remoteAddress"
                pending.message[address_field] = host
            # The user's own address: a literal is what they typed; a name is looked up now,
            # and asked about again if it is on the local network or this device.
            request = replace(request, host=host, addresses=None, consent=Consent(UNKNOWN, remember))  # type: ignore[arg-type]
            log.info("the user corrected %s to %s", pending.host, host)
        log.info("the user allowed (%s) %s -> %s %s:%s", decision, origin, pending.kind, request.host, pending.port)
        await self._stop_asking(socket_id, allowed=True, notify=False)
        if pending.action is None:
            self._deciding.add(socket_id)
        self._spawn(self._after_consent(socket_id, pending, request))

    async def _after_consent(self, socket_id: int, pending: PendingOpen, request: Request) -> None:
        """The user said yes: the core decides again with their answer (and looks the name up
        now, if it was not before)."""
        assert pending.outcome is not None
        try:
            await self._settle(socket_id, pending.message, request, pending.outcome, pending.details)
        finally:
            if pending.action is None:
                self._deciding.discard(socket_id)

    async def _stop_asking(self, socket_id: int, allowed: bool | None, notify: bool = True) -> None:
        """Ends a prompt: answered, timed out (allowed=False) or released (allowed=None)."""
        pending = self._pending.pop(socket_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self._consent.answered(_site(pending.message), allowed)  # a withdrawn one (None) counts toward the budget
        following = self._consent.finished(pending.tab, socket_id)
        if notify and pending.shown:
            await self._emit({"type": "prompt_closed", "id": socket_id})
        if pending.action is not None:
            if allowed is False:
                await pending.action.refuse()
            self._next_action(socket_id)
        elif allowed is False:
            await self._refuse(socket_id)
        elif allowed is None:
            self._mark_ended(socket_id)
        # Requests that waited their turn in the tab are refused unasked if their site has
        # meanwhile been refused too often.
        while following is not None and self._consent.in_cooldown(_site(self._pending[following].message)):
            refused = self._pending.pop(following)
            following = self._consent.finished(refused.tab, following)
            if refused.action is not None:
                await refused.action.refuse()
                self._next_action(refused.message["id"])
            else:
                await self._refuse(refused.message["id"])
        if following is not None:
            self._spawn(self._show_prompt(following))

    def _open_tcp(self, message: dict[str, Any], infos: list[Any]) -> Connection:
        host, port = message["remoteAddress"], message["remotePort"]
        options = message["options"]
        bulk = bool(message.get("bulk"))
        # A socket that may take the bulk path gets its larger send window from the start: the
        # page uses it only once its WebSocket attached (docs/BULK.md).
        window = BULK_SEND_WINDOW if bulk else SEND_WINDOW
        connection = TcpConnection(
            TcpSocketState(message["id"], window, MAX_DATA_CHUNK), self._emit, self._gone, self.bulk if bulk else None,
            bulk_message_size=message.get("bulkMessageSize", BULK_CHUNK),
        )
        log.info("%s (tab %s, frame %s) opens tcp %s:%d", message["origin"], message["tabId"], message["frameId"], host, port)
        tls = None
        if options.get("secureTransport") == "on":
            tls = ClientTls.from_options(host, options, self._trusted_keys(message, host, port))
        connection.start(host, port, options, infos, tls, self._ask_trust)
        return connection

    @staticmethod
    def _secured(message: dict[str, Any]) -> bool:
        return (message.get("options") or message).get("secureTransport") == "on"

    def _trusted_keys(self, requester: dict[str, Any], host: str, port: int) -> tuple[str, ...]:
        """The keys the user trusted for this site at host:port (a device's own certificate)."""
        try:
            origin, host = normalize_origin(requester["origin"]), normalize_host(host)
        except InvalidDestination:
            return ()
        request = Request(origin, requester["incognito"], "certificate", host, port)
        return tuple(g.pin for g in self._facts(request).grants if g.covers(origin, "certificate", host, port))

    async def _ask_trust(self, connection: TcpConnection, der: bytes, reason: str) -> str | None:
        """A server's certificate no authority vouches for: the user may trust it for this site
        (it is their device), seeing its fingerprint. Answers the key pin to connect with."""
        requester = self.requesters.get(connection.id)
        if requester is None:
            return None
        assert connection.destination is not None
        host, port = connection.destination
        pin = spki_sha256(der)
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        async def allow(_infos: list[Any], decision: Allow) -> None:
            if not answer.done():
                answer.set_result(decision.pin)

        async def refuse(_detail: str = "") -> None:
            if not answer.done():
                answer.set_result(None)

        details = {"certificate": describe(der), "reason": reason}
        request = Request(requester["origin"], requester["incognito"], "certificate", host, port, self._checked.get(connection.id), pin=pin)
        await self._settle(connection.id, requester, request, Outcome(allow, refuse, refuse, lambda: connection.id not in self.sockets), details)
        return await answer

    async def _bulk_declined(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        connection.decline_bulk(message.get("reason", "declined by the extension"))

    async def _start_tls(self, connection: TcpConnection, message: dict[str, Any]) -> None:
        new_id = message["newId"]
        if self._id_taken(new_id):
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {new_id} was used before", connection.id)
        why_not = connection.may_start_tls()
        if why_not is not None:
            raise ProtocolError(Code.OUT_OF_ORDER, f"start_tls: {why_not}", connection.id)
        requester = self.requesters[connection.id]
        assert connection.destination is not None
        host, port = connection.destination
        # The policy may have changed since the socket opened: the core looks again at the
        # address it is connected to.
        request = Request(requester["origin"], requester["incognito"], "start-tls", host, port, self._checked.get(connection.id))
        decision = decide(request, self._facts(request))
        if not isinstance(decision, Allow):
            await connection.fail(f"start_tls: {getattr(decision, 'reason', decision)}", Code.NOT_ALLOWED, "NotAllowedError")
            return
        tls = ClientTls.from_options(host, message["options"], self._trusted_keys(requester, host, port))
        upgraded = TcpConnection(TcpSocketState(new_id, SEND_WINDOW, MAX_DATA_CHUNK), self._emit, self._gone)
        self.sockets[new_id] = upgraded
        self.requesters[new_id] = {**requester, "id": new_id}
        self._checked[new_id] = decision.addresses
        log.info("socket %d continues as %d over TLS", connection.id, new_id)
        upgraded.upgrade(connection.hand_over(), connection.destination, connection.description, tls)

    def _peer_check(self, message: dict[str, Any], kind: str) -> Callable[[str, int], bool]:
        """For a listener or bound socket: whether a peer coming in is blocked, by the policy as
        it is when the peer arrives (an administrator's new block holds for open sockets)."""
        origin = message["origin"]

        def blocked(address: str, port: int) -> bool:
            return peer_blocked(self._policy.current() if self._policy is not None else None, origin, kind, address, port)

        return blocked

    def _open_udp(self, message: dict[str, Any], infos: list[Any]) -> Connection:
        connection = UdpConnection(
            UdpSocketState(message["id"], UdpMode(message["mode"]), UDP_SEND_WINDOW), self._emit, self._gone, self._peer_check(message, "udp-bind"),
        )
        connection.start(message, infos)
        return connection

    def _listen(self, message: dict[str, Any], infos: list[Any]) -> Connection:
        requester = {k: message[k] for k in ("origin", "tabId", "frameId", "incognito")}

        def new_connection(socket_id: int) -> TcpConnection:
            connection = TcpConnection(TcpSocketState(socket_id, SEND_WINDOW, MAX_DATA_CHUNK), self._emit, self._gone)
            self._reserved.pop(socket_id, None)
            self.sockets[socket_id] = connection
            self.requesters[socket_id] = {**requester, "id": socket_id}
            return connection

        certificate: ServedCertificate | None = None
        if message.get("secureTransport") == "on":
            try:
                site = normalize_origin(message["origin"])
                # A private window's never touches the disk nor matches the normal window's.
                certificates = self._private_certificates if message["incognito"] else self._certificates
                certificate = certificates.for_site(site)
            except (OSError, ValueError) as exc:
                log.warning("no server certificate for %s: %s", message["origin"], exc)
                listener = TcpListener(ListenState(message["id"]), self._emit, self._gone, new_connection)
                self._spawn(listener.fail(f"making the site's server certificate: {exc}"))
                return listener
        listener = TcpListener(ListenState(message["id"]), self._emit, self._gone, new_connection, certificate, self._peer_check(message, "tcp-listen"))
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
        if not connection.state.can_send(True):
            return  # the writable already failed: the page knows, the datagram is dropped
        socket_id = connection.id
        requester = self.requesters[socket_id]
        waiting = self._waiting_sends.setdefault(socket_id, [0, 0])
        # A datagram waiting for the user (or for its one name lookup) counts against the
        # socket's send window like one on its way to the OS, and its bytes against a cap:
        # a page cannot pile up datagrams in the host's memory by sending where it may not.
        if waiting[0] + connection.state.unacked >= UDP_SEND_WINDOW:
            raise ProtocolError(Code.WINDOW_EXCEEDED, f"more than {UDP_SEND_WINDOW} datagrams unacknowledged (or waiting for the user)", socket_id)
        if waiting[1] + len(data) > MAX_WAITING_SEND_BYTES:
            raise ProtocolError(Code.WINDOW_EXCEEDED, f"more than {MAX_WAITING_SEND_BYTES} bytes of datagrams waiting for the user", socket_id)
        wanted = family_for(message.get("dnsQueryType"))
        if wanted not in (socket.AF_UNSPEC, requester["family"]):
            await connection.send_failed(f"a {socket.AddressFamily(requester['family']).name} socket cannot send to {socket.AddressFamily(wanted).name}")
            return
        # An IPv4 socket reaches IPv4 only; a dual-stack IPv6 one either, unless the page said.
        version = 4 if socket.AF_INET in (wanted, requester["family"]) else 6 if wanted == socket.AF_INET6 else 0
        request = Request(requester["origin"], requester["incognito"], "udp-send", message["remoteAddress"], message["remotePort"], ip_version=version)
        decision = decide(request, self._facts(request))
        if isinstance(decision, Allow):
            # Granted, with nothing to look up: sent now, in the order the page sent it.
            await self._send_to(connection, data, self._sockaddrs(decision, [], request, requester))
            return
        if isinstance(decision, Refuse):
            log.info("refused %s -> udp send to %s:%s: %s", request.origin, request.host, request.port, decision.reason)
            await connection.refuse_send(f"not allowed: {request.host}:{request.port}")
            return
        waiting[0] += 1
        waiting[1] += len(data)
        done = False

        def leave() -> bool:
            nonlocal done
            if done:
                return False
            done = True
            if socket_id in self._waiting_sends:
                waiting[0] -= 1
                waiting[1] -= len(data)
            return socket_id in self.sockets

        async def allow(infos: list[Any], _decision: Allow) -> None:
            if leave():
                try:
                    await self._send_to(connection, data, infos)
                except ProtocolError as exc:
                    await self._fault(exc)

        async def refuse() -> None:
            if leave():
                await connection.refuse_send(f"the user did not allow {request.host}:{request.port}")

        async def fail(detail: str) -> None:
            if leave():
                await connection.send_failed(detail)

        settling = self._settle(socket_id, requester, request, Outcome(allow, refuse, fail, lambda: socket_id not in self.sockets))
        if isinstance(decision, Ask):
            await settling  # queued now, behind this socket's earlier questions, in the page's order
        else:
            self._spawn(settling)  # a name to look up: not on the path every other message waits on

    @staticmethod
    async def _send_to(connection: UdpConnection, data: bytes, infos: list[Any]) -> None:
        """Sends to the first checked address the socket can reach: one the core allowed.
        (Nothing is awaited before the datagram is queued: sends keep the page's order.)"""
        if not infos:
            await connection.send_failed("no address the socket can send to")
            return
        connection.send(data, infos[0][4])

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
        requester = self.requesters[connection.id]

        async def change(chosen: str) -> None:
            if connection.id not in self.sockets:
                return
            try:
                connection.membership(join, chosen, source_text)
            except OSError as exc:
                log.warning("udp socket %d: %s %s: %s", connection.id, message["type"], chosen, exc)
                await failed("NetworkError", PAGE_MESSAGE[Code.NETWORK_ERROR])
                return
            await self._emit({"type": "done", "id": connection.id, "req": req})

        async def refuse(_detail: str = "") -> None:
            await failed("NotAllowedError", PAGE_MESSAGE[Code.NOT_ALLOWED])

        if not join:
            await change(str(group))  # leaving narrows what the socket hears: nothing to decide
            return

        async def allow(_infos: list[Any], decision: Allow) -> None:
            await change(decision.addresses[0])

        request = Request(requester["origin"], requester["incognito"], "multicast", str(group), 0)
        await self._settle(connection.id, requester, request, Outcome(allow, refuse, refuse, lambda: connection.id not in self.sockets))

    async def _accept(self, connection: TcpListener, message: dict[str, Any]) -> None:
        socket_id = message["socketId"]
        if self._id_taken(socket_id):
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} was used before", connection.id)
        connection.grant(socket_id)
        if socket_id in connection.state.accept_ids:
            self._reserved[socket_id] = connection.id

    # -- what an open socket asks for next ---------------------------------------------------------

    async def _ask_action(self, request: PendingOpen) -> None:
        socket_id = request.message["id"]
        turn = self._consent.request(request.tab, socket_id)
        if turn == "refuse":
            log.info("refused %s -> %s %s:%s: too many prompts waiting in tab %s", request.message["origin"], request.kind, request.host, request.port, request.tab[0])
            if request.action is not None:
                await request.action.refuse()
                self._next_action(socket_id)
            else:
                await self._refuse(socket_id)
            return
        self._pending[socket_id] = request
        if turn == "show":
            await self._show_prompt(socket_id)

    def _next_action(self, socket_id: int) -> None:
        waiting = self._actions.get(socket_id)
        if waiting and socket_id in self.sockets:
            self._spawn(self._ask_action(waiting.popleft()))
        elif waiting is not None and not waiting:
            del self._actions[socket_id]

    # -- the options page ---------------------------------------------------------------------------

    async def _grants_request(self, message: dict[str, Any]) -> None:
        """Lists or revokes the user's grants (the extension lets only its options page ask)."""
        damaged = False
        try:
            if message["type"] == "grants_revoke":
                try:
                    origin = normalize_origin(message["origin"])
                    host = normalize_host(message["host"]) if "host" in message else None
                except InvalidDestination as exc:
                    raise ProtocolError(Code.SCHEMA_VIOLATION, f"grants_revoke: {exc}") from exc
                removed = self._store.revoke(origin, message.get("kind"), host, message.get("port"))
                log.info("the user revoked %d grant(s) of %s from the options page", len(removed), origin)
            grants = self._store.load()
        except StoreDamaged:
            grants, damaged = [], True
        items = [g.as_dict() for g in grants]
        await self._emit({"type": "grants", "req": message["req"], "grants": items, "damaged": damaged})

    async def _private_ended(self) -> None:
        """The last private window closed (the extension noticed): the private session's grants,
        certificates and prompt counts go, and what private windows still had open or asked is
        ended, so "until private windows close" means that (questionnaire 2.14)."""
        self._private_grants.clear()
        self._private_certificates.clear()
        marked = PRIVATE.set(True)  # ending them logs their sockets: without sites or destinations
        try:
            for socket_id in [i for i, p in self._pending.items() if i not in self.sockets and p.message.get("incognito") is True]:
                await self._stop_asking(socket_id, allowed=None)
            for socket_id, requester in list(self.requesters.items()):
                connection = self.sockets.get(socket_id)
                if connection is not None and requester.get("incognito") is True:
                    await connection.fail("the private windows closed", Code.NOT_ALLOWED, "NotAllowedError")
        finally:
            PRIVATE.reset(marked)
        self._consent.forget_private()
        log.info("the private windows closed: their grants, certificates and sockets are gone")

    # -- bookkeeping ------------------------------------------------------------------------------

    def _gone(self, socket_id: int) -> None:
        connection = self.sockets.pop(socket_id, None)
        if connection is None:
            return
        self.requesters.pop(socket_id, None)
        self._actions.pop(socket_id, None)
        self._checked.pop(socket_id, None)
        self._waiting_sends.pop(socket_id, None)
        if socket_id in self._pending:  # the socket ended while the user was asked about it
            self._spawn(self._stop_asking(socket_id, allowed=None))
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
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        for connection in list(self.sockets.values()):
            connection.release()
