"""The state of one UDP socket in the host, without I/O.

UDP has no FIN: the writing side simply ends when the page closes or aborts its writable (or
when a send fails), and the reading side when the page cancels its readable. When both have
ended the OS socket closes. Flow control counts datagrams: the host receives from the OS only
while the page has granted room, so a page that stops reading leaves datagrams to the kernel,
which drops them when its buffer is full, as UDP does; and a page may have at most `window`
datagrams sent and not yet handed to the OS.
"""

from __future__ import annotations

import enum

from .checks import Phase, require_open, require_order, require_within
from .errors import Code, ProtocolError, invariant


class UdpMode(enum.Enum):
    CONNECTED = "connected"
    BOUND = "bound"


class UdpWriteSide(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # the page closed its writable; earlier sends are still going out
    CLOSED = "closed"
    FAILED = "failed"  # a send failed; the page's writable is errored


MAX_CREDIT = 4096  # datagrams granted and not yet delivered


class UdpSocketState:
    def __init__(self, socket_id: int, mode: UdpMode, window: int) -> None:
        self.id = socket_id
        self.mode = mode
        self.window = window
        self.phase = Phase.CONNECTING
        self.reading = True
        self.write_side = UdpWriteSide.OPEN
        self.credit = 0
        self.unacked = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0

    # -- what the page asks -------------------------------------------------------------------

    def can_send(self, has_destination: bool) -> bool:
        """Whether a datagram may be sent now, without counting it (raises for a page that
        breaks the protocol; False when the writing side already failed)."""
        require_open(self.phase, "udp_send", self.id)
        if self.write_side is UdpWriteSide.FAILED:
            return False
        require_order(self.write_side is UdpWriteSide.OPEN, "udp_send after the writable closed", self.id)
        if has_destination != (self.mode is UdpMode.BOUND):
            raise ProtocolError(
                Code.SCHEMA_VIOLATION,
                "a bound socket's datagram names its destination; a connected socket's does not",
                self.id,
            )
        return True

    def page_send(self, has_destination: bool) -> bool:
        """Counts a datagram against the window. Returns False when the writing side has
        already failed: the page's writable is errored and the datagram is dropped."""
        if not self.can_send(has_destination):
            return False
        require_within(self.unacked + 1, self.window, f"more than {self.window} datagrams unacknowledged", self.id)
        self.unacked += 1
        return True

    def page_read(self, count: int) -> None:
        require_open(self.phase, "udp_read", self.id)
        if not self.reading:
            return
        require_within(self.credit + count, MAX_CREDIT, f"datagram credit above {MAX_CREDIT}", self.id)
        self.credit += count

    def page_shutdown(self) -> None:
        require_open(self.phase, "shutdown", self.id)
        if self.write_side is UdpWriteSide.FAILED:
            return  # the failure already ended the writing side
        require_order(self.write_side is UdpWriteSide.OPEN, "shutdown twice", self.id)
        self.write_side = UdpWriteSide.CLOSING

    def page_cancel(self) -> None:
        require_open(self.phase, "cancel", self.id)
        self.reading = False
        self.credit = 0

    def page_membership(self, join: bool) -> None:
        require_open(self.phase, "join" if join else "leave", self.id)
        require_order(self.mode is UdpMode.BOUND, "multicast needs a bound socket", self.id)

    # -- what the OS did ----------------------------------------------------------------------

    def connected(self) -> None:
        invariant(self.phase is Phase.CONNECTING, f"connected while {self.phase.value}", self.id)
        self.phase = Phase.OPEN

    def sent(self) -> None:
        invariant(self.unacked > 0, "a datagram sent that the page did not send", self.id)
        self.unacked -= 1
        self.datagrams_sent += 1

    def send_failed(self) -> None:
        self.unacked = 0
        self.write_side = UdpWriteSide.FAILED

    def writing_closed(self) -> None:
        invariant(self.write_side is UdpWriteSide.CLOSING, f"writing closed while {self.write_side.value}", self.id)
        self.write_side = UdpWriteSide.CLOSED

    def received(self) -> None:
        invariant(self.reading and self.credit > 0, f"a datagram received with reading {self.reading} and {self.credit} credit", self.id)
        self.credit -= 1
        self.datagrams_received += 1

    def failed(self) -> None:
        self.phase = Phase.FAILED

    # -- what follows -------------------------------------------------------------------------

    @property
    def may_receive(self) -> bool:
        return self.phase is Phase.OPEN and self.reading and self.credit > 0

    @property
    def finished(self) -> bool:
        return (
            self.phase is Phase.OPEN
            and not self.reading
            and self.write_side in (UdpWriteSide.CLOSED, UdpWriteSide.FAILED)
        )

    def close(self) -> None:
        invariant(self.finished, "closed before both sides finished", self.id)
        self.phase = Phase.CLOSED
