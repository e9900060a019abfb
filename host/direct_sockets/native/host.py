"""The native host process the browsers start: stdio in and out, until EOF or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import caller as caller_mod
from ..session import limits
from .. import paths
from ..session import table as session_table
from ..protocol.errors import Code
from ..protocol.framing import FrameDecoder, encode
from ..trust.permissions import PermissionStore
from ..trust.policy import PolicyFile
from ..session.private_log import PRIVATE, RedactPrivate
from ..sockets.server_certs import ServerCertificates
from ..session.router import Session

log = logging.getLogger("direct_sockets")


def setup_logging() -> None:
    level = getattr(logging, os.environ.get("DIRECT_SOCKETS_LOG", "INFO").upper(), logging.INFO)
    fmt = logging.Formatter("%(asctime)s direct-sockets[%(process)d] %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        paths.log_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        handlers.append(logging.handlers.RotatingFileHandler(paths.log_dir() / "host.log", maxBytes=1 << 20, backupCount=3))
    except OSError as exc:  # a read-only home must not stop the host
        print(f"direct-sockets: no log file: {exc}", file=sys.stderr)
    root = logging.getLogger("direct_sockets")
    root.setLevel(level)
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RedactPrivate())
        root.addHandler(handler)


class _Output(asyncio.Protocol):
    """The protocol's write side, with the pipe's flow control exposed as `drain()`."""

    def __init__(self) -> None:
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.transport: asyncio.WriteTransport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self._resumed.clear()

    def resume_writing(self) -> None:
        self._resumed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self._resumed.set()

    async def send(self, message: dict[str, Any]) -> None:
        if self.lost.is_set() or self.transport is None:
            return
        self.transport.write(encode(message))
        await self._resumed.wait()


class _Input(asyncio.Protocol):
    def __init__(self, on_data: Any) -> None:
        self._on_data = on_data
        self.eof = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        self.eof.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof.set()


# Inbound messages decoded and waiting for the session; past this the host stops reading.
INBOX_HIGH = 256


async def serve(
    fd_in: int, fd_out: int, store: PermissionStore, policy: PolicyFile | None = None, who: caller_mod.Caller | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    _, output = await loop.connect_write_pipe(_Output, os.fdopen(fd_out, "wb", buffering=0))
    session = Session(output.send, store, policy, certificates=ServerCertificates(paths.server_certificates_dir()))
    # Who may claim a socket's WebSocket: its own page, or the extension that started us.
    session.bulk.page_origin = lambda connection: session.requesters.get(connection.id, {}).get("origin")
    session.bulk.page_context = lambda connection: tuple(session.requesters.get(connection.id, {}).get(key) for key in ("tabId", "incognito"))
    if who is not None:
        session.bulk.for_caller(who.browser, who.extension)
    decoder = FrameDecoder()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    paused = False

    def on_data(data: bytes) -> None:
        nonlocal paused
        for event in decoder.feed(data):
            inbox.put_nowait(event)
        # A browser that sends without reading what we answer must not make us hold its
        # messages without bound: stop reading the pipe (it then blocks the browser's writes).
        if not paused and inbox.qsize() >= INBOX_HIGH:
            paused = True
            reader_transport.pause_reading()

    reader_transport, reader = await loop.connect_read_pipe(lambda: _Input(on_data), os.fdopen(fd_in, "rb", buffering=0))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)

    async def pump() -> None:
        # One message at a time, in order: a socket's sends and its shutdown must not overtake.
        nonlocal paused
        while (event := await inbox.get()) is not None:
            if paused and inbox.qsize() <= INBOX_HIGH // 2:
                paused = False
                reader_transport.resume_reading()
            # What a private window's message starts is logged without its site or destination.
            marked = PRIVATE.set(session.from_private_window(event))
            try:
                await session.handle_event(event)
            except Exception:  # a bug must cost one message, not every socket of the browser
                log.exception("internal error handling %r", event)
                await output.send({"type": "error", "code": int(Code.INTERNAL_ERROR), "message": "internal error"})
            finally:
                PRIVATE.reset(marked)

    pump_task = asyncio.create_task(pump())
    eof_task = asyncio.create_task(reader.eof.wait())
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({eof_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if eof_task.done():
        # Serve what arrived before the hang-up, then go.
        inbox.put_nowait(None)
        await asyncio.wait({pump_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if decoder.pending:
            log.warning("input ended inside a frame (%d bytes pending): truncated message dropped", decoder.pending)
        log.info("browser closed the connection; closing %d sockets", len(session.sockets))
    else:
        log.info("stopped by signal; closing %d sockets", len(session.sockets))
    for task in (pump_task, eof_task, stop_task):
        task.cancel()
    session.close_all()
    try:
        await asyncio.wait_for(session.bulk.close(), 2)
    except asyncio.TimeoutError:
        log.warning("the bulk path's server did not close in time")
    return 0


def run(fd_in: int, fd_out: int, argv: list[str], manifest: Path | None) -> int:
    """Serves the browser on the protocol descriptors that stdio.reserve() set aside."""
    setup_logging()
    try:
        who = caller_mod.identify(argv)
        if manifest is None:
            raise caller_mod.CallerRejected("no host manifest given (--manifest)")
        caller_mod.check(who, manifest)
    except caller_mod.CallerRejected as exc:
        log.error("refusing to serve: %s", exc)
        with os.fdopen(fd_out, "wb", buffering=0) as out:
            out.write(encode({"type": "error", "code": int(Code.CALLER_NOT_ALLOWED), "message": str(exc)}))
        return 2
    log.info("started by %s (%s) for %s", who.extension, who.browser, manifest)
    descriptors = limits.raise_descriptor_limit()
    # The cap assumed the limit could be raised; where it could not, it follows what we got.
    session_table.MAX_SOCKETS = min(session_table.MAX_SOCKETS, limits.socket_cap(descriptors))
    log.info("up to %d descriptors; at most %d sockets for pages", descriptors, session_table.MAX_SOCKETS)
    store = PermissionStore(paths.permissions_file())
    policy = PolicyFile(paths.policy_files())
    if policy.current() is not None:
        log.info("the administrator's policy is in force: %s", ", ".join(str(p) for p in policy.existing()))
    return asyncio.run(serve(fd_in, fd_out, store, policy, who))
