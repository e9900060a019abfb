"""Every transition of the UDP and listening-socket state machines."""

from __future__ import annotations

import pytest

from direct_sockets.protocol.errors import Code, ProtocolError
from direct_sockets.protocol.listen_state import MAX_PENDING_ACCEPTS, ListenState
from direct_sockets.protocol.tcp_state import Phase
from direct_sockets.protocol.udp_state import MAX_CREDIT, UdpMode, UdpSocketState, UdpWriteSide


def udp(mode: UdpMode = UdpMode.BOUND, window: int = 2) -> UdpSocketState:
    s = UdpSocketState(1, mode, window)
    s.connected()
    return s


def code_of(fn, *args) -> Code:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.code


@pytest.mark.parametrize(("op", "args"), [("page_send", (True,)), ("page_read", (1,)), ("page_shutdown", ()), ("page_cancel", ()), ("page_membership", (True,))])
def test_udp_nothing_before_open(op: str, args: tuple) -> None:
    s = UdpSocketState(1, UdpMode.BOUND, 2)
    assert code_of(getattr(s, op), *args) is Code.OUT_OF_ORDER


def test_udp_destination_rules_follow_the_mode() -> None:
    assert code_of(udp(UdpMode.BOUND).page_send, False) is Code.SCHEMA_VIOLATION
    assert code_of(udp(UdpMode.CONNECTED).page_send, True) is Code.SCHEMA_VIOLATION
    assert code_of(udp(UdpMode.CONNECTED).page_membership, True) is Code.OUT_OF_ORDER


def test_udp_window_counts_datagrams() -> None:
    s = udp(window=2)
    assert s.page_send(True) and s.page_send(True)
    assert code_of(s.page_send, True) is Code.WINDOW_EXCEEDED
    s.sent()
    assert s.page_send(True)
    assert s.datagrams_sent == 1


def test_udp_credit() -> None:
    s = udp()
    assert not s.may_receive
    s.page_read(2)
    s.received()
    s.received()
    assert not s.may_receive and s.datagrams_received == 2
    assert code_of(s.page_read, MAX_CREDIT + 1) is Code.WINDOW_EXCEEDED


def test_udp_failed_send_ends_the_writing_side_quietly() -> None:
    s = udp()
    s.page_send(True)
    s.send_failed()
    assert s.write_side is UdpWriteSide.FAILED and s.unacked == 0
    assert s.page_send(True) is False  # dropped: the page's writable is already errored
    s.page_shutdown()  # closing an errored writable is not a fault
    assert not s.finished
    s.page_cancel()
    assert s.finished


@pytest.mark.parametrize("order", ["cancel-first", "close-first"])
def test_udp_both_sides_end_then_close(order: str) -> None:
    s = udp()
    s.page_read(3)
    if order == "cancel-first":
        s.page_cancel()
    s.page_shutdown()
    assert code_of(s.page_shutdown) is Code.OUT_OF_ORDER
    assert code_of(s.page_send, True) is Code.OUT_OF_ORDER
    s.writing_closed()
    if order == "close-first":
        assert not s.finished
        s.page_cancel()
    assert s.finished and s.credit == 0
    s.close()
    assert s.phase is Phase.CLOSED


def test_listen_accepts_only_named_ids_in_order() -> None:
    s = ListenState(1)
    assert code_of(s.page_accept, 5) is Code.OUT_OF_ORDER
    s.listening()
    assert not s.may_accept
    s.page_accept(5)
    s.page_accept(6)
    assert code_of(s.page_accept, 6) is Code.SOCKET_ID_IN_USE
    assert s.may_accept and s.take_accept_id() == 5 and s.take_accept_id() == 6
    assert not s.may_accept and s.accepted == 2


def test_listen_pending_accepts_are_bounded() -> None:
    s = ListenState(1)
    s.listening()
    for i in range(MAX_PENDING_ACCEPTS):
        s.page_accept(100 + i)
    assert code_of(s.page_accept, 1) is Code.WINDOW_EXCEEDED


def test_listen_cancel_finishes_and_keeps_pending_ids_for_release() -> None:
    s = ListenState(1)
    s.listening()
    s.page_accept(9)
    s.page_cancel()
    assert s.finished and not s.may_accept and list(s.accept_ids) == [9]
    s.page_accept(10)  # crossed the cancel: ignored
    assert list(s.accept_ids) == [9]
    s.close()
    assert s.phase is Phase.CLOSED and not s.finished
