"""Native messaging framing, without I/O.

A frame is a 32-bit length in native byte order followed by that many bytes of UTF-8 JSON.
`FrameDecoder` takes bytes as they arrive and gives back events; it never holds more than one
frame's body, and a frame larger than its limit is skipped byte by byte without being buffered,
so the stream stays in step and the session goes on. `encode` builds one outgoing frame and
refuses one larger than the browsers accept.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Union

from .errors import Code

HEADER = struct.Struct("=I")  # native byte order, as both browsers write it

# Browser to host: our extension never sends a frame above ~1 MiB (data travels in chunks of at
# most wire.MAX_CHUNK bytes, base64-encoded). A little headroom, and nothing near Chrome's 64 MiB.
MAX_INBOUND_FRAME = 4 * 1024 * 1024
# Host to browser: both browsers drop the port on a message over 1 MiB.
MAX_OUTBOUND_FRAME = 1024 * 1024


@dataclass(frozen=True)
class Message:
    """A well-formed frame holding a JSON object."""

    body: dict[str, Any]


@dataclass(frozen=True)
class FrameError:
    """A frame that could not be turned into a message; the stream is still in step."""

    code: Code
    detail: str


Event = Union[Message, FrameError]


class FrameDecoder:
    """Turns a byte stream into messages. Feed it bytes; read `pending` at EOF."""

    def __init__(self, max_frame: int = MAX_INBOUND_FRAME) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._body_length: int | None = None  # set while a body is awaited
        self._skip = 0  # bytes of an oversized frame still to be thrown away

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (non-zero at EOF means a truncated frame)."""
        if self._skip:
            return self._skip
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        while view:
            if self._skip:
                dropped = min(self._skip, len(view))
                self._skip -= dropped
                view = view[dropped:]
                continue
            if self._body_length is None:
                need = HEADER.size - len(self._buffer)
                self._buffer += view[:need]
                view = view[need:]
                if len(self._buffer) < HEADER.size:
                    break
                (length,) = HEADER.unpack(self._buffer)
                self._buffer.clear()
                if length > self._max_frame:
                    self._skip = length
                    events.append(
                        FrameError(Code.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds {self._max_frame}")
                    )
                    continue
                self._body_length = length
            need = self._body_length - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) == self._body_length:
                # The frame is taken off before it is parsed: whatever parsing does, the stream
                # stays in step.
                body = bytes(self._buffer)
                self._buffer.clear()
                self._body_length = None
                events.append(parse_body(body))
        return events


def parse_body(body: bytes) -> Event:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return FrameError(Code.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError, not only JSONDecodeError: an integer past Python's digit limit raises the
        # plain one, and a frame that is not answered stays in the decoder for good.
        return FrameError(Code.INVALID_JSON, f"invalid JSON: {str(exc)[:200]}")
    if not isinstance(value, dict):
        return FrameError(Code.NOT_AN_OBJECT, f"a message must be a JSON object, not {type(value).__name__}")
    return Message(value)


class FrameTooLarge(ValueError):
    pass


def encode(message: dict[str, Any], max_frame: int = MAX_OUTBOUND_FRAME) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) > max_frame:
        raise FrameTooLarge(f"outgoing message of {len(body)} bytes exceeds {max_frame}")
    return HEADER.pack(len(body)) + body
