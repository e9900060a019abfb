"""The state of one TCP socket in the host, without I/O.

It decides what the page may do next and when the OS socket must close, following the close
table of the spec:

    writer.close()  -> shutdown: FIN after queued data is written
    writer.abort()  -> shutdown: FIN, queued data dropped (no RST)
    reader.cancel() -> cancel: the host stops reading; nothing happens at the OS level
    peer FIN        -> eof: the read side ends, the write side stays usable
    both finished   -> the OS socket is closed, then `closed` is reported

Flow control lives here too. `credit` is how many bytes the page has room for: the runtime
reads from the OS only while it is positive, and never more than it. `unacked` is how many
bytes the page has sent that are not yet handed to the OS: a page may not exceed the window.
"""

from __future__ import annotations

import enum

from .checks import Phase, require_open, require_order, require_within
from .errors import invariant


class ReadSide(enum.Enum):
    OPEN = "open"
    EOF = "eof"  # the peer sent FIN
    CANCELLED = "cancelled"  # the page stopped reading


class WriteSide(enum.Enum):
    OPEN = "open"
    SHUTTING = "shutting"  # shutdown asked; earlier sends are still being written
    SHUT = "shut"  # FIN sent


# The most a page may grant in total: it bounds what the host could ever hold for one socket.
MAX_CREDIT = 64 * 1024 * 1024


class TcpSocketState:
    def __init__(self, socket_id: int, send_window: int, max_chunk: int) -> None:
        self.id = socket_id
        self.send_window = send_window
        self.max_chunk = max_chunk
        self.phase = Phase.CONNECTING
        self.read_side = ReadSide.OPEN
        self.write_side = WriteSide.OPEN
        self.credit = 0
        self.unacked = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- what the page asks -------------------------------------------------------------------

    def page_send(self, size: int) -> None:
        require_open(self.phase, "send", self.id)
        require_order(self.write_side is WriteSide.OPEN, "send after shutdown", self.id)
        total = self.unacked + size
        require_within(total, self.send_window, f"{total} unacknowledged bytes exceed the window of {self.send_window}", self.id)
        self.unacked = total

    def page_read(self, size: int) -> None:
        require_open(self.phase, "read", self.id)
        if self.read_side is not ReadSide.OPEN:
            return  # the grant crossed an eof or a cancel on the way: nothing to do
        require_within(self.credit + size, MAX_CREDIT, f"read credit above {MAX_CREDIT}", self.id)
        self.credit += size

    def page_shutdown(self) -> None:
        require_open(self.phase, "shutdown", self.id)
        require_order(self.write_side is WriteSide.OPEN, "shutdown twice", self.id)
        self.write_side = WriteSide.SHUTTING

    def page_cancel(self) -> None:
        require_open(self.phase, "cancel", self.id)
        if self.read_side is ReadSide.OPEN:
            self.read_side = ReadSide.CANCELLED
            self.credit = 0

    # -- what the OS did ----------------------------------------------------------------------

    def connected(self) -> None:
        invariant(self.phase is Phase.CONNECTING, f"connected while {self.phase.value}", self.id)
        self.phase = Phase.OPEN

    def wrote(self, size: int) -> None:
        invariant(0 < size <= self.unacked, f"wrote {size} bytes with {self.unacked} unacknowledged", self.id)
        self.unacked -= size
        self.bytes_sent += size

    def fin_sent(self) -> None:
        invariant(self.write_side is WriteSide.SHUTTING, f"FIN sent while writing is {self.write_side.value}", self.id)
        self.write_side = WriteSide.SHUT

    def received(self, size: int) -> None:
        invariant(
            self.read_side is ReadSide.OPEN and 0 < size <= self.credit,
            f"received {size} bytes with reading {self.read_side.value} and {self.credit} credit", self.id,
        )
        self.credit -= size
        self.bytes_received += size

    def peer_eof(self) -> None:
        if self.read_side is ReadSide.OPEN:
            self.read_side = ReadSide.EOF
            self.credit = 0

    def failed(self) -> None:
        self.phase = Phase.FAILED

    # -- what follows -------------------------------------------------------------------------

    @property
    def read_budget(self) -> int:
        """How many bytes the runtime may read from the OS now (0: do not read)."""
        if self.phase is not Phase.OPEN or self.read_side is not ReadSide.OPEN:
            return 0
        return min(self.credit, self.max_chunk)

    @property
    def finished(self) -> bool:
        """Both sides ended cleanly: close the OS socket and report `closed`."""
        return (
            self.phase is Phase.OPEN
            and self.read_side is not ReadSide.OPEN
            and self.write_side is WriteSide.SHUT
        )

    def close(self) -> None:
        invariant(self.finished, "closed before both sides finished", self.id)
        self.phase = Phase.CLOSED
