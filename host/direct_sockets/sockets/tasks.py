"""Background tasks that cannot fail unseen.

asyncio keeps a task's exception to itself until someone awaits the task, and nobody awaits the
host's background tasks (a socket's read and write loops, a decision, a prompt). Without this,
a bug there would end the task silently and leave the page waiting forever. `spawn` logs every
such exception with its traceback and hands it to `on_crash`, which fails what the task served:
the coroutine it returns (telling the page) runs as a task of the same set, watched the same way.
A socket and the session spawn through this one function.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

# Given the exception, it returns the coroutine that reports the failure (or None: nothing to run).
OnCrash = Callable[[BaseException], Awaitable[None] | None]


def spawn(tasks: set[asyncio.Task[None]], coro: Awaitable[None], what: str, on_crash: OnCrash | None = None) -> asyncio.Task[None]:
    """Runs `coro` as a task kept in `tasks` until it ends. If it raises (anything but being
    cancelled), the exception goes to the log, with `what` it served, and to `on_crash`, whose
    report then runs here too."""
    task: asyncio.Task[None] = asyncio.ensure_future(coro)
    tasks.add(task)

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("internal error in %s: %r", what, exc, exc_info=(type(exc), exc, exc.__traceback__))
        if on_crash is not None:
            try:
                report = on_crash(exc)
            except Exception:  # the report of a crash must not itself vanish
                log.exception("internal error while reporting the failure of %s", what)
                return
            if report is not None:
                spawn(tasks, report, f"reporting the failure of {what}")

    task.add_done_callback(done)
    return task


def socket_id_of(coro: Awaitable[None]) -> int | None:
    """The socket a session coroutine works for, read from its arguments before it runs (a
    `socket_id`, or the `message` or `request` that names one); None if it names none."""
    try:
        arguments = inspect.getcoroutinelocals(coro)  # type: ignore[arg-type]
    except TypeError:
        return None
    if isinstance(arguments.get("socket_id"), int):
        return arguments["socket_id"]
    message = arguments.get("message")
    request = arguments.get("request")
    if message is None and request is not None:
        message = getattr(request, "message", None)
    found = message.get("id") if isinstance(message, dict) else None
    return found if isinstance(found, int) else None
