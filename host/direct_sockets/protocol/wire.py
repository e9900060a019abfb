"""The wire's numbers, defined once: what one message may carry and how much may be in flight.

The host enforces them and announces the page-facing ones in `hello` (`limits`, see
docs/PROTOCOL.md), so the extension uses the host's values instead of copies of its own. Also
here: decoding a message's base64 `data` against them, with the error a page's fault gets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

from .errors import Code, ProtocolError

MAX_CHUNK = 512 * 1024  # bytes of TCP data in one message, both ways
BULK_CHUNK = 1024 * 1024  # the same on the bulk path, a WebSocket (docs/BULK.md, bulk.MAX_FRAME)
SEND_WINDOW = 1024 * 1024  # unacknowledged TCP bytes a page may have in flight per socket
RECEIVE_WINDOW = 1024 * 1024  # TCP bytes the page grants the host ahead of its reader
BULK_RECEIVE_WINDOW = 4 * 1024 * 1024  # the same for a socket on the bulk path
BULK_SEND_WINDOW = 4 * 1024 * 1024  # the send window the host gives a socket that may go bulk
MAX_BULK_SEND_WINDOW = 16 * 1024 * 1024  # the most a page accepts as a bulk send window
UDP_SEND_WINDOW = 32  # unacknowledged datagrams a page may have in flight per socket
UDP_RECEIVE_WINDOW = 64  # datagrams the page grants the host ahead of its reader
MAX_DATAGRAM = 65507  # the most an IPv4 UDP datagram can carry: the most a page may send
ACCEPT_WINDOW = 4  # connections a server socket asks the host for ahead of its reader


def limits() -> dict[str, int]:
    """What `hello` announces (docs/PROTOCOL.md): the extension sizes its messages and windows
    by these, not by numbers of its own."""
    return {
        "maxChunk": MAX_CHUNK, "bulkChunk": BULK_CHUNK, "sendWindow": SEND_WINDOW, "receiveWindow": RECEIVE_WINDOW,
        "bulkReceiveWindow": BULK_RECEIVE_WINDOW, "maxBulkSendWindow": MAX_BULK_SEND_WINDOW,
        "udpSendWindow": UDP_SEND_WINDOW, "udpReceiveWindow": UDP_RECEIVE_WINDOW, "maxDatagram": MAX_DATAGRAM,
        "acceptWindow": ACCEPT_WINDOW,
    }


def decode_data(data: str, what: str, socket_id: int, limit: int, allow_empty: bool) -> bytes:
    """A message's base64 `data`, at most `limit` bytes; a page's fault otherwise."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: data: not base64: {exc}", socket_id) from exc
    if not raw and not allow_empty:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: data: empty", socket_id)
    if len(raw) > limit:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: data: over {limit} bytes", socket_id)
    return raw


def ip_literal(text: str, what: str, socket_id: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A field that must be an IP address, not a name; a page's fault otherwise."""
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{what}: not an IP address: {text!r}", socket_id) from exc
