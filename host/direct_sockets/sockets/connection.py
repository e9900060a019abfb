"""What every socket the host holds for a page has in common: its tasks, and how it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Awaitable, Callable, Protocol

from . import tasks
from ..protocol.errors import PAGE_MESSAGE, Code, ProtocolError
from ..protocol.tcp_state import Phase

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class State(Protocol):
    id: int
    phase: Phase

    @property
    def finished(self) -> bool: ...

    def failed(self) -> None: ...

    def close(self) -> None: ...


class Connection:
    kind = "socket"

    def __init__(self, state: State, emit: Emit, on_gone: Callable[[int], None]) -> None:
        self.state = state
        self._emit = emit
        self._on_gone = on_gone
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.description = ""

    @property
    def id(self) -> int:
        return self.state.id

    async def _connect_first(self, infos: list[Any], prepare: Callable[[socket.socket], None], what: str) -> bool:
        """Connects to the first of the checked addresses that answers, each socket prepared
        (options set) before connecting. False, with the page told, when none did."""
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for family, kind, proto, _, address in infos:
            try:
                # Inside the `try`: out of descriptors (EMFILE, ENFILE) or buffers is a failure
                # of this socket that the page hears of, not a task that dies unseen.
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                last_error = exc
                continue
            try:
                sock.setblocking(False)
                prepare(sock)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            except BaseException:
                sock.close()
                raise
            self._sock = sock
            return True
        await self.fail(f"connecting to {what}: {last_error or 'no address'}")
        return False

    def _spawn(self, coro: Awaitable[None]) -> None:
        tasks.spawn(self._tasks, coro, f"{self.kind} {self.id}", self._crashed)

    def _crashed(self, exc: BaseException) -> Awaitable[None]:
        """A task of this socket raised (a bug, or an invariant broken): the socket fails, the
        page gets the generic `NetworkError`, the log has the traceback (`tasks.spawn`)."""
        detail = exc.detail if isinstance(exc, ProtocolError) else f"internal error: {exc!r}"
        return self.fail(detail, Code.INTERNAL_ERROR)

    def _os_socket(self) -> socket.socket:
        """The OS socket, which the caller's phase guarantees; a broken guarantee is an
        internal error that fails this socket (never an `assert`, which `python -O` drops)."""
        if self._sock is None:
            raise ProtocolError(Code.INTERNAL_ERROR, f"{self.kind} {self.id}: no OS socket here", self.id)
        return self._sock

    async def _maybe_finish(self) -> None:
        """Both sides ended cleanly: close the OS socket and report `closed`."""
        if not self.state.finished:
            return
        self.state.close()
        self._teardown()
        log.info("%s %d closed", self.kind, self.id)
        await self._emit_end({"type": "closed", "id": self.id})

    async def fail(self, detail: str, code: Code = Code.NETWORK_ERROR, name: str = "NetworkError") -> None:
        """An OS error or a protocol fault: the socket is gone and the page gets `name`."""
        if self.state.phase in (Phase.CLOSED, Phase.FAILED):
            return
        self.state.failed()
        self._teardown()
        # The page sees a generic message, whatever went wrong (a refusal, a reset, a fault in
        # what the extension sent); the details are for the log (security-model.md).
        log.warning("%s %d (%s) failed (%d): %s", self.kind, self.id, self.description, code, detail)
        message = PAGE_MESSAGE[Code.NOT_ALLOWED if name == "NotAllowedError" else Code.NETWORK_ERROR]
        await self._emit_end({"type": "error", "id": self.id, "code": int(code), "name": name, "message": message, "detail": detail})

    async def _emit_end(self, message: dict[str, Any]) -> None:
        """How the socket's end (`closed`, or an `error`) reaches the extension."""
        await self._emit(message)

    def release(self) -> None:
        """The page is gone or closed the socket: close it now, say nothing."""
        if self.state.phase not in (Phase.CLOSED, Phase.FAILED):
            self.state.failed()
        self._teardown()

    def _teardown(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._on_gone(self.id)


def family_for(dns_query_type: str | None) -> int:
    return {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(dns_query_type or "", socket.AF_UNSPEC)


def set_buffer_sizes(sock: socket.socket, options: dict[str, Any]) -> None:
    if "sendBufferSize" in options:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(options["sendBufferSize"], 2**31 - 1))
    if "receiveBufferSize" in options:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(options["receiveBufferSize"], 2**31 - 1))
