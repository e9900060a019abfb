"""The one place the session builds sockets: a TCP connection (opened, accepted by a listener,
or continuing another over TLS), a UDP socket and a TCP listener, each with its state machine,
windows and the session's hooks."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..protocol.listen_state import ListenState
from ..protocol.tcp_state import TcpSocketState
from ..protocol.udp_state import UdpMode, UdpSocketState
from ..protocol.wire import BULK_CHUNK, BULK_SEND_WINDOW, MAX_CHUNK, SEND_WINDOW, UDP_SEND_WINDOW
from ..sockets.bulk import BulkServer
from ..sockets.connection import Connection
from ..sockets.listener import TcpListener
from ..sockets.server_certs import PrivateCertificates, ServedCertificate, ServerCertificates
from ..sockets.tcp import TcpConnection
from ..sockets.tls import ClientTls
from ..sockets.udp import UdpConnection
from ..trust.destinations import normalize_origin
from .admission import Admission
from .prompts import Prompts
from .table import SocketTable

log = logging.getLogger(__name__)

# Builds an opened socket from its open message and the addresses the admission path checked.
Opener = Callable[[dict[str, Any], list[Any]], Connection]


class SocketFactory:
    def __init__(self, table: SocketTable, admission: Admission, prompts: Prompts, certificates: ServerCertificates) -> None:
        self._table = table
        self._admission = admission
        self._prompts = prompts
        self.bulk = BulkServer()
        self._certificates = certificates
        # The private session's TLS server certificates: made in memory, never written.
        self.private_certificates = PrivateCertificates()
        self.openers: dict[str, Opener] = {"tcp_open": self._open_tcp, "udp_open": self._open_udp, "tcp_listen": self._listen}

    def _tcp(self, socket_id: int, window: int = SEND_WINDOW, bulk: BulkServer | None = None, bulk_message_size: int = BULK_CHUNK) -> TcpConnection:
        """Every TCP connection of the session, whichever way it came."""
        return TcpConnection(
            TcpSocketState(socket_id, window, MAX_CHUNK), self._table.emit, self._table.gone, bulk, bulk_message_size=bulk_message_size,
        )

    def _open_tcp(self, message: dict[str, Any], infos: list[Any]) -> Connection:
        host, port = message["remoteAddress"], message["remotePort"]
        options = message["options"]
        bulk = bool(message.get("bulk"))
        # A socket that may take the bulk path gets its larger send window from the start: the
        # page uses it only once its WebSocket attached (docs/BULK.md).
        connection = self._tcp(
            message["id"], BULK_SEND_WINDOW if bulk else SEND_WINDOW, self.bulk if bulk else None, message.get("bulkMessageSize", BULK_CHUNK),
        )
        log.info("%s (tab %s, frame %s) opens tcp %s:%d", message["origin"], message["tabId"], message["frameId"], host, port)
        tls = None
        if options.get("secureTransport") == "on":
            tls = ClientTls.from_options(host, options, self._admission.trusted_keys(message, host, port))
        connection.start(host, port, options, infos, tls, self._prompts.ask_trust)
        return connection

    def upgrade(self, connection: TcpConnection, new_id: int, options: dict[str, Any], addresses: tuple[str, ...]) -> None:
        """`connection` continues as `new_id` over TLS (start_tls, allowed by the core)."""
        requester = self._table.requesters[connection.id]
        assert connection.destination is not None
        host, port = connection.destination
        tls = ClientTls.from_options(host, options, self._admission.trusted_keys(requester, host, port))
        upgraded = self._tcp(new_id)
        self._table.add(new_id, upgraded, requester)
        self._table.checked[new_id] = addresses
        log.info("socket %d continues as %d over TLS", connection.id, new_id)
        upgraded.upgrade(connection.hand_over(), connection.destination, connection.description, tls)

    def _open_udp(self, message: dict[str, Any], infos: list[Any]) -> Connection:
        connection = UdpConnection(
            UdpSocketState(message["id"], UdpMode(message["mode"]), UDP_SEND_WINDOW), self._table.emit, self._table.gone,
            self._admission.peer_check(message, "udp-bind"),
        )
        connection.start(message, infos)
        return connection

    def _listen(self, message: dict[str, Any], infos: list[Any]) -> Connection:
        requester = {k: message[k] for k in ("origin", "tabId", "frameId", "incognito")}

        def new_connection(socket_id: int) -> TcpConnection:
            connection = self._tcp(socket_id)
            self._table.reserved.pop(socket_id, None)
            self._table.add(socket_id, connection, requester)
            return connection

        certificate: ServedCertificate | None = None
        if message.get("secureTransport") == "on":
            try:
                site = normalize_origin(message["origin"])
                # A private window's never touches the disk nor matches the normal window's.
                certificates = self.private_certificates if message["incognito"] else self._certificates
                certificate = certificates.for_site(site)
            except (OSError, ValueError) as exc:
                log.warning("no server certificate for %s: %s", message["origin"], exc)
                listener = TcpListener(ListenState(message["id"]), self._table.emit, self._table.gone, new_connection)
                self._table.spawn(listener.fail(f"making the site's server certificate: {exc}"))
                return listener
        listener = TcpListener(
            ListenState(message["id"]), self._table.emit, self._table.gone, new_connection, certificate, self._admission.peer_check(message, "tcp-listen"),
        )
        listener.start(message)
        return listener
