"""What an open UDP socket asks for that the admission path decides: a bound socket's datagram
to a destination (udp_send with an address) and joining a multicast group."""

from __future__ import annotations

import logging
import socket
from typing import Any

from ..protocol.errors import PAGE_MESSAGE, Code, ProtocolError
from ..protocol.wire import MAX_DATAGRAM, UDP_SEND_WINDOW, decode_data, ip_literal
from ..sockets.connection import family_for
from ..sockets.udp import UdpConnection
from ..trust.decision import Allow, Request, Resolve
from .admission import Admission, Outcome
from .table import SocketTable

log = logging.getLogger(__name__)

MAX_WAITING_SEND_BYTES = 1024 * 1024  # bytes of a bound socket's datagrams waiting for the user


class UdpRequests:
    def __init__(self, table: SocketTable, admission: Admission) -> None:
        self._table = table
        self._admission = admission

    async def send(self, connection: UdpConnection, message: dict[str, Any]) -> None:
        data = decode_data(message["data"], "udp_send", connection.id, MAX_DATAGRAM, allow_empty=True)
        if ("remoteAddress" in message) != ("remotePort" in message):
            raise ProtocolError(Code.SCHEMA_VIOLATION, "udp_send: remoteAddress and remotePort go together", connection.id)
        if "remoteAddress" not in message:
            connection.send(data, None)
            return
        if not connection.state.can_send(True):
            return  # the writable already failed: the page knows, the datagram is dropped
        socket_id = connection.id
        requester = self._table.requesters[socket_id]
        waiting = self._table.waiting_sends.setdefault(socket_id, [0, 0])
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
        decision = self._admission.first(request)
        waiting[0] += 1
        waiting[1] += len(data)
        done = False

        def leave() -> bool:
            nonlocal done
            if done:
                return False
            done = True
            if socket_id in self._table.waiting_sends:
                waiting[0] -= 1
                waiting[1] -= len(data)
            return socket_id in self._table.sockets

        async def allow(infos: list[Any], _decision: Allow) -> None:
            if leave():
                try:
                    await self._send_to(connection, data, infos)
                except ProtocolError as exc:  # as the router would: the page and host disagree on the socket
                    await connection.fail(exc.detail, exc.code)

        async def refuse() -> None:
            if leave():
                await connection.refuse_send(f"not allowed: {request.host}:{request.port}")

        async def fail(detail: str) -> None:
            if leave():
                await connection.send_failed(detail)

        settling = self._admission.settle(socket_id, requester, request, Outcome(allow, refuse, fail, lambda: socket_id not in self._table.sockets),
                                          decision=decision, generation=self._admission.private_generation)
        if isinstance(decision, Resolve):
            self._table.spawn(settling)  # a name to look up: not on the path every other message waits on
        else:
            # Allowed or refused now, or queued now behind this socket's earlier questions: in
            # the order the page sent them.
            await settling

    @staticmethod
    async def _send_to(connection: UdpConnection, data: bytes, infos: list[Any]) -> None:
        """Sends to the first checked address the socket can reach: one the core allowed.
        (Nothing is awaited before the datagram is queued: sends keep the page's order.)"""
        if not infos:
            await connection.send_failed("no address the socket can send to")
            return
        connection.send(data, infos[0][4])

    async def membership(self, connection: UdpConnection, message: dict[str, Any]) -> None:
        join = message["type"] == "join"
        req, group_text, source_text = message["req"], message["groupAddress"], message.get("sourceAddress")

        async def failed(name: str, text: str) -> None:
            await self._table.emit({"type": "request_failed", "id": connection.id, "req": req, "name": name, "message": text})

        group = ip_literal(group_text, f"{message['type']}: groupAddress", connection.id)
        if not group.is_multicast:
            await failed("TypeError", "Not a multicast group address.")
            return
        if source_text is not None:
            source = ip_literal(source_text, f"{message['type']}: sourceAddress", connection.id)
            if source.version != group.version or source.is_multicast or source.is_loopback or source.is_unspecified:
                await failed("TypeError", "Not a valid source address for this group.")
                return
        requester = self._table.requesters[connection.id]

        async def change(chosen: str) -> None:
            if connection.id not in self._table.sockets:
                return
            try:
                connection.membership(join, chosen, source_text)
            except OSError as exc:
                log.warning("udp socket %d: %s %s: %s", connection.id, message["type"], chosen, exc)
                await failed("NetworkError", PAGE_MESSAGE[Code.NETWORK_ERROR])
                return
            await self._table.emit({"type": "done", "id": connection.id, "req": req})

        async def refuse(_detail: str = "") -> None:
            await failed("NotAllowedError", PAGE_MESSAGE[Code.NOT_ALLOWED])

        if not join:
            await change(str(group))  # leaving narrows what the socket hears: nothing to decide
            return

        async def allow(_infos: list[Any], decision: Allow) -> None:
            await change(decision.addresses[0])

        request = Request(requester["origin"], requester["incognito"], "multicast", str(group), 0)
        await self._admission.settle(connection.id, requester, request, Outcome(allow, refuse, refuse, lambda: connection.id not in self._table.sockets))
