"""The one admission path: every socket a page opens, every datagram a bound socket sends
somewhere new, every multicast group it joins and every certificate it is asked to trust goes
through `Admission.settle`: the policy, then the user's grants, then asking the user (all
decided by the core, trust/decision.py), with the one name lookup the core asks for.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from ..sockets.connection import family_for
from ..trust.decision import REMOTE_KINDS, Allow, Ask, Decision, Facts, Refuse, Request, Resolve, decide, peer_blocked
from ..trust.destinations import InvalidDestination, canonical_ip, normalize_host, normalize_origin
from ..trust.permissions import Grant, PermissionStore, StoreDamaged
from ..trust.policy import PolicyFile
from .table import SocketTable

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 10.0
# Name lookups one site (origin, private window) may have running at once. They run on the
# event loop's few shared threads, and a site that controls a name's DNS can make each one
# slow: past this, its lookups wait their turn (within the timeout), not the other sites'.
LOOKUPS_PER_SITE = 2


@dataclass
class Outcome:
    """How one request ends, whatever the decision core says: `allow` with the checked
    addresses (getaddrinfo entries, [] for local kinds), `refuse`, or `fail` when the one name
    lookup failed; `ended` says the request's socket went away meanwhile."""

    allow: Callable[[list[Any], Allow], Awaitable[None]]
    refuse: Callable[[], Awaitable[None]]
    fail: Callable[[str], Awaitable[None]]
    ended: Callable[[], bool]


# What settle calls when the core says to ask: (socket id, requester, request, ask, outcome, details).
AskUser = Callable[[int, dict[str, Any], Request, Ask, Outcome, "dict[str, Any] | None"], Awaitable[None]]


def _addresses(infos: list[Any]) -> list[str]:
    return list(dict.fromkeys(_canonical(info[4][0]) for info in infos))


def _canonical(address: str) -> str:
    """An address as the decision core checks it (an IPv4-mapped address is its IPv4 one)."""
    text, _, zone = address.partition("%")
    return str(canonical_ip(text)) + (f"%{zone}" if zone else "")


class Admission:
    def __init__(self, table: SocketTable, store: PermissionStore, policy: PolicyFile | None, ask: AskUser) -> None:
        self._table = table
        self._store = store
        self._policy = policy
        self._ask = ask
        # Grants made in private windows: kept here, in memory, never written (questionnaire 2.14).
        self.private_grants: set[Grant] = set()
        # Counts the private sessions that ended: a private window's request decided across the
        # end of its session (a slow lookup after the user's "until private windows close")
        # must not open, nor leave its grant to the next private session.
        self.private_generation = 0
        self._lookup_gates: dict[tuple[str, bool], _LookupGate] = {}

    def first(self, request: Request) -> Decision:
        """What the core says before anything is looked up or asked."""
        return decide(request, self._facts(request))

    async def settle(
        self, socket_id: int, requester: dict[str, Any], request: Request, outcome: Outcome,
        details: dict[str, Any] | None = None, decision: Decision | None = None, generation: int | None = None,
    ) -> None:
        """Runs the decision core for one request until it allows, refuses or asks (from
        `decision`, when the caller already had the first one); looks a name up only when the
        core says so, once, and acts only on the addresses the core checked. `generation`: the
        private session as it was when the page's message or the user's answer arrived (a
        task started later may already see the next one)."""
        infos: list[Any] = []
        if generation is None:
            generation = self.private_generation
        if decision is None:
            decision = self.first(request)
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
            decision = self.first(request)
        if request.incognito and generation != self.private_generation:
            log.info("refused a private window's request: its private session has ended")
            await outcome.refuse()
            return
        if isinstance(decision, Refuse) or isinstance(decision, Resolve):
            log.info("refused %s -> %s %s:%s: %s", request.origin, request.kind, request.host, request.port,
                     decision.reason if isinstance(decision, Refuse) else "asked to resolve twice")
            await outcome.refuse()
            return
        if isinstance(decision, Ask):
            if request.consent is not None:
                log.warning("%s resolves to %s (%s): asking again", decision.host, list(decision.addresses), decision.scope)
            await self._ask(socket_id, requester, replace(request, host=decision.host), decision, outcome, details)
            return
        if decision.grant is not None:
            if decision.remember != "always":
                self.private_grants.add(decision.grant)
            else:
                try:
                    self._store.grant(decision.grant)
                except (OSError, ValueError) as exc:  # allowed this time; the user can see why it is not remembered
                    log.error("could not remember %s: %s", decision.grant, exc)
        await outcome.allow(self._sockaddrs(decision, infos, request, requester), decision)

    def _facts(self, request: Request) -> Facts:
        """The policy in force and the user's grants for the request's origin: the stored ones
        for normal windows, the private session's for private windows. A private window does not
        use what the user allowed "always" in a normal one (it is asked again, as Chromium asks
        again for a permission allowed outside incognito): that it opens unasked would tell the
        site it was allowed before, a link between the two (questionnaire 2.14)."""
        policy = self._policy.current() if self._policy is not None else None
        if request.incognito:
            return Facts(policy, tuple(self.private_grants))
        try:
            grants = [g for g in self._store.load() if g.origin == normalize_origin(request.origin)]
        except (StoreDamaged, OSError, InvalidDestination):
            grants = []  # a damaged store grants nothing
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
                self._gated_lookup((request.origin, request.incognito), host, request.port, family=family,
                                   type=socket.SOCK_STREAM if request.kind == "tcp" else socket.SOCK_DGRAM, flags=flags),
                timeout=RESOLVE_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("resolving %s: %s", host, exc or "timed out")
            return None
        return list(infos) or None

    async def _gated_lookup(self, site: tuple[str, bool], host: str, port: int, **kwargs: int) -> list[Any]:
        """One lookup in the site's turn. A lookup that outlives its timeout still holds its
        thread, so it holds the site's turn until it really ends."""
        gate = self._lookup_gates.setdefault(site, _LookupGate())
        gate.users += 1
        try:
            await gate.turns.acquire()
        except BaseException:
            self._leave_gate(site, gate)
            raise

        def done(task: asyncio.Future[list[Any]]) -> None:
            gate.turns.release()
            self._leave_gate(site, gate)
            if not task.cancelled():
                task.exception()  # seen here: its waiter may have timed out and gone

        lookup = asyncio.ensure_future(self._getaddrinfo(host, port, **kwargs))
        lookup.add_done_callback(done)
        return await asyncio.shield(lookup)

    def _leave_gate(self, site: tuple[str, bool], gate: "_LookupGate") -> None:
        gate.users -= 1
        if gate.users == 0 and self._lookup_gates.get(site) is gate:
            del self._lookup_gates[site]

    async def _getaddrinfo(self, host: str, port: int, *, family: int, type: int, flags: int) -> list[Any]:
        return await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=type, flags=flags)

    @staticmethod
    def _send_family(requester: dict[str, Any]) -> int:
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

    def trusted_keys(self, requester: dict[str, Any], host: str, port: int) -> tuple[str, ...]:
        """The keys the user trusted for this site at host:port (a device's own certificate)."""
        try:
            origin, host = normalize_origin(requester["origin"]), normalize_host(host)
        except InvalidDestination:
            return ()
        request = Request(origin, requester["incognito"], "certificate", host, port)
        return tuple(g.pin for g in self._facts(request).grants if g.covers(origin, "certificate", host, port))

    def peer_check(self, message: dict[str, Any], kind: str) -> Callable[[str, int], bool]:
        """For a listener or bound socket: whether a peer coming in is blocked, by the policy as
        it is when the peer arrives (an administrator's new block holds for open sockets)."""
        origin = message["origin"]

        def blocked(address: str, port: int) -> bool:
            return peer_blocked(self._policy.current() if self._policy is not None else None, origin, kind, address, port)

        return blocked


class _LookupGate:
    """A site's turns at name lookups, and how many of its lookups run or wait."""

    def __init__(self) -> None:
        self.turns = asyncio.Semaphore(LOOKUPS_PER_SITE)
        self.users = 0
