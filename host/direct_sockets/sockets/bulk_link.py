"""The seam between a TCP socket and the bulk transport that may carry its stream.

The transport (bulk.py: a loopback WebSocket server) and the socket (tcp.py, with its bulk-path
half in bulk_stream.py) know each other only through these three interfaces, so that neither
module imports the other and the socket holds no WebSocket detail:

- `PageLink`: the transport as the socket sees it once attached: a pipe to the page for bytes
  and control messages (already decoded and checked: `protocol/bulk_control.py`).
- `BulkSocket`: the socket as the transport sees it: what claims an offer, and where what the
  page sends goes.
- `Offers`: the transport's server as the socket sees it: it makes and withdraws offers.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..protocol.errors import ProtocolError


class ChannelClosed(Exception):
    """The link to the page is closed or closing: nothing more can be sent on it."""


class PageLink(Protocol):
    @property
    def paused(self) -> bool:
        """Enough is buffered towards the page: the sender should wait for `drain()`."""
        ...

    def send_bytes(self, data: bytes | memoryview) -> None:
        """Sends `data` at once (the caller may reuse its memory when this returns); raises
        `ChannelClosed`."""

    def send_control(self, message: dict[str, Any]) -> None:
        """A control message (`schemas/bulk/out/`); raises `ChannelClosed`."""

    async def drain(self) -> None:
        """Waits while the page is behind; raises `ChannelClosed` when it is gone."""

    def close(self, reason: str) -> None:
        """The socket is done with the link (it ended, or moved on): a normal close."""


class BulkSocket(Protocol):
    @property
    def id(self) -> int: ...

    def attach(self, link: PageLink) -> bool:
        """The link claimed this socket's offer: the stream moves to it. False when it came too
        late (the stream stayed on native messaging, or the socket is gone)."""

    def from_page(self, message: bytes | dict[str, Any]) -> bool:
        """Bytes the page wrote, or a control message already checked against its schema.
        False once a fault ended the socket: nothing more is taken from that link."""

    def page_fault(self, error: ProtocolError) -> None:
        """The page sent what the control protocol does not allow: the socket ends with
        `error.code`."""

    def link_lost(self, link: PageLink) -> None:
        """The link closed (the page, or its frame, went away)."""

    def decline(self, reason: str) -> None:
        """No link will come: the stream stays on native messaging."""


class Offers(Protocol):
    async def offer(self, socket: BulkSocket) -> dict[str, str] | None:
        """Where and with what secret the page may attach (`opened.bulk`); None if the
        transport cannot run."""

    def withdraw(self, socket: BulkSocket) -> None: ...
