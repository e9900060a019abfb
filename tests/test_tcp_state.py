"""Every transition of the per-socket state machine."""

from __future__ import annotations

import pytest

from direct_sockets.protocol.errors import Code, ProtocolError
from direct_sockets.protocol.tcp_state import MAX_CREDIT, Phase, ReadSide, TcpSocketState, WriteSide


def opened(window: int = 100, chunk: int = 10) -> TcpSocketState:
    s = TcpSocketState(1, window, chunk)
    s.connected()
    return s


def code_of(fn, *args) -> Code:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.socket_id == 1
    return info.value.code


@pytest.mark.parametrize("op", ["page_send", "page_read", "page_shutdown", "page_cancel"])
def test_nothing_is_allowed_while_connecting(op: str) -> None:
    s = TcpSocketState(1, 100, 10)
    args = (5,) if op in ("page_send", "page_read") else ()
    assert code_of(getattr(s, op), *args) is Code.OUT_OF_ORDER
    assert s.read_budget == 0


@pytest.mark.parametrize("phase", [Phase.CLOSED, Phase.FAILED])
@pytest.mark.parametrize("op", ["page_send", "page_read", "page_shutdown", "page_cancel"])
def test_nothing_is_allowed_after_the_end(phase: Phase, op: str) -> None:
    s = opened()
    s.phase = phase
    args = (5,) if op in ("page_send", "page_read") else ()
    assert code_of(getattr(s, op), *args) is Code.OUT_OF_ORDER


def test_send_window_is_enforced_and_reopened_by_writes() -> None:
    s = opened(window=100)
    s.page_send(60)
    s.page_send(40)
    assert code_of(s.page_send, 1) is Code.WINDOW_EXCEEDED
    s.wrote(60)
    s.page_send(60)
    assert s.unacked == 100 and s.bytes_sent == 60


def test_credit_bounds_reading() -> None:
    s = opened(chunk=10)
    assert s.read_budget == 0
    s.page_read(25)
    assert s.read_budget == 10
    s.received(10)
    s.received(10)
    assert s.read_budget == 5
    s.received(5)
    assert s.read_budget == 0 and s.bytes_received == 25
    assert code_of(s.page_read, MAX_CREDIT + 1) is Code.WINDOW_EXCEEDED


def test_shutdown_sequence() -> None:
    s = opened()
    s.page_shutdown()
    assert s.write_side is WriteSide.SHUTTING
    assert code_of(s.page_send, 1) is Code.OUT_OF_ORDER
    assert code_of(s.page_shutdown) is Code.OUT_OF_ORDER
    s.fin_sent()
    assert s.write_side is WriteSide.SHUT
    assert not s.finished  # the read side is still open


@pytest.mark.parametrize("read_end", ["eof", "cancel"])
@pytest.mark.parametrize("order", ["read-first", "write-first"])
def test_both_sides_finished_closes(read_end: str, order: str) -> None:
    s = opened()
    s.page_read(5)

    def end_read() -> None:
        s.peer_eof() if read_end == "eof" else s.page_cancel()

    def end_write() -> None:
        s.page_shutdown()
        s.fin_sent()

    first, second = (end_read, end_write) if order == "read-first" else (end_write, end_read)
    first()
    assert not s.finished
    second()
    assert s.finished and s.credit == 0 and s.read_budget == 0
    s.close()
    assert s.phase is Phase.CLOSED and not s.finished


def test_peer_eof_leaves_writing_usable() -> None:
    s = opened()
    s.peer_eof()
    assert s.read_side is ReadSide.EOF
    s.page_send(10)
    s.page_read(5)  # a grant that crossed the eof: ignored
    assert s.credit == 0


def test_cancel_then_eof_keeps_cancelled() -> None:
    s = opened()
    s.page_cancel()
    s.peer_eof()
    s.page_cancel()
    assert s.read_side is ReadSide.CANCELLED


def test_failed_is_final() -> None:
    s = opened()
    s.page_read(5)
    s.failed()
    assert s.phase is Phase.FAILED and s.read_budget == 0 and not s.finished
