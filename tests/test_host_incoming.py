"""What comes in to a page's listening or bound socket, through the real host over real pipes:
a socket on every interface is shown as reachable from the network, the administrator's blocks
hold for peers coming in, and a bound socket hears only the multicast groups it joined itself.

Addresses 10.77.0.1 and 10.77.0.2 stand for the local network: they are added to `lo` of the
tests' own network namespace only (and removed after), never anywhere else."""

from __future__ import annotations

import base64
import json
import queue
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.hostproc import HostProcess

ORIGIN = "https://app.test"
ME, PEER = "10.77.0.1", "10.77.0.2"
GROUP = "239.77.0.1"


def who() -> dict[str, Any]:
    return {"origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False}


def write_policy(env: dict[str, str], **policy: Any) -> None:
    path = Path(env["XDG_CONFIG_DIRS"]) / "direct-sockets" / "policy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, **policy}))


@pytest.fixture
def lan(private_network: Any) -> Iterator[None]:
    for a in (ME, PEER):
        subprocess.run(["ip", "addr", "add", f"{a}/32", "dev", "lo"], check=True)
    yield
    for a in (ME, PEER):
        subprocess.run(["ip", "addr", "del", f"{a}/32", "dev", "lo"], check=False)


def nothing_for(host: HostProcess, seconds: float) -> None:
    with pytest.raises(queue.Empty):
        message = host.recv(seconds)
        raise AssertionError(f"the page heard {message}")


def allowed(host: HostProcess, message: dict[str, Any], scope: str) -> dict[str, Any]:
    host.send(message)
    host.expect("prompt", id=message["id"], scope=scope)
    host.send({"type": "consent", "id": message["id"], "decision": "once"})
    return host.expect("opened", id=message["id"])


# -- what the user is shown -----------------------------------------------------------------------


def test_every_interface_is_shown_as_the_local_network_when_listening_not_when_connecting(host: HostProcess, isolated_env: dict[str, str]) -> None:
    host.hello()
    allowed(host, {"type": "tcp_listen", "id": 1, **who(), "localAddress": "0.0.0.0"}, "local")
    allowed(host, {"type": "udp_open", "id": 3, **who(), "mode": "bound", "localAddress": "::", "options": {}}, "local")
    allowed(host, {"type": "tcp_listen", "id": 5, **who(), "localAddress": "127.0.0.1"}, "loopback")
    host.send({"type": "tcp_open", "id": 7, **who(), "remoteAddress": "0.0.0.0", "remotePort": 9, "options": {}})
    host.expect("prompt", id=7, scope="loopback")  # connecting there reaches this device
    host.send({"type": "consent", "id": 7, "decision": "deny"})
    host.expect("error", id=7, name="NotAllowedError")


def test_a_loopback_block_still_holds_for_listening_on_every_interface(host: HostProcess, isolated_env: dict[str, str]) -> None:
    write_policy(isolated_env, block=[{"host": "127.0.0.0/8"}])
    host.hello()
    host.send({"type": "tcp_listen", "id": 1, **who(), "localAddress": "0.0.0.0"})
    host.expect("error", id=1, name="NotAllowedError")
    host.send({"type": "udp_open", "id": 3, **who(), "mode": "bound", "localAddress": "::", "options": {}})
    host.expect("error", id=3, name="NotAllowedError")


# -- the administrator's blocks, coming in ----------------------------------------------------------


def test_a_listener_closes_a_peer_from_a_blocked_network_before_the_page_hears_of_it(host: HostProcess, isolated_env: dict[str, str], lan: None) -> None:
    write_policy(isolated_env, block=[{"host": "10.0.0.0/8"}])
    host.hello()
    opened = allowed(host, {"type": "tcp_listen", "id": 1, **who(), "localAddress": "0.0.0.0"}, "local")
    host.send({"type": "accept", "id": 1, "socketId": 2})
    blocked = socket.create_connection((ME, opened["localPort"]), timeout=5, source_address=(PEER, 0))
    try:
        blocked.sendall(b"from the blocked network")
        assert blocked.recv(100) == b""  # closed by the host at once
    except ConnectionResetError:
        pass
    finally:
        blocked.close()
    nothing_for(host, 1)
    # The listener lives on, and the id the page offered is still there for an allowed peer.
    with socket.create_connection(("127.0.0.1", opened["localPort"]), timeout=5) as fine:
        host.expect("accepted", id=1, socketId=2, remoteAddress="127.0.0.1", remotePort=fine.getsockname()[1])


def test_a_bound_socket_drops_datagrams_from_a_blocked_network(host: HostProcess, isolated_env: dict[str, str], lan: None) -> None:
    write_policy(isolated_env, block=[{"kind": "udp", "host": "10.0.0.0/8"}])
    host.hello()
    opened = allowed(host, {"type": "udp_open", "id": 1, **who(), "mode": "bound", "localAddress": "0.0.0.0", "options": {}}, "local")
    host.send({"type": "udp_read", "id": 1, "datagrams": 1})  # one credit: a dropped datagram must not spend it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocked, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fine:
        blocked.bind((PEER, 0))
        fine.bind(("127.0.0.1", 0))
        blocked.sendto(b"from the blocked network", (ME, opened["localPort"]))
        nothing_for(host, 1)
        fine.sendto(b"from loopback", ("127.0.0.1", opened["localPort"]))
        got = host.expect("datagram", id=1)
        assert (base64.b64decode(got["data"]), got["remoteAddress"]) == (b"from loopback", "127.0.0.1")


# -- multicast: only the groups the page joined -------------------------------------------------------


def test_a_bound_socket_hears_a_group_only_after_joining_it(host: HostProcess, isolated_env: dict[str, str], private_network: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as service, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        # A local service (an mDNS stand-in) joined the group on the port; the page did not.
        service.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        service.bind(("0.0.0.0", 0))
        port = service.getsockname()[1]
        service.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1"))
        service.settimeout(5)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        host.hello()
        allowed(host, {"type": "udp_open", "id": 1, **who(), "mode": "bound", "localAddress": "0.0.0.0", "localPort": port,
                       "options": {"multicastAllowAddressSharing": True}}, "local")
        host.send({"type": "udp_read", "id": 1, "datagrams": 8})
        sender.sendto(b"not joined", (GROUP, port))
        assert service.recv(100) == b"not joined"  # it was sent, and the service that joined got it
        nothing_for(host, 1)
        host.send({"type": "join", "id": 1, "req": 1, "groupAddress": GROUP})
        host.expect("prompt", id=1, kind="multicast", host=GROUP)
        host.send({"type": "consent", "id": 1, "decision": "once"})
        host.expect("done", id=1, req=1)
        sender.sendto(b"joined", (GROUP, port))
        got = host.expect("datagram", id=1)
        assert base64.b64decode(got["data"]) == b"joined"
