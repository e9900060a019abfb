"""The bulk WebSocket's control messages, without I/O: decoding what the page sends, encoding
what the host sends.

On a socket's bulk WebSocket, binary messages are the socket's bytes and text messages are
control: first the socket's secret (bare text, `schemas/bulk/secret.json`; from the host's own
frame, JSON with the page that embedded it, `schemas/bulk/frame_claim.json`), then JSON objects
described by `schemas/bulk/in/` (page to host: `read`, `shutdown`, `cancel`) and
`schemas/bulk/out/` (host to page: `attached`, `ack`, `eof`, `fin_sent`, `closed`, `error`).
A control message names no socket: the WebSocket speaks for the one its secret named.

A message that is not one of those gets the same codes as on native messaging (PROTOCOL.md,
"The bulk path"), raised as `ProtocolError`; the socket it arrived for then ends.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from .errors import Code, ProtocolError
from .framing import FrameError, parse_body
from .validation import check_bulk_inbound, is_bulk_secret, is_frame_claim

# The most bytes one control message may hold. The page's are under 60; this bounds what a
# hostile one costs to parse (JSON nesting included) long before the 1 MiB a frame may carry.
MAX_CONTROL = 1024
# The most bytes a first message may hold: a secret is 43, a frame's claim under 400.
MAX_CLAIM = 512


def decode_control(text: bytes) -> dict[str, Any]:
    """A text message from the page, checked against its schema; raises `ProtocolError` with
    FRAME_TOO_LARGE, INVALID_UTF8, INVALID_JSON, NOT_AN_OBJECT, UNKNOWN_TYPE or
    SCHEMA_VIOLATION."""
    if len(text) > MAX_CONTROL:
        raise ProtocolError(Code.FRAME_TOO_LARGE, f"bulk path: a control message of {len(text)} bytes exceeds {MAX_CONTROL}")
    return dict(_checked(bytes(text)))


# A page sends the same few texts again and again (its reader's credit, `{"type":"read",
# "bytes":65536}`, once per chunk it reads): checking one against its schema costs about 34 us,
# a sixth more of the relay's CPU per GiB (bench/run.py). The check is a function of the text
# alone, so its answer for a recent text is kept; errors are not, and are raised each time.
@functools.lru_cache(maxsize=64)
def _checked(text: bytes) -> dict[str, Any]:
    event = parse_body(text)
    if isinstance(event, FrameError):
        raise ProtocolError(event.code, f"bulk path: {event.detail}")
    try:
        check_bulk_inbound(event.body)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, f"bulk path: {exc.detail}") from exc
    return event.body


def decode_claim(text: bytes, from_frame: bool) -> tuple[str, str | None] | None:
    """The first message on a bulk WebSocket: the secret, and the page a frame of the host's
    claims for (None from any other origin); None if it is not of its form. What is not is
    never parsed beyond its size (MAX_CLAIM)."""
    if len(text) > MAX_CLAIM:
        return None
    decoded = text.decode("utf-8", "replace")
    if not from_frame:
        return (decoded, None) if is_bulk_secret(decoded) else None
    try:
        claim = json.loads(decoded)
    except (ValueError, RecursionError):
        return None
    return (claim["secret"], claim["page"]) if is_frame_claim(claim) else None


def encode_control(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
