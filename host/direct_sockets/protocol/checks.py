"""What every socket's state machine checks of what the page asks, in one place.

A TCP socket, a UDP socket and a listener each refuse the same way: a message their phase does
not allow, or one that breaks an order (a second shutdown), is `OUT_OF_ORDER`; one that would
hold more than the page's allowance (the send window, read credit, waiting accepts) is
`WINDOW_EXCEEDED`. The state machines say what is checked; these say how it is refused.
"""

from __future__ import annotations

import enum

from .errors import Code, ProtocolError


class Phase(enum.Enum):
    """Where a socket is in its life, the same for every kind."""

    CONNECTING = "connecting"  # or binding, or listening: until the OS said yes
    OPEN = "open"
    CLOSED = "closed"  # both sides finished cleanly
    FAILED = "failed"  # an OS error or a release; nothing more happens


def require_open(phase: Phase, what: str, socket_id: int) -> None:
    """`what` is allowed only on an open socket."""
    if phase is not Phase.OPEN:
        raise ProtocolError(Code.OUT_OF_ORDER, f"{what} on a socket that is {phase.value}", socket_id)


def require_order(holds: bool, detail: str, socket_id: int) -> None:
    """A message that the socket's state does not allow now (a send after shutdown)."""
    if not holds:
        raise ProtocolError(Code.OUT_OF_ORDER, detail, socket_id)


def require_within(total: int, limit: int, detail: str, socket_id: int) -> None:
    """What the page would have the host hold (`total`) stays within its allowance."""
    if total > limit:
        raise ProtocolError(Code.WINDOW_EXCEEDED, detail, socket_id)
