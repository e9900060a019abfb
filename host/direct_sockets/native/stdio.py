"""Takes the protocol's file descriptors away from everything else in the process.

After `reserve()`, file descriptor 1 and `sys.stdout` point at stderr, so a stray `print` from
any library lands in the log instead of corrupting a frame, and descriptor 0 reads from
/dev/null. Only the returned descriptors carry the protocol.
"""

from __future__ import annotations

import os
import sys


def reserve() -> tuple[int, int]:
    """Returns (protocol_in, protocol_out)."""
    protocol_in = os.dup(0)
    protocol_out = os.dup(1)
    os.set_inheritable(protocol_in, False)
    os.set_inheritable(protocol_out, False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_in, protocol_out
