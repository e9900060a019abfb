"""UDP sockets, listening sockets and multicast through the real host process over real pipes."""

from __future__ import annotations

import base64
import os
import queue
import socket
import time

import pytest

from direct_sockets.protocol.errors import Code
from tests.conftest import cli
from tests.support.hostproc import HostProcess
from tests.support.netns import IPV6_MULTICAST_ADDRESS

ORIGIN = "http://127.0.0.1:8000"


def grant(env: dict[str, str], flag: str, dest: str) -> None:
    cli(env, "permissions", "grant", "--origin", ORIGIN, f"--{flag}", dest)


def who() -> dict[str, object]:
    return {"origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def udp_peer(address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.settimeout(5)
    return sock


def open_bound(host: HostProcess, sid: int, address: str = "127.0.0.1", port: int | None = None, **options: object) -> dict:
    message = {"type": "udp_open", "id": sid, **who(), "mode": "bound", "localAddress": address, "options": options}
    if port is not None:
        message["localPort"] = port
    host.send(message)
    return host.expect("opened", id=sid)


# -- UDP -----------------------------------------------------------------------------------------


def test_connected_udp_echo_exact_boundaries(host: HostProcess, isolated_env: dict[str, str]) -> None:
    peer = udp_peer()
    port = peer.getsockname()[1]
    grant(isolated_env, "udp", f"127.0.0.1:{port}")
    host.hello()
    host.send({"type": "udp_open", "id": 1, **who(), "mode": "connected", "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}})
    opened = host.expect("opened", id=1, remoteAddress="127.0.0.1", remotePort=port)
    sizes = [0, *range(1, 151), 65507]
    for size in sizes:
        host.send({"type": "udp_send", "id": 1, "data": b64(bytes([size % 256]) * size)})
        host.expect("udp_ack", id=1, datagrams=1)
        data, sender = peer.recvfrom(70000)
        assert len(data) == size and sender[1] == opened["localPort"]
    host.send({"type": "udp_read", "id": 1, "datagrams": len(sizes)})
    for size in sizes:
        peer.sendto(b"r" * size, sender)
    for size in sizes:
        msg = host.expect("datagram", id=1)
        assert base64.b64decode(msg["data"]) == b"r" * size
        assert "remoteAddress" not in msg  # connected mode: {data} only
    peer.close()


def test_a_datagram_over_hellos_max_datagram_is_refused(host: HostProcess, isolated_env: dict[str, str]) -> None:
    """hello's maxDatagram is where the host draws the line: that many bytes are sent, one more
    is a fault that ends the socket (and reaches no peer)."""
    peer = udp_peer()
    port = peer.getsockname()[1]
    grant(isolated_env, "udp", f"127.0.0.1:{port}")
    most = host.hello()["limits"]["maxDatagram"]
    host.send({"type": "udp_open", "id": 1, **who(), "mode": "connected", "remoteAddress": "127.0.0.1", "remotePort": port, "options": {}})
    host.expect("opened", id=1)
    host.send({"type": "udp_send", "id": 1, "data": b64(b"d" * most)})
    host.expect("udp_ack", id=1, datagrams=1)
    assert len(peer.recv(70000)) == most
    host.send({"type": "udp_send", "id": 1, "data": b64(b"d" * (most + 1))})
    failed = host.expect("error", id=1)
    assert failed["code"] == Code.SCHEMA_VIOLATION and f"over {most} bytes" in failed["detail"]
    peer.settimeout(0.2)
    with pytest.raises(TimeoutError):
        peer.recv(70000)
    peer.close()


def test_bound_udp_reports_the_true_sender(host: HostProcess, isolated_env: dict[str, str]) -> None:
    peer_a, peer_b = udp_peer(), udp_peer()
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    grant(isolated_env, "udp", f"127.0.0.1:{peer_a.getsockname()[1]}")
    host.hello()
    opened = open_bound(host, 1)
    local = ("127.0.0.1", opened["localPort"])
    assert "remoteAddress" not in opened
    host.send({"type": "udp_read", "id": 1, "datagrams": 10})
    peer_b.sendto(b"from b", local)
    peer_a.sendto(b"from a", local)
    seen = [host.expect("datagram", id=1) for _ in range(2)]
    assert {(base64.b64decode(m["data"]), m["remoteAddress"], m["remotePort"]) for m in seen} == {
        (b"from b", "127.0.0.1", peer_b.getsockname()[1]), (b"from a", "127.0.0.1", peer_a.getsockname()[1])}
    host.send({"type": "udp_send", "id": 1, "data": b64(b"reply"), "remoteAddress": "localhost", "remotePort": peer_a.getsockname()[1], "dnsQueryType": "ipv4"})
    # "localhost" was not granted, only 127.0.0.1: the grant is for what the page named, so the
    # user is asked; they refuse, and the writable fails.
    prompt = host.expect("prompt", id=1, kind="udp", host="localhost")
    assert prompt["addresses"] == ["127.0.0.1"]
    host.send({"type": "consent", "id": 1, "decision": "deny"})
    failed = host.expect("write_failed", id=1, name="NotAllowedError", code=Code.NOT_ALLOWED)
    assert failed["message"] == "Permission denied."
    peer_b.sendto(b"still reading", local)
    assert base64.b64decode(host.expect("datagram", id=1)["data"]) == b"still reading"
    with pytest.raises(socket.timeout):
        peer_a.settimeout(0.3)
        peer_a.recvfrom(100)


def test_bound_udp_sends_to_granted_destination_by_name(host: HostProcess, isolated_env: dict[str, str]) -> None:
    peer = udp_peer()
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    grant(isolated_env, "udp", f"localhost:{peer.getsockname()[1]}")
    host.hello()
    opened = open_bound(host, 1)
    host.send({"type": "udp_send", "id": 1, "data": b64(b"by name"), "remoteAddress": "localhost", "remotePort": peer.getsockname()[1], "dnsQueryType": "ipv4"})
    host.expect("udp_ack", id=1)
    assert peer.recvfrom(100) == (b"by name", ("127.0.0.1", opened["localPort"]))


@pytest.mark.parametrize("port", [1, 80, 1023])
def test_bound_udp_below_1024_is_not_allowed_even_when_granted(host: HostProcess, isolated_env: dict[str, str], port: int) -> None:
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    host.hello()
    host.send({"type": "udp_open", "id": 1, **who(), "mode": "bound", "localAddress": "127.0.0.1", "localPort": port, "options": {}})
    host.expect("error", id=1, name="NotAllowedError", message="Permission denied.")


def test_ungranted_udp_is_refused_before_any_packet(host: HostProcess, isolated_env: dict[str, str]) -> None:
    peer = udp_peer()
    host.hello()
    host.send({"type": "udp_open", "id": 1, **who(), "mode": "connected", "remoteAddress": "127.0.0.1", "remotePort": peer.getsockname()[1], "options": {}})
    host.expect("prompt", id=1, kind="udp", host="127.0.0.1", port=peer.getsockname()[1], scope="loopback")
    host.send({"type": "consent", "id": 1, "decision": "deny"})
    host.expect("error", id=1, name="NotAllowedError")
    host.send({"type": "udp_open", "id": 2, **who(), "mode": "bound", "localAddress": "127.0.0.1", "options": {}})
    host.expect("prompt", id=2, kind="udp-bind", host="127.0.0.1", port=0)
    host.send({"type": "consent", "id": 2, "decision": "deny"})
    host.expect("error", id=2, name="NotAllowedError")
    peer.settimeout(0.2)
    with pytest.raises(socket.timeout):
        peer.recvfrom(10)


@pytest.mark.parametrize(
    "fields",
    [{"mode": "connected", "localAddress": "127.0.0.1", "remoteAddress": "127.0.0.1", "remotePort": 9},
     {"mode": "connected", "remoteAddress": "127.0.0.1"},
     {"mode": "bound", "localAddress": "127.0.0.1", "remotePort": 9},
     {"mode": "bound"}],
    ids=["connected-with-local", "connected-without-port", "bound-with-remote", "bound-without-address"],
)
def test_udp_open_mode_rules_are_in_the_schema(host: HostProcess, fields: dict) -> None:
    host.hello()
    host.send({"type": "udp_open", "id": 1, **who(), "options": {}, **fields})
    host.expect("error", code=Code.SCHEMA_VIOLATION)


def test_udp_reader_that_stops_never_grows_host_memory(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    host.hello()
    opened = open_bound(host, 1, receiveBufferSize=65536)
    host.send({"type": "udp_read", "id": 1, "datagrams": 1})
    sender = udp_peer()
    target = ("127.0.0.1", opened["localPort"])
    sender.sendto(b"first", target)
    host.expect("datagram", id=1)
    baseline = host.rss_peak_kib()
    payload = os.urandom(1400)
    for _ in range(100_000):  # 140 MB at a reader that granted no more room
        sender.sendto(payload, target)
    time.sleep(0.3)
    with pytest.raises(queue.Empty):
        host.recv(timeout=0.3)
    growth_mib = (host.rss_peak_kib() - baseline) / 1024
    assert growth_mib < 4, f"host grew {growth_mib:.1f} MiB while the page read nothing"
    host.send({"type": "udp_read", "id": 1, "datagrams": 5})
    assert len(base64.b64decode(host.expect("datagram", id=1)["data"])) == 1400


def test_100000_datagrams_to_a_reader_that_keeps_up(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    host.hello()
    opened = open_bound(host, 1, receiveBufferSize=4 * 1024 * 1024)
    target = ("127.0.0.1", opened["localPort"])
    total, window = 100_000, 512
    host.send({"type": "udp_read", "id": 1, "datagrams": window})
    sender = udp_peer()
    sent = received = 0
    expected_next = 0
    while received < total:
        # Keep at most the window in flight, so the kernel never has to drop (the reader keeps up).
        while sent < total and sent - received < window:
            sender.sendto(sent.to_bytes(4, "big") * (1 + sent % 8), target)
            sent += 1
        msg = host.expect("datagram", id=1)
        data = base64.b64decode(msg["data"])
        index = int.from_bytes(data[:4], "big")
        assert index == expected_next, f"datagram {index} arrived when {expected_next} was due"
        assert data == index.to_bytes(4, "big") * (1 + index % 8), "a datagram was merged or split"
        expected_next += 1
        received += 1
        if received % 256 == 0:
            host.send({"type": "udp_read", "id": 1, "datagrams": 256})


def test_100000_datagrams_to_a_reader_that_pauses(host: HostProcess, isolated_env: dict[str, str]) -> None:
    """The reader stops granting room every 10,000 datagrams for a while: the host stops reading,
    the kernel holds what the sender has in flight, and when the reader resumes every datagram
    arrives, in order, none merged or split. (The sender keeps no more in flight than the
    kernel buffer holds: UDP itself drops beyond that, which is no fault of the host.)"""
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    host.hello()
    opened = open_bound(host, 1, receiveBufferSize=4 * 1024 * 1024)
    target = ("127.0.0.1", opened["localPort"])
    total, in_flight = 100_000, 256
    sender = udp_peer()
    sent = received = granted = pauses = 0

    def datagram(index: int) -> bytes:
        return index.to_bytes(4, "big") * (1 + index % 8)

    while received < total:
        while sent < total and sent - received < in_flight:
            sender.sendto(datagram(sent), target)
            sent += 1
        if granted == received:
            if pauses < received // 10_000 < 10:  # the first moment without room after each 10,000
                pauses += 1
                with pytest.raises(queue.Empty):  # paused: the host delivers nothing ungranted
                    host.recv(timeout=0.2)
            host.send({"type": "udp_read", "id": 1, "datagrams": 64})
            granted += 64
        data = base64.b64decode(host.expect("datagram", id=1)["data"])
        assert data == datagram(received), f"datagram {received} arrived as {data[:4].hex()}, {len(data)} bytes"
        received += 1
    assert pauses == 9


def test_udp_close_sequence(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    host.hello()
    open_bound(host, 1)
    host.send({"type": "shutdown", "id": 1})
    host.expect("fin_sent", id=1)
    host.send({"type": "udp_send", "id": 1, "data": "", "remoteAddress": "127.0.0.1", "remotePort": 9})
    host.expect("error", id=1, code=Code.OUT_OF_ORDER, name="NetworkError")
    open_bound(host, 2)
    host.send({"type": "cancel", "id": 2})
    host.send({"type": "shutdown", "id": 2})
    host.expect("fin_sent", id=2)
    host.expect("closed", id=2)


def test_messages_for_the_wrong_kind_of_socket(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "udp-bind", "127.0.0.1:*")
    host.hello()
    open_bound(host, 1)
    host.send({"type": "read", "id": 1, "bytes": 10})
    host.expect("error", id=1, code=Code.WRONG_KIND, name="NetworkError")


def test_ipv6_bound_udp(host: HostProcess, isolated_env: dict[str, str]) -> None:
    peer = udp_peer("::1")
    grant(isolated_env, "udp-bind", "[::1]:*")
    grant(isolated_env, "udp", f"[::1]:{peer.getsockname()[1]}")
    host.hello()
    opened = open_bound(host, 1, address="::1")
    assert opened["localAddress"] == "::1"
    host.send({"type": "udp_send", "id": 1, "data": b64(b"six"), "remoteAddress": "::1", "remotePort": peer.getsockname()[1]})
    host.expect("udp_ack", id=1)
    assert peer.recvfrom(10)[0] == b"six"


# -- listening ---------------------------------------------------------------------------------


def listen(host: HostProcess, sid: int, address: str = "127.0.0.1", **fields: object) -> dict:
    host.send({"type": "tcp_listen", "id": sid, **who(), "localAddress": address, **fields})
    return host.expect("opened", id=sid)


def test_server_accepts_only_when_asked_and_sockets_outlive_it(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "tcp-listen", "127.0.0.1:*")
    host.hello()
    opened = listen(host, 1, backlog=8)
    address = ("127.0.0.1", opened["localPort"])
    assert opened["localPort"] >= 1024
    client = socket.create_connection(address, timeout=5)
    with pytest.raises(queue.Empty):
        host.recv(timeout=0.3)  # not asked for a connection yet
    host.send({"type": "accept", "id": 1, "socketId": 100})
    accepted = host.expect("accepted", id=1, socketId=100, localPort=opened["localPort"])
    assert accepted["remotePort"] == client.getsockname()[1]
    host.send({"type": "cancel", "id": 1})  # closing the server ...
    host.expect("closed", id=1)
    host.send({"type": "read", "id": 100, "bytes": 100})  # ... leaves the accepted socket open
    client.sendall(b"still here")
    assert base64.b64decode(host.expect("data", id=100)["data"]) == b"still here"
    host.send({"type": "send", "id": 100, "data": b64(b"and me")})
    host.expect("ack", id=100)
    assert client.recv(100) == b"and me"
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2)


def test_accept_ids_must_be_fresh(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "tcp-listen", "127.0.0.1:*")
    host.hello()
    listen(host, 1)
    host.send({"type": "accept", "id": 1, "socketId": 1})
    host.expect("error", id=1, code=Code.SOCKET_ID_IN_USE, name="NetworkError")
    listen(host, 2)
    host.send({"type": "accept", "id": 2, "socketId": 50})
    host.send({"type": "tcp_open", "id": 50, **who(), "remoteAddress": "127.0.0.1", "remotePort": 9, "options": {}})
    host.expect("error", code=Code.SOCKET_ID_IN_USE)


@pytest.mark.parametrize("port", [1, 1024, 32767])
def test_listening_below_32768_is_not_allowed(host: HostProcess, isolated_env: dict[str, str], port: int) -> None:
    grant(isolated_env, "tcp-listen", "127.0.0.1:*")
    host.hello()
    host.send({"type": "tcp_listen", "id": 1, **who(), "localAddress": "127.0.0.1", "localPort": port})
    host.expect("error", id=1, name="NotAllowedError")


def test_listening_on_a_busy_port_is_network_error(host: HostProcess, isolated_env: dict[str, str]) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    if port < 32768:
        pytest.skip("the kernel gave an ephemeral port below 32768")
    grant(isolated_env, "tcp-listen", f"127.0.0.1:{port}")
    host.hello()
    host.send({"type": "tcp_listen", "id": 1, **who(), "localAddress": "127.0.0.1", "localPort": port})
    host.expect("error", id=1, name="NetworkError", message="Network error.")


def test_ipv6_only_listener(host: HostProcess, isolated_env: dict[str, str]) -> None:
    grant(isolated_env, "tcp-listen", "[::]:*")
    host.hello()
    opened = listen(host, 1, address="::", ipv6Only=True)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", opened["localPort"]), timeout=2)
    socket.create_connection(("::1", opened["localPort"]), timeout=2).close()


# -- multicast ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "group", "any_address", "sender_address"),
    [("ipv4", "239.255.42.99", "0.0.0.0", "127.0.0.1"), ("ipv6", "ff15::4242", "::", IPV6_MULTICAST_ADDRESS)],
)
def test_two_receivers_sharing_a_port_get_every_datagram(
    host: HostProcess, isolated_env: dict[str, str], private_network: object, family: str, group: str, any_address: str, sender_address: str
) -> None:
    bracket = (lambda a: f"[{a}]") if family == "ipv6" else (lambda a: a)
    grant(isolated_env, "udp-bind", f"{bracket(any_address)}:*")
    grant(isolated_env, "udp-bind", f"{bracket(sender_address)}:*")
    grant(isolated_env, "multicast", group)
    host.hello()
    first = open_bound(host, 1, address=any_address, multicastAllowAddressSharing=True)
    port = first["localPort"]
    open_bound(host, 2, address=any_address, port=port, multicastAllowAddressSharing=True)
    grant(isolated_env, "udp", f"{bracket(group)}:{port}")
    for sid in (1, 2):
        host.send({"type": "join", "id": sid, "req": 7, "groupAddress": group})
        host.expect("done", id=sid, req=7)
        host.send({"type": "udp_read", "id": sid, "datagrams": 100})
    open_bound(host, 3, address=sender_address, multicastTimeToLive=0, multicastLoopback=True)
    for n in range(20):
        host.send({"type": "udp_send", "id": 3, "data": b64(f"datagram {n}".encode()), "remoteAddress": group, "remotePort": port})
    got: dict[int, list[bytes]] = {1: [], 2: []}
    acks = 0
    while len(got[1]) < 20 or len(got[2]) < 20 or acks < 20:
        msg = host.recv(5)
        if msg["type"] == "udp_ack":
            acks += 1
            continue
        assert msg["type"] == "datagram", msg
        got[msg["id"]].append(base64.b64decode(msg["data"]))
        assert msg["remoteAddress"] == sender_address
    expected = [f"datagram {n}".encode() for n in range(20)]
    assert got == {1: expected, 2: expected}
    host.send({"type": "leave", "id": 1, "req": 8, "groupAddress": group})
    host.expect("done", id=1, req=8)


def test_join_needs_a_grant_and_a_real_group(host: HostProcess, isolated_env: dict[str, str], private_network: object) -> None:
    grant(isolated_env, "udp-bind", "0.0.0.0:*")
    host.hello()
    open_bound(host, 1, address="0.0.0.0")
    host.send({"type": "join", "id": 1, "req": 1, "groupAddress": "239.1.1.1"})
    host.expect("prompt", id=1, kind="multicast", host="239.1.1.1", scope="local")
    host.send({"type": "consent", "id": 1, "decision": "deny"})
    host.expect("request_failed", id=1, req=1, name="NotAllowedError")
    host.send({"type": "join", "id": 1, "req": 2, "groupAddress": "10.0.0.1"})
    host.expect("request_failed", id=1, req=2, name="TypeError")
    grant(isolated_env, "multicast", "239.1.1.1")
    host.send({"type": "join", "id": 1, "req": 3, "groupAddress": "239.1.1.1", "sourceAddress": "127.0.0.1"})
    host.expect("request_failed", id=1, req=3, name="TypeError")  # loopback is no source
    host.send({"type": "join", "id": 1, "req": 4, "groupAddress": "239.1.1.1", "sourceAddress": "192.0.2.7"})
    host.expect("done", id=1, req=4)  # source-specific
    host.send({"type": "leave", "id": 1, "req": 5, "groupAddress": "239.1.1.1", "sourceAddress": "192.0.2.7"})
    host.expect("done", id=1, req=5)
    host.send({"type": "leave", "id": 1, "req": 6, "groupAddress": "239.1.1.1"})
    host.expect("request_failed", id=1, req=6, name="NetworkError")  # not joined: the kernel says so
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)  # the socket and the session go on


def test_ipv6_source_specific_join(host: HostProcess, isolated_env: dict[str, str], private_network: object) -> None:
    grant(isolated_env, "udp-bind", "[::]:*")
    grant(isolated_env, "multicast", "ff35::d5")
    host.hello()
    open_bound(host, 1, address="::")
    host.send({"type": "join", "id": 1, "req": 1, "groupAddress": "ff35::d5", "sourceAddress": "fd00:d5::2"})
    host.expect("done", id=1, req=1)
    host.send({"type": "join", "id": 1, "req": 2, "groupAddress": "ff35::d5", "sourceAddress": "192.0.2.1"})
    host.expect("request_failed", id=1, req=2, name="TypeError")  # IP versions differ
    host.send({"type": "leave", "id": 1, "req": 3, "groupAddress": "ff35::d5", "sourceAddress": "fd00:d5::2"})
    host.expect("done", id=1, req=3)


def test_bound_send_and_join_ask_the_user_and_remember(host: HostProcess, isolated_env: dict[str, str], private_network: object) -> None:
    peer = udp_peer()
    grant(isolated_env, "udp-bind", "0.0.0.0:*")
    host.hello()
    open_bound(host, 1, address="0.0.0.0")
    host.send({"type": "udp_send", "id": 1, "data": b64(b"one"), "remoteAddress": "127.0.0.1", "remotePort": peer.getsockname()[1]})
    host.send({"type": "join", "id": 1, "req": 9, "groupAddress": "239.2.2.2"})  # waits behind the first question
    host.expect("prompt", id=1, kind="udp")
    host.send({"type": "consent", "id": 1, "decision": "always"})
    following = {m["type"]: m for m in (host.recv(), host.recv())}  # the ack and the next question, in either order
    assert set(following) == {"udp_ack", "prompt"} and following["prompt"]["host"] == "239.2.2.2"
    assert peer.recvfrom(10)[0] == b"one"
    host.send({"type": "consent", "id": 1, "decision": "once"})
    host.expect("done", id=1, req=9)
    host.send({"type": "udp_send", "id": 1, "data": b64(b"two"), "remoteAddress": "127.0.0.1", "remotePort": peer.getsockname()[1]})
    host.expect("udp_ack", id=1)  # remembered: not asked again
    listed = cli(isolated_env, "permissions", "list", "--json").stdout
    assert f'"port": {peer.getsockname()[1]}' in listed and "239.2.2.2" not in listed
    host.send({"type": "join", "id": 1, "req": 10, "groupAddress": "239.3.3.3"})
    host.expect("prompt", id=1, kind="multicast")
    host.send({"type": "release", "id": 1})
    host.expect("prompt_closed", id=1)  # the socket went away while the user was asked
