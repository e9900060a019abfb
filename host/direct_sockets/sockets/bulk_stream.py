"""The bulk-path half of a TCP connection: its stream over a `PageLink` (docs/BULK.md).

A `TcpConnection` offered the bulk path holds one `BulkStream`. The stream is what the transport
sees of the socket (`BulkSocket`: attach, what the page sends, the link's loss) and what the
connection asks of the link: acknowledgements gathered, byte counts for the popup, the end told
to the page, and the reading of a plain socket straight onto the link. It knows the connection
only as a `StreamOwner`, and the transport only through bulk_link.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from typing import Any, Awaitable, Callable, Protocol

from ..protocol.errors import Code, ProtocolError
from ..protocol.tcp_state import Phase, ReadSide, TcpSocketState
from ..protocol.wire import BULK_CHUNK
from .bulk_link import ChannelClosed, Offers, PageLink
from .connection import Emit

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0  # seconds between byte counts of a bulk socket, for the popup


@functools.cache
def read_buffer() -> memoryview:
    """Where plain sockets on the bulk path read into, one for the whole host: each read is
    framed (copied) for its link before the next one, in the same callback. A fresh buffer
    per read cost a map, a remap and an unmap of up to 1 MiB for every few bytes read
    (docs/BULK.md)."""
    return memoryview(bytearray(BULK_CHUNK))


class StreamOwner(Protocol):
    """The TCP connection, as its bulk stream sees it: the page's requests, already allowed by
    nothing but the socket's state, and the ways the socket ends."""

    state: TcpSocketState

    @property
    def id(self) -> int: ...

    @property
    def has_os_socket(self) -> bool: ...

    def credit(self, size: int) -> None: ...

    def send(self, data: bytes) -> None: ...

    def shutdown(self, abort: bool) -> None: ...

    def cancel(self) -> None: ...

    def release(self) -> None: ...

    async def fail(self, detail: str, code: Code = Code.NETWORK_ERROR, name: str = "NetworkError") -> None: ...


class BulkStream:
    def __init__(
        self, owner: StreamOwner, offers: Offers, message_size: int, spawn: Callable[[Awaitable[None]], None], emit: Emit,
    ) -> None:
        self._owner = owner
        self._offers = offers
        self._message_size = message_size
        self._spawn = spawn
        self._emit = emit
        self.link: PageLink | None = None
        self._ending: PageLink | None = None  # after the socket ended: told of the end, then closed
        # Until the link attaches or is declined the stream waits, so that it never travels
        # two ways at once.
        self.decided = asyncio.Event()
        self.decided.set()
        # While a plain socket is read onto the link: how to wake that reading when credit
        # comes, and how to stop it (`pump`).
        self._pump: tuple[Callable[[], None], Callable[[], None]] | None = None
        self._unreported = 0  # bytes written and not yet acknowledged
        self._ack_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # known once attached

    @property
    def id(self) -> int:
        return self._owner.id

    async def offer(self, window: int) -> dict[str, Any] | None:
        """`opened.bulk`, or None when the transport cannot run."""
        offer = await self._offers.offer(self)
        if offer is None:
            return None
        self.decided.clear()
        return {**offer, "window": window}

    # -- the transport's side (`BulkSocket`) --------------------------------------------------

    def decline(self, reason: str) -> None:
        self._offers.withdraw(self)
        if not self.decided.is_set() and self.link is None:
            log.info("socket %d stays on native messaging: %s", self.id, reason)
            self.decided.set()

    def attach(self, link: PageLink) -> bool:
        if self.decided.is_set() or not self._owner.has_os_socket:
            return False
        self.link = link
        self._loop = asyncio.get_running_loop()
        # A WebSocket has no 1 MiB message limit to keep under: larger reads, fewer messages, up
        # to the size the extension says suits its browser (Firefox: 64 KiB, docs/BULK.md).
        self._owner.state.max_chunk = self._message_size
        link.send_control({"type": "attached", "id": self.id})
        self.decided.set()
        self._spawn(self._report_bytes())
        log.info("socket %d: its stream moved to the bulk path", self.id)
        return True

    def from_page(self, message: bytes | dict[str, Any]) -> bool:
        try:
            if isinstance(message, dict):
                self._control(message)
            elif not message:  # as on native messaging, where `data` is 1 byte or more
                raise ProtocolError(Code.SCHEMA_VIOLATION, "bulk path: an empty binary message", self.id)
            else:
                self._owner.send(message)
        except ProtocolError as exc:
            self.page_fault(exc)
            return False
        return True

    def _control(self, message: dict[str, Any]) -> None:
        # Checked against schemas/bulk/in/ by the transport: one of these three.
        kind = message["type"]
        if kind == "read":
            self._owner.credit(message["bytes"])
        elif kind == "shutdown":
            self._owner.shutdown(bool(message.get("abort")))
        elif kind == "cancel":
            self._owner.cancel()
        else:
            raise ProtocolError(Code.INTERNAL_ERROR, f"bulk path: {kind!r} passed the schema unhandled", self.id)

    def page_fault(self, error: ProtocolError) -> None:
        self._spawn(self._owner.fail(error.detail, error.code))

    def link_lost(self, link: PageLink) -> None:
        if self._ending is link:
            self._ending = None
        if self.link is link and self._owner.state.phase not in (Phase.CLOSED, Phase.FAILED):
            # The page (or the frame's content script) went away without a word: as a release.
            log.info("socket %d: its link closed; releasing it", self.id)
            self._owner.release()

    # -- for the connection -------------------------------------------------------------------

    async def _report_bytes(self) -> None:
        """The background no longer sees this socket's bytes pass: the popup's counters come
        from here, about once a second while they change."""
        reported = (0, 0)
        while self.link is not None:
            await asyncio.sleep(STATS_INTERVAL)
            state = self._owner.state
            counts = (state.bytes_sent, state.bytes_received)
            if counts != reported and self.link is not None:
                reported = counts
                await self._emit({"type": "stats", "id": self.id, "sent": counts[0], "received": counts[1]})

    def wrote(self, size: int, more_queued: bool) -> None:
        """Bytes handed to the kernel. Acknowledgements only open the page's send window, so
        they are gathered: the writes of one turn of the event loop share one, and none waits
        for more than a quarter of the window."""
        state = self._owner.state
        state.wrote(size)
        self._unreported += size
        if self._unreported >= state.send_window // 4:
            self.ack()
        elif self._ack_handle is None and not more_queued:  # else the write loop's last write does it
            self._ack_handle = (self._loop or asyncio.get_running_loop()).call_soon(self.ack)

    def ack(self) -> None:
        """Sends what is gathered now."""
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        if self._unreported and self.link is not None:
            try:
                self.link.send_control({"type": "ack", "id": self.id, "bytes": self._unreported})
            except ChannelClosed:
                return  # the page is gone: the link's loss releases the socket
            self._unreported = 0

    def wake(self) -> None:
        """The page granted credit or stopped reading."""
        if self._pump is not None:
            self._pump[0]()

    def tell_end(self, message: dict[str, Any]) -> bool:
        """Tells the page how the socket ended (`closed` or `error`), on the link that carried
        its stream, and closes that link; False when there is none."""
        link = self._ending
        if link is None:
            return False
        # The link may be the page's own WebSocket: it gets what a page may know, no reason.
        told = {k: v for k, v in message.items() if k not in ("detail", "code", "bulk")}
        try:
            link.send_control(told)
        except ChannelClosed:
            pass
        self.close_ending("socket ended")
        return True

    def close_ending(self, reason: str) -> None:
        link, self._ending = self._ending, None
        if link is not None:
            link.close(reason)

    def teardown(self) -> None:
        """The socket is ending: nothing more streams; the link stays open just long enough to
        say how it ended (`tell_end`)."""
        if self._pump is not None:
            self._pump[1]()  # before the socket closes: its descriptor may be reused at once
        self._offers.withdraw(self)
        self._ending, self.link = self.link, None

    async def pump(self, sock: socket.socket, link: PageLink) -> object:
        """Reads a plain socket onto the link, until it ends; answers how: "eof", "gone" (the
        link), "cancelled", an `OSError` or a `ProtocolError` (for the connection to act on).
        The socket stays registered with the event loop while the page has credit and keeps up,
        and each read goes to the link in the callback that made it: no task switch and no
        registering anew for each read (docs/BULK.md, measured)."""
        loop = asyncio.get_running_loop()
        state = self._owner.state
        fd = sock.fileno()
        ended: asyncio.Future[object] = loop.create_future()
        registered = False
        buffer = read_buffer()

        def finish(how: object) -> None:
            stop()
            if not ended.done():
                ended.set_result(how)

        def stop() -> None:
            nonlocal registered
            if registered:
                registered = False
                loop.remove_reader(fd)

        def wake() -> None:
            nonlocal registered
            if ended.done():
                return
            if state.read_side is not ReadSide.OPEN:
                finish("cancelled")
            elif not registered and state.read_budget and not link.paused:
                registered = True
                loop.add_reader(fd, readable)

        async def wake_when_drained() -> None:
            try:
                await link.drain()
            except ChannelClosed:
                finish("gone")
                return
            wake()

        def readable() -> None:
            budget = state.read_budget
            if budget == 0:  # the page has not granted more: its next `read` wakes us
                stop()
                wake()
                return
            try:
                size = sock.recv_into(buffer, budget)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                finish(exc)
                return
            if not size:
                finish("eof")
                return
            try:
                state.received(size)
                link.send_bytes(buffer[:size])
            except ChannelClosed:
                finish("gone")
                return
            except ProtocolError as exc:  # a broken invariant: raised in the task, not here
                finish(exc)
                return
            if link.paused:  # the page is behind: read again once the link drained
                stop()
                self._spawn(wake_when_drained())

        self._pump = (wake, stop)
        try:
            wake()
            return await ended
        finally:
            stop()
            self._pump = None
