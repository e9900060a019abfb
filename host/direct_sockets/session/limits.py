"""How many descriptors the host may use, and so how many sockets it may hold for pages.

A descriptor table that fills up does not fail loudly: `socket()` and `accept()` raise EMFILE
wherever they happen to be called. So the host raises its soft limit to the hard one when it
starts, and keeps its socket cap (`table.MAX_SOCKETS`) under that limit with room to spare for
what is not a page's socket: stdio, the log file, the event loop's own descriptors, the name
lookups' threads, the bulk server and its connections that have not claimed a socket yet.
"""

from __future__ import annotations

import logging
import resource

from ..sockets.bulk import MAX_UNCLAIMED

log = logging.getLogger(__name__)

# Where an unlimited hard limit is raised to: far above what SOCKET_CEILING sockets need.
NOFILE_CEILING = 65536
# Descriptors that are not a page's socket: stdio and the two protocol pipes, the log file,
# the event loop's selector and wake-up pipe, the bulk listener, up to 32 name-lookup threads
# (asyncio's default executor) each with a socket, and slack for TLS certificate probes.
BASE_DESCRIPTORS = 64
HEADROOM = BASE_DESCRIPTORS + MAX_UNCLAIMED
# A socket on the bulk path holds two descriptors: its own and its WebSocket's.
DESCRIPTORS_PER_SOCKET = 2
SOCKET_CEILING = 4096  # the cap when descriptors are plentiful
SOCKET_FLOOR = 16  # even a tiny limit serves a page or two (EMFILE then fails sockets cleanly)


def descriptor_target() -> int:
    """The soft limit the host runs with: the hard limit, or NOFILE_CEILING if that is
    unlimited; never lower than the soft limit it was given."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft > target:
        target = soft
    return target


def raise_descriptor_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to `descriptor_target()`; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = descriptor_target()
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # macOS refuses more than kern.maxfilesperproc
        log.warning("could not raise the descriptor limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def socket_cap(descriptors: int | None = None) -> int:
    """The most sockets the host holds for pages with `descriptors` available (by default the
    limit `raise_descriptor_limit()` sets), leaving HEADROOM for everything else."""
    available = descriptor_target() if descriptors is None else descriptors
    return max(SOCKET_FLOOR, min(SOCKET_CEILING, (available - HEADROOM) // DESCRIPTORS_PER_SOCKET))
