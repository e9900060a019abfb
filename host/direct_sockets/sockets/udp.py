"""One UDP socket on behalf of a page, connected or bound: asyncio code that only moves datagrams.

Decisions are `UdpSocketState`'s; policy (which destinations a bound socket may send to, which
groups it may join) is the decision core's (`decision.py`), checked before anything reaches
this module: a bound socket's datagram arrives here with the one socket address it may go to.
Coming in, a bound socket drops a datagram whose sender the policy blocks (`peer_blocked`, the
core's `decision.peer_blocked`), and hears a multicast group only if it joined it itself.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import logging
import socket
import struct
from typing import Any, Callable

from .connection import Connection, Emit, set_buffer_sizes
from ..protocol.errors import Code
from ..protocol.udp_state import UdpMode, UdpSocketState

log = logging.getLogger(__name__)

RECEIVE_BUFFER = 65535  # the most any datagram can carry: nothing that arrives is cut short
_CLOSE = object()

# Linux values missing from Python's socket module: source-specific joins (RFC 3678).
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)
IP_DROP_SOURCE_MEMBERSHIP = getattr(socket, "IP_DROP_SOURCE_MEMBERSHIP", 40)
MCAST_JOIN_SOURCE_GROUP = getattr(socket, "MCAST_JOIN_SOURCE_GROUP", 46)
MCAST_LEAVE_SOURCE_GROUP = getattr(socket, "MCAST_LEAVE_SOURCE_GROUP", 47)
# Linux delivers to a socket bound to a wildcard address every group ANY socket on the machine
# joined on its port, unless these are off: then only the socket's own joins (`join`, which
# asks the user and checks the policy) deliver. IPV6_MULTICAST_ALL came with Linux 4.20.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)


def _own_groups_only(sock: socket.socket) -> None:
    """Turns off IP_MULTICAST_ALL (and IPV6_MULTICAST_ALL on an IPv6 socket, which also hears
    IPv4 groups through IPv4-mapped addresses). A kernel without the IPv6 option (ENOPROTOOPT)
    is left as it is; any other failure fails the bind."""
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    if sock.family == socket.AF_INET6:
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        except OSError as exc:
            if exc.errno != errno.ENOPROTOOPT:
                raise


def _interface_index(address: str) -> int:
    """The interface of a bound IPv6 address, for multicast; 0 lets the kernel choose."""
    if ipaddress.ip_address(address).is_loopback:
        try:
            return socket.if_nametoindex("lo")
        except OSError:
            return 0
    return 0


def _sockaddr_storage_in6(address: str) -> bytes:
    packed = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0) + socket.inet_pton(socket.AF_INET6, address) + struct.pack("=I", 0)
    return packed.ljust(128, b"\0")


class UdpConnection(Connection):
    kind = "udp socket"
    state: UdpSocketState

    def __init__(
        self, state: UdpSocketState, emit: Emit, on_gone: Callable[[int], None],
        peer_blocked: Callable[[str, int], bool] = lambda address, port: False,
    ) -> None:
        super().__init__(state, emit, on_gone)
        self._peer_blocked = peer_blocked
        self.dropped = 0  # datagrams from senders the policy blocks, never shown to the page
        self._credit_changed = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[bytes, tuple[Any, ...] | None] | object] = asyncio.Queue()
        self._bound_address = ""

    # -- opening ------------------------------------------------------------------------------

    def start(self, message: dict[str, Any], addresses: list[Any]) -> None:
        """A connected socket connects to the first of `addresses` (resolved and checked by the
        session); a bound one binds."""
        options = message["options"]
        if self.state.mode is UdpMode.CONNECTED:
            self.description = f"{message['remoteAddress']}:{message['remotePort']}"
            self._spawn(self._connect(message["remoteAddress"], message["remotePort"], options, addresses))
        else:
            self.description = f"bound {message['localAddress']}:{message.get('localPort', 0)}"
            self._spawn(self._bind(message["localAddress"], message.get("localPort", 0), options))

    def _apply_multicast_options(self, sock: socket.socket, options: dict[str, Any]) -> None:
        ttl = options.get("multicastTimeToLive", 1)
        loop = 1 if options.get("multicastLoopback", True) else 0
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, loop)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, loop)

    async def _connect(self, host: str, port: int, options: dict[str, Any], infos: list[Any]) -> None:
        def prepare(sock: socket.socket) -> None:
            set_buffer_sizes(sock, options)
            self._apply_multicast_options(sock, options)

        if not await self._connect_first(infos, prepare, f"{host}:{port}"):
            return
        sock = self._os_socket()
        peer, local = sock.getpeername(), sock.getsockname()
        await self._opened({"remoteAddress": peer[0], "remotePort": peer[1], "localAddress": local[0], "localPort": local[1]})

    async def _bind(self, address: str, port: int, options: dict[str, Any]) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            # Inside the `try`: out of descriptors (EMFILE) is this socket's failure, told.
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            await self.fail(f"binding {address}:{port}: {exc}")
            return
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if options.get("ipv6Only") else 0)
            if options.get("multicastAllowAddressSharing"):
                # Linux hands every multicast datagram to each socket sharing the port.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            set_buffer_sizes(sock, options)
            self._apply_multicast_options(sock, options)
            _own_groups_only(sock)
            sock.bind((address, port))
            # Multicast leaves through the interface of the bound address, not the default
            # route: a page bound to loopback never sends a packet anywhere else.
            if not ipaddress.ip_address(address).is_unspecified:
                if family == socket.AF_INET:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
                elif index := _interface_index(address):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        except OSError as exc:
            sock.close()
            await self.fail(f"binding {address}:{port}: {exc}")
            return
        self._sock = sock
        self._bound_address = address
        local = sock.getsockname()
        await self._opened({"localAddress": local[0], "localPort": local[1]})

    async def _opened(self, addresses: dict[str, Any]) -> None:
        self.state.connected()
        log.info("udp socket %d open: %s", self.id, addresses)
        await self._emit({"type": "opened", "id": self.id, **addresses})
        self._spawn(self._receive_loop())
        self._spawn(self._send_loop())

    # -- what the page asks -------------------------------------------------------------------

    def credit(self, count: int) -> None:
        self.state.page_read(count)
        self._credit_changed.set()

    def send(self, data: bytes, destination: tuple[Any, ...] | None) -> None:
        """Queues a datagram; a bound socket's names the socket address to send to, which
        the session resolved once and checked (it is never looked up again here)."""
        if self.state.page_send(destination is not None):
            self._outbox.put_nowait((data, destination))

    async def send_failed(self, detail: str) -> None:
        """A bound socket's datagram could not go where the page said (its name did not
        resolve, no address of the socket's family): its writable fails with NetworkError."""
        if self.state.page_send(True):
            await self._write_failed(detail, Code.NETWORK_ERROR, "NetworkError")

    async def refuse_send(self, detail: str) -> None:
        """A bound socket asked to send where the page may not: its writable fails."""
        if self.state.page_send(True):
            await self._write_failed(detail, Code.NOT_ALLOWED, "NotAllowedError")

    def shutdown(self) -> None:
        self.state.page_shutdown()
        self._outbox.put_nowait(_CLOSE)

    async def cancel_reading(self) -> None:
        self.state.page_cancel()
        self._credit_changed.set()
        await self._maybe_finish()

    def membership(self, join: bool, group: str, source: str | None) -> None:
        """Joins or leaves; raises OSError as the kernel does."""
        self.state.page_membership(join)
        sock = self._os_socket()
        interface = self._bound_address
        if ":" not in group:
            local = socket.inet_aton(interface if interface and not ipaddress.ip_address(interface).is_unspecified else "0.0.0.0")
            if source is None:
                option = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
                sock.setsockopt(socket.IPPROTO_IP, option, socket.inet_aton(group) + local)
            else:  # struct ip_mreq_source on Linux: group, interface, source
                option = IP_ADD_SOURCE_MEMBERSHIP if join else IP_DROP_SOURCE_MEMBERSHIP
                sock.setsockopt(socket.IPPROTO_IP, option, socket.inet_aton(group) + local + socket.inet_aton(source))
        else:
            index = _interface_index(interface) if interface else 0
            if source is None:
                option = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
                sock.setsockopt(socket.IPPROTO_IPV6, option, socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", index))
            else:
                option = MCAST_JOIN_SOURCE_GROUP if join else MCAST_LEAVE_SOURCE_GROUP
                request = struct.pack("=I4x", index) + _sockaddr_storage_in6(group) + _sockaddr_storage_in6(source)
                sock.setsockopt(socket.IPPROTO_IPV6, option, request)
        log.info("udp socket %d %s %s%s", self.id, "joined" if join else "left", group, f" from {source}" if source else "")

    # -- moving datagrams ---------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self._os_socket()
        bound = self.state.mode is UdpMode.BOUND
        while True:
            if not self.state.may_receive:
                if not self.state.reading:
                    return
                self._credit_changed.clear()
                await self._credit_changed.wait()
                continue
            try:
                data, address = await loop.sock_recvfrom(sock, RECEIVE_BUFFER)
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    # An ICMP error about an earlier send: UDP goes on, as Chrome's does.
                    log.info("udp socket %d: %s", self.id, exc)
                    continue
                await self.fail(f"receiving: {exc}")
                return
            if not self.state.reading:
                return
            if bound and self._peer_blocked(address[0], address[1]):
                # Dropped before it costs the page any credit; a flood of them costs a loop each.
                self.dropped += 1
                log.debug("udp socket %d: dropped a datagram from %s:%d (policy), %d so far", self.id, address[0], address[1], self.dropped)
                continue
            self.state.received()
            message: dict[str, Any] = {"type": "datagram", "id": self.id, "data": base64.b64encode(data).decode("ascii")}
            if bound:
                message["remoteAddress"], message["remotePort"] = address[0], address[1]
            await self._emit(message)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            item = await self._outbox.get()
            if item is _CLOSE:
                self.state.writing_closed()
                await self._emit({"type": "fin_sent", "id": self.id})
                await self._maybe_finish()
                return
            data, destination = item  # type: ignore[misc]
            try:
                if destination is None:
                    await loop.sock_sendall(self._sock, data)
                else:
                    await loop.sock_sendto(self._sock, data, destination)
            except OSError as exc:
                await self._write_failed(f"sending: {exc}", Code.NETWORK_ERROR, "NetworkError")
                return
            self.state.sent()
            await self._emit({"type": "udp_ack", "id": self.id, "datagrams": 1})

    async def _write_failed(self, detail: str, code: Code, name: str) -> None:
        log.warning("udp socket %d (%s): writing failed: %s", self.id, self.description, detail)
        self.state.send_failed()
        while not self._outbox.empty():
            self._outbox.get_nowait()
        await self._emit({"type": "write_failed", "id": self.id, "code": int(code), "name": name, "message": "Permission denied." if code is Code.NOT_ALLOWED else "Network error."})
        await self._maybe_finish()
