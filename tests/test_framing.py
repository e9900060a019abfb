"""The framing core, fed byte by byte and in every split."""

from __future__ import annotations

import json

import pytest

from direct_sockets.protocol.errors import Code
from direct_sockets.protocol.framing import HEADER, FrameDecoder, FrameError, FrameTooLarge, Message, encode, parse_body


def frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return HEADER.pack(len(body)) + body


def test_roundtrip_through_every_split_point() -> None:
    stream = frame({"type": "a", "n": 1}) + frame({"type": "b", "s": "é€"}) + frame({})
    expected = [Message({"type": "a", "n": 1}), Message({"type": "b", "s": "é€"}), Message({})]
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == expected
        assert decoder.pending == 0


def test_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    events = []
    for byte in frame({"x": [1, 2, 3]}) * 3:
        events += decoder.feed(bytes([byte]))
    assert events == [Message({"x": [1, 2, 3]})] * 3


def test_oversized_frame_is_skipped_and_stream_stays_in_step() -> None:
    decoder = FrameDecoder(max_frame=10)
    big = HEADER.pack(1000) + b"x" * 1000
    events = decoder.feed(big[:500])
    assert events == [FrameError(Code.FRAME_TOO_LARGE, "frame of 1000 bytes exceeds 10")]
    assert decoder.pending == 504  # bytes still to skip
    assert decoder.feed(big[500:] + frame({"a": 1})) == [Message({"a": 1})]
    assert decoder._buffer == bytearray()  # nothing of the big frame was held


def test_exactly_at_limit_is_accepted() -> None:
    body = b'{"k":"' + b"v" * 4 + b'"}'
    decoder = FrameDecoder(max_frame=len(body))
    assert decoder.feed(HEADER.pack(len(body)) + body) == [Message({"k": "vvvv"})]


def test_truncated_frame_leaves_pending_bytes() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(frame({"a": 1})[:-2]) == []
    assert decoder.pending > 0
    decoder2 = FrameDecoder()
    assert decoder2.feed(b"\x01\x00") == [] and decoder2.pending == 2


def test_empty_body_is_invalid_json() -> None:
    decoder = FrameDecoder()
    [event] = decoder.feed(HEADER.pack(0))
    assert isinstance(event, FrameError) and event.code is Code.INVALID_JSON


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"\xc3\x28", Code.INVALID_UTF8), (b"nul", Code.INVALID_JSON), (b"12", Code.NOT_AN_OBJECT), (b"null", Code.NOT_AN_OBJECT),
     (b"[" * 50000, Code.INVALID_JSON), (b'{"seq": ' + b"1" * 5000 + b"}", Code.INVALID_JSON)],
)
def test_bad_bodies(body: bytes, code: Code) -> None:
    event = parse_body(body)
    assert isinstance(event, FrameError) and event.code is code


def test_encode_refuses_oversized_outgoing_message() -> None:
    assert len(encode({"d": "x" * 100}, max_frame=200)) > 100
    with pytest.raises(FrameTooLarge):
        encode({"d": "x" * 300}, max_frame=200)


def test_largest_data_chunk_fits_the_browser_limit() -> None:
    import base64

    from direct_sockets.protocol.framing import MAX_OUTBOUND_FRAME
    from direct_sockets.protocol.wire import MAX_CHUNK as MAX_DATA_CHUNK

    message = {"type": "data", "id": 2**53 - 1, "data": base64.b64encode(b"\xff" * MAX_DATA_CHUNK).decode()}
    assert len(encode(message)) - HEADER.size <= MAX_OUTBOUND_FRAME
