"""UDPSocket, TCPServerSocket and MulticastController through the real extension and host, in
real headless Chromium and Firefox. The first three mirror the web-platform-tests of the draft."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.browser.harness import Browser

pytestmark = pytest.mark.browser


def test_server_and_client_echo_both_ways_and_close_cleanly(browser: Browser) -> None:
    browser.grant("127.0.0.1:*", kind="tcp-listen")
    browser.grant("127.0.0.1:*")
    r = browser.run("serverEcho")
    assert r == {
        "localAddress": "127.0.0.1", "localPortValid": True, "isTCPSocket": True,
        "atServer": "ping from client", "atClient": "pong from server",
        "serverClosed": {"ok": True}, "serverSawEnd": True, "clientSawEnd": True,
        "closedBoth": [{"ok": True}, {"ok": True}],
        "acceptedRemotePortMatches": True, "acceptedLocalPortMatches": True, "acceptedRemoteAddress": "127.0.0.1",
    }


def test_bound_and_connected_exchange_150_datagrams(browser: Browser) -> None:
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="udp")
    r = browser.run("udpExchange", count=150, timeout=120)
    assert r["problems"] == []
    assert r["closed"] == [{"ok": True}, {"ok": True}]
    assert r["connectedInfo"] == {"remoteAddress": "127.0.0.1", "remotePort": True, "hasMulticast": False}
    assert r["boundInfo"] == {"localAddress": "127.0.0.1", "hasRemote": False, "controller": "[object MulticastController]"}


def test_multicast_two_receivers_sharing_a_port(browser: Browser, private_network: object) -> None:
    group = "239.255.77.1"
    browser.grant("0.0.0.0:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant(group, kind="multicast")
    browser.grant(f"{group}:*", kind="udp")
    r = browser.run("multicast", group=group, count=30, timeout=120)
    expected = [f"datagram {n}" for n in range(30)]
    assert r["got"] == [expected, expected]
    assert r["joinedGroups"] == [group] and r["frozen"] is True
    assert r["listedWhileJoining"] == 0 and r["afterLeave"] == []
    assert r["sourceSpecific"] == [{"groupAddress": group, "sourceAddress": "192.0.2.1"}]
    assert r["errors"] == {
        "badGroup": "TypeError", "notIp": "TypeError", "leaveNotJoined": "InvalidStateError",
        "joinWhileJoining": "InvalidStateError", "joinTwice": "InvalidStateError", "badSource": "TypeError",
        "leaveWithoutSource": "InvalidStateError", "joinAfterClose": "InvalidStateError",
    }


def test_udp_message_rules(browser: Browser) -> None:
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="udp")
    assert browser.run("udpMessageRules") == {
        "connectedWithAddress": "TypeError", "boundWithoutAddress": "TypeError",
        "notBuffer": "TypeError", "notObject": "TypeError", "emptyOk": "ok",
    }


def test_udp_and_server_refusals(browser: Browser) -> None:
    # Grants that cover nothing asked below: wrong port ranges, a send to an ungranted port.
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="tcp-listen")
    r, shown = browser.run_answering("udpNotAllowed", ["deny", "deny"], port=9)
    assert [w["action"] for w in shown] == ["wants to exchange UDP datagrams with"] * 2  # connecting, then a bound send
    denied = {"ok": False, "error": {"name": "NotAllowedError", "message": "Permission denied.", "isDOMException": True}}
    assert r["connected"] == denied
    assert r["lowBound"] == denied
    assert r["lowServer"] == denied
    assert r["ungrantedSend"] == denied


def test_constructor_validation(browser: Browser) -> None:
    r = browser.run("udpValidation")
    assert r["udp"] == {
        "none": "TypeError", "empty": "TypeError", "onlyRemoteAddress": "TypeError", "onlyRemotePort": "TypeError",
        "bothModes": "TypeError", "localPortWithoutAddress": "TypeError", "localPortZero": "TypeError",
        "localAddressName": "TypeError", "dnsInBound": "TypeError", "ipv6OnlyNotAny": "TypeError",
        "ipv6OnlyConnected": "TypeError", "remotePortRange": "TypeError", "ttlRange": "TypeError",
        "sendBufferZero": "TypeError", "connectedOk": "ok", "boundOk": "ok", "ipv6OnlyOnAny": "ok", "ipv6Expanded": "ok",
    }
    assert r["server"] == {
        "noArgs": "TypeError", "name": "TypeError", "portZero": "TypeError", "backlogZero": "TypeError",
        "ipv6OnlyNotAny": "TypeError", "portRange": "TypeError", "ok": "ok", "ipv6OnlyFalseOk": "ok",
    }
    assert r["shapes"] == [
        ["UDPSocket", "function", ["close", "closed", "opened"]],
        ["TCPServerSocket", "function", ["close", "closed", "opened"]],
        ["MulticastController", "function", ["joinGroup", "joinedGroups", "leaveGroup"]],
    ]
    assert r["controllerConstructible"] == "TypeError"


def test_100000_datagrams_to_a_page_that_keeps_up(browser: Browser) -> None:
    """None merged, split or reordered. The sender keeps at most 300 in flight (acknowledged by
    the page every 100), so the kernel never has to drop for lack of buffer."""
    total = 100_000
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.settimeout(60)
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant(f"127.0.0.1:{sender.getsockname()[1]}", kind="udp")
    errors: list[BaseException] = []

    def send() -> None:
        try:
            hello, page = sender.recvfrom(100)
            assert hello == b"hello"
            acked = sent = 0
            while sent < total:
                while sent < total and sent - acked < 300:
                    sender.sendto(sent.to_bytes(4, "big") * (1 + sent % 8), page)
                    sent += 1
                reply, _ = sender.recvfrom(100)
                if reply != b"done":
                    acked = max(acked, int(reply))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        r = browser.run("udpFlood", port=sender.getsockname()[1], total=total, timeout=240)
    finally:
        sender.close()
    thread.join(5)
    assert r == {"received": total, "problems": []}, errors


def test_ipv6_loopback_for_every_kind(browser: Browser) -> None:
    for kind in ("tcp-listen", "tcp", "udp-bind", "udp"):
        browser.grant("[::1]:*", kind=kind)
    assert browser.run("ipv6") == {
        "tcp": ["::1", "::1", "::1", "v6"],
        "udp": ["::1", "::1", "::1", "udp6", True],
    }
