"""Opening a socket a page asks for (tcp_open, udp_open, tcp_listen): its id and the session's
cap checked, the draft's fixed rules and the site's rate applied, then the admission path; the
socket is built (factory.py) only once that allowed it, on the addresses it checked."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from ..protocol.wire import ip_literal
from ..trust.decision import Allow, Request
from .admission import Admission, Outcome
from .factory import Opener, SocketFactory
from .prompts import Prompts, site
from .table import SocketTable

log = logging.getLogger(__name__)

BOUND_UDP_MIN_PORT = 1024  # the draft: bound UDP only on 0 or 1024 and above
LISTEN_MIN_PORT = 32768  # the draft: TCP listening only on 0 or 32768 and above


def destination(message: dict[str, Any]) -> tuple[str, str, int] | None:
    """What a grant must cover for this socket; None when the draft forbids it outright."""
    socket_id = message["id"]
    if message["type"] == "tcp_open":
        return "tcp", message["remoteAddress"], message["remotePort"]
    if message["type"] == "udp_open":
        if message["mode"] == "connected":
            return "udp", message["remoteAddress"], message["remotePort"]
        ip_literal(message["localAddress"], "udp_open: localAddress", socket_id)
        port = message.get("localPort", 0)
        return None if 0 < port < BOUND_UDP_MIN_PORT else ("udp-bind", message["localAddress"], port)
    ip_literal(message["localAddress"], "tcp_listen: localAddress", socket_id)
    port = message.get("localPort", 0)
    return None if 0 < port < LISTEN_MIN_PORT else ("tcp-listen", message["localAddress"], port)


class Opening:
    def __init__(self, table: SocketTable, admission: Admission, prompts: Prompts, factory: SocketFactory) -> None:
        self._table = table
        self._admission = admission
        self._prompts = prompts
        self._factory = factory

    async def open(self, message: dict[str, Any]) -> None:
        socket_id = message["id"]
        self._table.check_unused(socket_id)
        self._table.check_room(socket_id)
        wanted = destination(message)
        if wanted is None:
            await self._table.refuse(socket_id)
            return
        if not self._prompts.attempts.allow(site(message)):
            log.info("refused %s -> %s: too many socket requests", message["origin"], wanted)
            await self._table.refuse(socket_id)
            return
        # Deciding may mean looking a name up: not on the path every other message waits on.
        self._table.deciding.add(socket_id)
        self._table.spawn(self._decide(message, self._factory.openers[message["type"]], wanted, self._admission.private_generation))

    async def _decide(self, message: dict[str, Any], opener: Opener, wanted: tuple[str, str, int], generation: int) -> None:
        socket_id = message["id"]
        kind, host, port = wanted
        version = {"ipv4": 4, "ipv6": 6}.get(message.get("options", {}).get("dnsQueryType") or "", 0)
        request = Request(message["origin"], message["incognito"], kind, host, port, ip_version=version)  # type: ignore[arg-type]
        try:
            await self._admission.settle(socket_id, message, request, self._outcome(message, opener), generation=generation)
        finally:
            self._table.deciding.discard(socket_id)

    def _outcome(self, message: dict[str, Any], opener: Opener) -> Outcome:
        """How an open ends: the socket opened with the checked addresses, or refused."""
        socket_id = message["id"]

        async def allow(infos: list[Any], decision: Allow) -> None:
            if decision.addresses and message["type"] != "tcp_open" and message.get("mode") != "connected":
                # A local address in whatever spelling the page used: bind the one checked.
                self._start({**message, "localAddress": decision.addresses[0]}, opener, infos)
            else:
                self._start(message, opener, infos)
            self._table.checked[socket_id] = decision.addresses

        async def refuse() -> None:
            await self._table.refuse(socket_id)

        async def fail(detail: str) -> None:
            await self._table.network_error(socket_id, detail)

        return Outcome(allow, refuse, fail, lambda: socket_id in self._table.ended)

    def _start(self, message: dict[str, Any], opener: Opener, infos: list[Any]) -> None:
        connection = opener(message, infos)
        self._table.add(message["id"], connection, {k: message[k] for k in ("origin", "tabId", "frameId", "incognito")})
        if message["type"] == "udp_open" and message["mode"] == "bound":
            address = ipaddress.ip_address(message["localAddress"])
            self._table.requesters[message["id"]]["family"] = int(socket.AF_INET6 if address.version == 6 else socket.AF_INET)
