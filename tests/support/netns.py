"""Runs the test session in a private network namespace that the tests create themselves.

Inside it there is only loopback (with a route for IPv4 multicast) and a veth pair whose two
ends both stay in the namespace (carrying a private IPv6 address, for IPv6 multicast, which
Linux does not loop back on `lo`). Nothing a test does can send a packet off this machine, and
multicast joins have somewhere to go that is not the machine's real interface.

It must run before the session starts any thread: unshare(2) moves only the calling thread,
and everything started later (servers, browsers, the host) inherits the namespace.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
IPV6_MULTICAST_ADDRESS = "fd00:d5::1"  # on the veth end inside the namespace


@dataclass(frozen=True)
class PrivateNetwork:
    active: bool
    reason: str  # why not, when not active


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def enter() -> PrivateNetwork:
    if os.environ.get("DIRECT_SOCKETS_TEST_NETNS") == "0":
        return PrivateNetwork(False, "DIRECT_SOCKETS_TEST_NETNS=0")
    if os.geteuid() != 0:
        return PrivateNetwork(False, "not root: cannot create a network namespace")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return PrivateNetwork(False, f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
    try:
        _ip("link", "set", "lo", "up")
        _ip("route", "add", "224.0.0.0/4", "dev", "lo")
        _ip("link", "add", "ds0", "type", "veth", "peer", "name", "ds1")
        _ip("link", "set", "ds0", "up")
        _ip("link", "set", "ds1", "up")
        _ip("-6", "addr", "add", f"{IPV6_MULTICAST_ADDRESS}/64", "dev", "ds0", "nodad")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return PrivateNetwork(False, f"setting up the namespace failed: {detail.strip()}")
    return PrivateNetwork(True, "")
