"""A session's sockets by id: the open ones and who asked for each, the ids being decided or
asked about, the ids a listener reserved, the ids that ended; the cap on all of them; and the
tasks the session runs for them.

A socket id is the page's name for one socket for the whole session: once used it is never
used again, and a page's message for an id that ended meanwhile is dropped quietly.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Awaitable, Callable

from . import limits
from ..protocol.errors import PAGE_MESSAGE, Code, ProtocolError
from ..sockets import tasks
from ..sockets.connection import Connection
from ..sockets.listener import TcpListener

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]

MAX_SOCKETS = limits.socket_cap()  # under the descriptor limit, with headroom (limits.py)
RECENTLY_ENDED = 4096  # ids whose late messages are dropped quietly


class SocketTable:
    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.sockets: dict[int, Connection] = {}
        # Who asked for each socket (origin, tab, frame, private window), as the extension
        # stamped it on the open; an accepted connection inherits its listener's.
        self.requesters: dict[int, dict[str, Any]] = {}
        # The addresses the decision core allowed each socket: STARTTLS and a certificate
        # prompt are decided on the address the socket is connected to.
        self.checked: dict[int, tuple[str, ...]] = {}
        self.waiting_sends: dict[int, list[int]] = {}  # per bound socket: datagrams, bytes waiting
        self.pending: dict[int, Any] = {}  # ids waiting for the user (prompts.PendingOpen)
        self.deciding: set[int] = set()  # opens being decided (a policy check, a name lookup)
        # Ids the page named in advance for connections a listening socket will accept.
        self.reserved: dict[int, int] = {}
        # A page's message can cross the host's report that its socket ended (an error, or
        # `closed`); such a message is expected, not a fault, so it is dropped without a reply.
        self.ended: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.tasks: set[asyncio.Task[None]] = set()
        # Called with the id of a socket that went away (the prompts forget its questions).
        self.on_gone: Callable[[int], None] = lambda _socket_id: None

    def id_taken(self, socket_id: int) -> bool:
        return (
            socket_id in self.sockets or socket_id in self.ended or socket_id in self.reserved
            or socket_id in self.pending or socket_id in self.deciding
        )

    def check_unused(self, socket_id: int, by: int | None = None) -> None:
        """A new socket's id was never used (`by`: the socket whose message named it, which the
        fault is reported on)."""
        if self.id_taken(socket_id):
            raise ProtocolError(Code.SOCKET_ID_IN_USE, f"socket id {socket_id} was used before", by)

    def check_room(self, socket_id: int) -> None:
        """The session may hold one more socket a page opens (open, deciding, asked about, or an
        id a listener keeps for a connection still to come)."""
        # (An open socket's question waits in `pending` too: the socket counts once.)
        asked = sum(1 for pending_id in self.pending if pending_id not in self.sockets)
        if len(self.sockets) + asked + len(self.deciding) + len(self.reserved) >= MAX_SOCKETS:
            raise ProtocolError(Code.TOO_MANY_SOCKETS, f"more than {MAX_SOCKETS} sockets", socket_id)

    def add(self, socket_id: int, connection: Connection, requester: dict[str, Any]) -> None:
        self.sockets[socket_id] = connection
        self.requesters[socket_id] = {**requester, "id": socket_id}

    def gone(self, socket_id: int) -> None:
        """A socket ended (its connection says so): its id is never used again."""
        connection = self.sockets.pop(socket_id, None)
        if connection is None:
            return
        self.requesters.pop(socket_id, None)
        self.checked.pop(socket_id, None)
        self.waiting_sends.pop(socket_id, None)
        self.on_gone(socket_id)
        self.mark_ended(socket_id)
        if isinstance(connection, TcpListener):
            for reserved in connection.state.accept_ids:
                self.reserved.pop(reserved, None)
                self.mark_ended(reserved)

    def mark_ended(self, socket_id: int) -> None:
        self.ended[socket_id] = None
        while len(self.ended) > RECENTLY_ENDED:
            self.ended.popitem(last=False)

    async def refuse(self, socket_id: int) -> None:
        # A page learns nothing about a destination it may not reach: one message for every
        # refusal, and the network untouched (security-model.md).
        self.mark_ended(socket_id)
        await self.emit(
            {"type": "error", "id": socket_id, "code": int(Code.NOT_ALLOWED), "name": "NotAllowedError", "message": PAGE_MESSAGE[Code.NOT_ALLOWED]}
        )

    async def network_error(self, socket_id: int, detail: str) -> None:
        log.warning("socket %d failed before opening: %s", socket_id, detail)
        self.mark_ended(socket_id)
        await self.emit(
            {"type": "error", "id": socket_id, "code": int(Code.NETWORK_ERROR), "name": "NetworkError", "message": PAGE_MESSAGE[Code.NETWORK_ERROR], "detail": detail}
        )

    def spawn(self, coro: Awaitable[None]) -> None:
        # A decision or a prompt that raises is logged with its traceback (tasks.py), and the
        # socket it worked for fails with the generic NetworkError rather than wait forever.
        socket_id = tasks.socket_id_of(coro)

        def crashed(exc: BaseException) -> Awaitable[None]:
            connection = self.sockets.get(socket_id) if socket_id is not None else None
            if connection is not None:
                report = connection.fail(f"internal error: {exc!r}", Code.INTERNAL_ERROR)
            elif socket_id is not None and socket_id not in self.ended:
                self.deciding.discard(socket_id)
                report = self.network_error(socket_id, f"internal error: {exc!r}")
            else:
                report = self.emit({"type": "error", "code": int(Code.INTERNAL_ERROR), "message": "internal error"})
            return report  # tasks.spawn runs it

        tasks.spawn(self.tasks, coro, f"the session (socket {socket_id})", crashed)

    def close_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        for connection in list(self.sockets.values()):
            connection.release()
