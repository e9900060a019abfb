"""Asking the user: the consent queue (one prompt per tab at a time, one question per open
socket at a time), the budgets that keep a page from flooding the user with prompts or sockets,
the user's answer, and the prompt to trust a device's own TLS certificate.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import itertools
import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from ..protocol.errors import Code, ProtocolError
from ..sockets.tcp import TcpConnection
from ..sockets.tls import describe, spki_sha256
from ..trust.consent import PROMPT_TIMEOUT_SECONDS, ConsentBroker, RateLimiter, service_name
from ..trust.decision import UNKNOWN, Allow, Ask, Consent, Request, grant_kind
from ..trust.destinations import InvalidDestination, is_ip, normalize_host
from .admission import Outcome
from .table import Emit, SocketTable

log = logging.getLogger(__name__)

MAX_QUESTIONS_PER_SOCKET = 32  # what an open socket may have waiting for the user (sends, joins)

# admission.settle (socket id, requester, request, outcome, details; `generation` by keyword)
Settle = Callable[..., Awaitable[None]]


@dataclass
class PendingOpen:
    """A request waiting for the user's answer: a socket to open (its id is taken; only
    `release` may name it), or something an open socket wants next (`action`)."""

    message: dict[str, Any]  # the open, or the requester of an open socket
    kind: str
    host: str
    port: int
    tab: tuple[int, bool]
    request: Request  # what the decision core was asked
    ask: Ask  # what it said to show
    outcome: Outcome
    timer: asyncio.TimerHandle | None = None
    shown: bool = False
    action: Outcome | None = None  # set for an open socket's question
    details: dict[str, Any] | None = None  # more for the prompt (a certificate and why)
    prompt_id: int = 0  # set when shown: the user's answer names it
    generation: int = 0  # the private session it was asked in (private windows only)


def site(requester: dict[str, Any]) -> tuple[str, bool]:
    """What the consent budgets count by: normal and private windows of an origin apart."""
    return (requester["origin"], requester["incognito"] is True)


def _prompt_kind(kind: str) -> str:
    return grant_kind(kind) if kind == "udp-send" else kind


def secured(message: dict[str, Any]) -> bool:
    return (message.get("options") or message).get("secureTransport") == "on"


def prompt_timeout() -> float:
    try:
        return min(600.0, max(1.0, float(os.environ.get("DIRECT_SOCKETS_PROMPT_TIMEOUT", PROMPT_TIMEOUT_SECONDS))))
    except ValueError:
        return PROMPT_TIMEOUT_SECONDS


class Prompts:
    def __init__(self, table: SocketTable, emit: Emit, consent: ConsentBroker | None, settle: Settle,
                 private_generation: Callable[[], int]) -> None:
        self._table = table
        self._private_generation = private_generation  # the admission path's, when an answer arrives
        self._emit = emit
        self._settle = settle  # the admission path, to decide again with the user's answer
        self.consent = consent or ConsentBroker(timeout_seconds=prompt_timeout())
        self.attempts = RateLimiter()  # sockets a site may ask for, per second
        self._actions: dict[int, collections.deque[PendingOpen]] = {}  # per socket, waiting to ask
        # Every prompt shown gets the next id, and an answer must name the one it answers: a
        # socket asks one thing after another under its own id, and an answer that crossed its
        # prompt's timeout must not be taken for an answer to the next.
        self._prompt_ids = itertools.count(1)
        self._last_prompt_id = 0
        table.on_gone = self._socket_gone

    def _socket_gone(self, socket_id: int) -> None:
        self._actions.pop(socket_id, None)
        if socket_id in self._table.pending:  # the socket ended while the user was asked about it
            self._table.spawn(self.stop_asking(socket_id, allowed=None))

    async def ask(self, socket_id: int, requester: dict[str, Any], request: Request, ask: Ask, outcome: Outcome, details: dict[str, Any] | None = None) -> None:
        """Queues the prompt the core asked for (one per tab at a time; one per socket at a
        time for what an open socket asks next)."""
        if self.consent.in_cooldown((request.origin, request.incognito)):
            log.info("refused %s -> %s %s:%s without asking: refused too often lately", request.origin, request.kind, request.host, request.port)
            await outcome.refuse()
            return
        question = socket_id in self._table.sockets  # an open socket's, not an open's
        # An open's own message, so that an address the user corrects is the one its socket
        # opens with (its name for TLS, its destination); an open socket's requester, a copy.
        pending = PendingOpen(dict(requester) if question else requester, request.kind, ask.host, request.port, (requester["tabId"], requester["incognito"]),
                              request, ask, outcome, action=outcome if question else None, details=details)
        pending.generation = self._private_generation()
        if question:  # one at a time per socket
            # (A deque, even empty, means a question is on its way to being asked.)
            if socket_id in self._table.pending or socket_id in self._actions:
                waiting = self._actions.setdefault(socket_id, collections.deque())
                if len(waiting) >= MAX_QUESTIONS_PER_SOCKET:
                    await outcome.refuse()
                    return
                waiting.append(pending)
                return
        await self._ask_action(pending)

    async def _ask_action(self, request: PendingOpen) -> None:
        socket_id = request.message["id"]
        turn = self.consent.request(request.tab, socket_id)
        if turn == "refuse":
            log.info("refused %s -> %s %s:%s: too many prompts waiting in tab %s", request.message["origin"], request.kind, request.host, request.port, request.tab[0])
            await self._refuse(request)
            return
        self._table.pending[socket_id] = request
        if turn == "show":
            await self._show_prompt(socket_id)

    async def _refuse(self, pending: PendingOpen) -> None:
        """Refuses a request unasked: an open socket's question, or the open itself."""
        if pending.action is not None:
            await pending.action.refuse()
            self._next_action(pending.message["id"])
        else:
            await self._table.refuse(pending.message["id"])

    def _next_action(self, socket_id: int) -> None:
        waiting = self._actions.get(socket_id)
        if waiting and socket_id in self._table.sockets:
            self._table.spawn(self._ask_action(waiting.popleft()))
        elif waiting is not None and not waiting:
            del self._actions[socket_id]

    async def _show_prompt(self, socket_id: int) -> None:
        pending = self._table.pending.get(socket_id)
        if pending is None or pending.shown:
            return
        if pending.message.get("incognito") is True and pending.generation != self._private_generation():
            return  # its private session has ended: it is being withdrawn, never shown
        pending.shown = True
        pending.prompt_id = self._last_prompt_id = next(self._prompt_ids)
        message, ask = pending.message, pending.ask
        timeout = self.consent.timeout_seconds
        pending.timer = asyncio.get_running_loop().call_later(timeout, lambda: self._table.spawn(self._timed_out(pending)))
        prompt: dict[str, Any] = {
            "type": "prompt", "id": socket_id, "promptId": pending.prompt_id, "origin": message["origin"], "tabId": message["tabId"],
            "frameId": message["frameId"], "incognito": message["incognito"], "kind": _prompt_kind(pending.kind),
            # A name not looked up yet has no addresses and the scope 'unknown': it is looked
            # up only once the user allows, and asked about again if it is then on the local
            # network or this device (docs/PROTOCOL.md).
            "host": ask.host, "port": pending.port, "addresses": list(ask.addresses), "scope": ask.scope,
            # An https page opening a socket without TLS is downgrading (questionnaire 2.16).
            "plaintext": message["origin"].startswith("https:") and pending.kind != "certificate" and not secured(message),
            "offerAlways": not message["incognito"], "timeoutSeconds": timeout,
        }
        if (service := service_name(pending.port)) is not None:
            prompt["service"] = service
        if pending.details:
            prompt.update(pending.details)
        log.info("asking the user: %s -> %s %s:%s (%s)", message["origin"], pending.kind, ask.host, pending.port, list(ask.addresses))
        await self._emit(prompt)

    async def answer(self, message: dict[str, Any]) -> None:
        """The user's answer to a prompt (a `consent` message)."""
        socket_id, decision, prompt_id = message["id"], message["decision"], message["promptId"]
        pending = self._table.pending.get(socket_id)
        if pending is None or not pending.shown or pending.timer is None or pending.prompt_id != prompt_id:
            if prompt_id <= self._last_prompt_id or socket_id in self._table.ended:
                # It crossed a timeout or a release, and may not stand for what is asked now.
                log.info("an answer to prompt %d of socket %d, which has closed: dropped", prompt_id, socket_id)
                return
            raise ProtocolError(Code.UNKNOWN_SOCKET, f"consent for prompt {prompt_id} of socket {socket_id}, which was never shown")
        origin = pending.message["origin"]
        if decision == "deny":
            log.info("the user refused %s -> %s %s:%s", origin, pending.kind, pending.host, pending.port)
            await self.stop_asking(socket_id, allowed=False, notify=False)
            return
        incognito = pending.message["incognito"]
        if (decision == "always" and incognito) or (decision == "session" and not incognito):
            raise ProtocolError(Code.SCHEMA_VIOLATION, f"consent: {decision!r} is not offered {'in' if incognito else 'outside'} private windows")
        remember = "" if decision == "once" else decision
        consent = Consent(pending.ask.scope, remember)  # type: ignore[arg-type]
        request = replace(pending.request, consent=consent, addresses=pending.ask.addresses if pending.ask.addresses else None)
        if "host" in message and message["host"] != pending.host:
            host = message["host"]
            self._check_correction(pending, host)
            if pending.action is None:
                address_field = "localAddress" if pending.kind in ("udp-bind", "tcp-listen") else "remoteAddress"
                pending.message[address_field] = host
            # The user's own address: a literal is what they typed; a name is looked up now,
            # and asked about again if it is on the local network or this device.
            request = replace(request, host=host, addresses=None, consent=Consent(UNKNOWN, remember))  # type: ignore[arg-type]
            log.info("the user corrected %s to %s", pending.host, host)
        log.info("the user allowed (%s) %s -> %s %s:%s", decision, origin, pending.kind, request.host, pending.port)
        await self.stop_asking(socket_id, allowed=True, notify=False)
        if pending.action is None:
            self._table.deciding.add(socket_id)
        self._table.spawn(self._after_consent(socket_id, pending, request, self._private_generation()))

    @staticmethod
    def _check_correction(pending: PendingOpen, host: str) -> None:
        """An address the user typed instead of the one asked about must be one for its kind."""
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

    async def _after_consent(self, socket_id: int, pending: PendingOpen, request: Request, generation: int) -> None:
        """The user said yes: the core decides again with their answer (and looks the name up
        now, if it was not before)."""
        try:
            await self._settle(socket_id, pending.message, request, pending.outcome, pending.details, generation=generation)
        finally:
            if pending.action is None:
                self._table.deciding.discard(socket_id)

    async def _timed_out(self, pending: PendingOpen) -> None:
        """The user did not answer in time: a refusal of this prompt, if it is still the one
        asked (the answer may have been read since the timer fired, and the next shown)."""
        socket_id = pending.message["id"]
        if self._table.pending.get(socket_id) is pending:
            await self.stop_asking(socket_id, allowed=False)

    async def stop_asking(self, socket_id: int, allowed: bool | None, notify: bool = True) -> None:
        """Ends a prompt: answered, timed out (allowed=False) or released (allowed=None)."""
        pending = self._table.pending.pop(socket_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self.consent.answered(site(pending.message), allowed)  # a withdrawn one (None) counts toward the budget
        following = self.consent.finished(pending.tab, socket_id)
        if notify and pending.shown:
            await self._emit({"type": "prompt_closed", "id": socket_id})
        if pending.action is not None:
            if allowed is False:
                await pending.action.refuse()
            self._next_action(socket_id)
        elif allowed is False:
            await self._table.refuse(socket_id)
        elif allowed is None:
            self._table.mark_ended(socket_id)
        # Requests that waited their turn in the tab are refused unasked if their site has
        # meanwhile been refused too often.
        while following is not None and following in self._table.pending and self.consent.in_cooldown(site(self._table.pending[following].message)):
            refused = self._table.pending.pop(following)
            following = self.consent.finished(refused.tab, following)
            await self._refuse(refused)
        if following is not None:
            self._table.spawn(self._show_prompt(following))

    async def ask_trust(self, connection: TcpConnection, der: bytes, reason: str) -> str | None:
        """A server's certificate no authority vouches for: the user may trust it for this site
        (it is their device), seeing its fingerprint. Answers the key pin to connect with."""
        requester = self._table.requesters.get(connection.id)
        if requester is None:
            return None
        assert connection.destination is not None
        host, port = connection.destination
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        async def allow(_infos: list[Any], decision: Allow) -> None:
            if not answer.done():
                answer.set_result(decision.pin)

        async def refuse(_detail: str = "") -> None:
            if not answer.done():
                answer.set_result(None)

        details = {"certificate": describe(der), "reason": reason}
        request = Request(requester["origin"], requester["incognito"], "certificate", host, port, self._table.checked.get(connection.id), pin=spki_sha256(der))
        await self._settle(connection.id, requester, request, Outcome(allow, refuse, refuse, lambda: connection.id not in self._table.sockets), details)
        return await answer

    async def withdraw_private(self) -> None:
        """The private windows closed: what they still had waiting for the user is withdrawn,
        opens and open sockets' questions alike (the sockets end next)."""
        private = [i for i, p in self._table.pending.items() if p.message.get("incognito") is True]
        for socket_id in private:
            self._actions.pop(socket_id, None)  # an open socket's questions still to ask
        for socket_id in private:
            await self.stop_asking(socket_id, allowed=None)

    def close_all(self) -> None:
        for pending in self._table.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._table.pending.clear()
