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
import tempfile
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
IPV6_MULTICAST_ADDRESS = "fd00:d5::1"  # on the veth end inside the namespace


@dataclass(frozen=True)
class PrivateNetwork:
    active: bool
    reason: str  # why not, when not active
    resolver: bool = False  # /etc/resolv.conf points at the tests' own DNS server on 127.0.0.1


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
    return PrivateNetwork(True, "", resolver=_own_resolver())


def _own_resolver() -> bool:
    """A private mount namespace in which /etc/resolv.conf names 127.0.0.1, where the tests run
    their own DNS server (tests/support/dns.py): names resolve as a test says, and no lookup
    ever leaves the machine."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    try:
        subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
        fd, path = tempfile.mkstemp(prefix="direct-sockets-resolv-", suffix=".conf")
        with os.fdopen(fd, "w") as handle:
            handle.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        os.chmod(path, 0o644)
        subprocess.run(["mount", "--bind", path, "/etc/resolv.conf"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True
