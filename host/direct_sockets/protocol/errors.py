"""Stable, numbered error codes of the native messaging protocol.

The numbers are part of the protocol (docs/PROTOCOL.md lists them): never renumber, only add.
1xx are faults in a message or in the session; 2xx are the outcome of a socket operation,
and carry the DOMException name that the page must see.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    # The frame or its JSON.
    INVALID_JSON = 100
    NOT_AN_OBJECT = 101
    FRAME_TOO_LARGE = 102
    INVALID_UTF8 = 103
    # The message.
    UNKNOWN_TYPE = 110
    SCHEMA_VIOLATION = 111
    # The session.
    HANDSHAKE_REQUIRED = 120
    VERSION_UNSUPPORTED = 121
    CALLER_NOT_ALLOWED = 122
    ALREADY_GREETED = 123
    # A socket id in a message.
    UNKNOWN_SOCKET = 130
    SOCKET_ID_IN_USE = 131
    OUT_OF_ORDER = 132
    WINDOW_EXCEEDED = 133
    TOO_MANY_SOCKETS = 134
    WRONG_KIND = 135
    # The host itself.
    INTERNAL_ERROR = 190
    # Socket outcomes, as the page sees them.
    NOT_ALLOWED = 200
    NETWORK_ERROR = 201


# Messages shown to the page. They are deliberately generic: the page must not learn whether a
# destination exists, is open or was refused (security-model.md, "What errors reveal"); details
# go to the host log.
PAGE_MESSAGE: dict[Code, str] = {
    Code.NOT_ALLOWED: "Permission denied.",
    Code.NETWORK_ERROR: "Network error.",
}


class ProtocolError(Exception):
    """A message that breaks the protocol. The session answers it with an error message."""

    def __init__(self, code: Code, detail: str, socket_id: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.socket_id = socket_id


def invariant(holds: bool, detail: str, socket_id: int | None = None) -> None:
    """What the host's own code guarantees (never what a page sends): when it does not hold,
    a `ProtocolError` with code 190 fails that socket cleanly, where an `assert` would vanish
    under `python -O` or leave the socket half-updated."""
    if not holds:
        raise ProtocolError(Code.INTERNAL_ERROR, f"broken invariant: {detail}", socket_id)
