"""The state of one listening TCP socket in the host, without I/O.

The page asks for connections one at a time, naming in advance the socket id each will have
(so every id on the native port is still chosen by the extension). The host accepts only while
such ids are waiting: a page that stops reading its server's stream leaves further connections
in the kernel's backlog. Cancelling the stream closes the listening socket; the connections it
accepted live on independently.
"""

from __future__ import annotations

import collections

from .checks import Phase, require_open, require_within
from .errors import Code, ProtocolError, invariant

MAX_PENDING_ACCEPTS = 64


class ListenState:
    def __init__(self, socket_id: int) -> None:
        self.id = socket_id
        self.phase = Phase.CONNECTING  # until listen() succeeds
        self.accept_ids: collections.deque[int] = collections.deque()
        self.accepted = 0
        self.cancelled = False

    def page_accept(self, socket_id: int) -> None:
        require_open(self.phase, "accept", self.id)
        if self.cancelled:
            return  # crossed the cancel on the way: nothing to do
        require_within(len(self.accept_ids) + 1, MAX_PENDING_ACCEPTS, f"more than {MAX_PENDING_ACCEPTS} accepts pending", self.id)
        if socket_id in self.accept_ids:
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} is already waiting", self.id)
        self.accept_ids.append(socket_id)

    def page_cancel(self) -> None:
        require_open(self.phase, "cancel", self.id)
        self.cancelled = True  # ids still waiting stay listed, for the session to release

    def listening(self) -> None:
        invariant(self.phase is Phase.CONNECTING, f"listening while {self.phase.value}", self.id)
        self.phase = Phase.OPEN

    def take_accept_id(self) -> int:
        invariant(bool(self.accept_ids), "a connection accepted with no id waiting for it", self.id)
        self.accepted += 1
        return self.accept_ids.popleft()

    @property
    def may_accept(self) -> bool:
        return self.phase is Phase.OPEN and not self.cancelled and bool(self.accept_ids)

    @property
    def finished(self) -> bool:
        """A listening socket has only a reading side: cancelling it ends the socket."""
        return self.phase is Phase.OPEN and self.cancelled

    def failed(self) -> None:
        self.phase = Phase.FAILED

    def close(self) -> None:
        invariant(self.finished, "closed before it was cancelled", self.id)
        self.phase = Phase.CLOSED
