"""TLS through the real host process: verification, pins, trusting a device's certificate,
STARTTLS, ALPN, TLS servers, and bulk integrity, against servers and certificates made here."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Iterator

import pytest

from direct_sockets.protocol.errors import Code
from direct_sockets.trust.permissions import Grant, PermissionStore
from direct_sockets.sockets.server_certs import ServerCertificates
from direct_sockets.sockets.tls import describe, spki_sha256
from tests.conftest import cli, user_files, written_since
from tests.support.hostproc import HostProcess
from tests.support.pki import Issued, TestCA, TlsServer, read_to_close_notify, self_signed, sink_then_source, starttls_server, tls_echo
from tests.support.servers import TcpServer
from tests.test_host_process import ORIGIN, b64, duplex, grant, open_tcp, read_until

@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[TcpServer]]:
    made: list[TcpServer] = []
    yield made
    for server in made:
        server.close()


def tls_server(servers: list[TcpServer], tmp_path: Path, issued: Issued, handler=tls_echo, **kwargs: object) -> TlsServer:
    server = TlsServer(issued, tmp_path, handler, **kwargs)  # type: ignore[arg-type]
    servers.append(server)
    return server


def open_granted(host: HostProcess, env: dict[str, str], port: int, sid: int = 1, **options: object) -> None:
    grant(env, f"127.0.0.1:{port}")
    host.hello()
    open_tcp(host, sid, port, **options)


def echo_round(host: HostProcess, sid: int, payload: bytes = b"hello over tls") -> None:
    host.send({"type": "send", "id": sid, "data": b64(payload)})
    host.expect("ack", id=sid, bytes=len(payload))
    assert read_until(host, sid, len(payload)) == payload


def refused_with(host: HostProcess, sid: int, reason: str) -> dict:
    message = host.expect("error", id=sid, timeout=30)
    assert message["name"] == "NetworkError" and message["code"] == Code.NETWORK_ERROR
    # The page's message is generic; the reason is in the detail (the popup) and the log.
    assert "certificate" not in message["message"].lower() and reason in message["detail"], message
    return message


# -- verifying the server ------------------------------------------------------------------------


def test_valid_chain_through_ca_certificates(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    issued = ca.issue(["127.0.0.1", "device.test"])
    server = tls_server(servers, tmp_path, issued)
    open_granted(host, isolated_env, server.port, secureTransport="on", caCertificates=[ca.pem])
    opened = host.expect("opened", id=1, timeout=30)
    tls = opened["tls"]
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["cipher"] and tls["alpn"] is None
    assert tls["peerCertificate"] == describe(issued.der)
    assert tls["peerCertificate"]["spkiSha256"] == issued.pin
    echo_round(host, 1)


def test_server_name_is_what_is_checked(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    server = tls_server(servers, tmp_path, ca.issue(["device.test"]))
    open_granted(host, isolated_env, server.port, secureTransport="on", caCertificates=[ca.pem], serverName="device.test")
    host.expect("opened", id=1, timeout=30)
    echo_round(host, 1)


@pytest.mark.parametrize(
    "case, reason",
    [
        ("wrong-name", "address mismatch"),
        ("expired", "certificate has expired"),
        ("unknown-issuer", "unable to get local issuer certificate"),
    ],
)
def test_bad_certificates_are_refused(case: str, reason: str, host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    issued = {
        "wrong-name": lambda: ca.issue(["other.test"]),
        "expired": lambda: ca.issue(["127.0.0.1"], expired=True),
        "unknown-issuer": lambda: TestCA("another CA").issue(["127.0.0.1"]),
    }[case]()
    server = tls_server(servers, tmp_path, issued)
    open_granted(host, isolated_env, server.port, secureTransport="on", caCertificates=[ca.pem])
    refused_with(host, 1, reason)
    deadline = time.monotonic() + 10
    while not server.handshake_errors and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.handshake_errors and server.results == []  # the server saw our alert, no data
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)  # no prompt: the page named its CAs, its choice is final


def test_pin_match_is_accepted_and_mismatch_refused(host: HostProcess, isolated_env: dict[str, str], servers, tmp_path: Path) -> None:
    device = self_signed(["printer.local"])
    server = tls_server(servers, tmp_path, device)
    open_granted(host, isolated_env, server.port, secureTransport="on", pinnedCertificates=[device.pin])
    opened = host.expect("opened", id=1, timeout=30)
    assert opened["tls"]["peerCertificate"]["spkiSha256"] == device.pin
    echo_round(host, 1)
    open_tcp(host, 2, server.port, secureTransport="on", pinnedCertificates=[self_signed(["x"]).pin])
    refused_with(host, 2, "pin mismatch")


def test_alpn_is_negotiated(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    server = tls_server(servers, tmp_path, ca.issue(["127.0.0.1"]), alpn=["imap", "h2"])
    open_granted(host, isolated_env, server.port, secureTransport="on", caCertificates=[ca.pem], alpn=["x-unknown", "h2"])
    assert host.expect("opened", id=1, timeout=30)["tls"]["alpn"] == "h2"


def test_eight_mib_both_ways_over_tls(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    size = 8 << 20
    upload, download = os.urandom(size), os.urandom(size)

    server = tls_server(servers, tmp_path, ca.issue(["127.0.0.1"]), handler=sink_then_source(download))
    open_granted(host, isolated_env, server.port, secureTransport="on", caCertificates=[ca.pem])
    host.expect("opened", id=1, timeout=30)
    received = duplex(host, 1, upload)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(download).hexdigest()
    assert server.wait_results(1) == [hashlib.sha256(upload).hexdigest()]


def test_half_close_over_tls(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    def reply_after_close_notify(conn: ssl.SSLSocket) -> object:
        got = read_to_close_notify(conn)
        conn.sendall(b"you sent " + str(len(got)).encode())  # still writing after the client's close_notify
        conn.unwrap()
        return bytes(got)

    server = tls_server(servers, tmp_path, ca.issue(["127.0.0.1"]), handler=reply_after_close_notify)
    open_granted(host, isolated_env, server.port, secureTransport="on", caCertificates=[ca.pem])
    host.expect("opened", id=1, timeout=30)
    host.send({"type": "send", "id": 1, "data": b64(b"12345")})
    host.expect("ack", id=1)
    host.send({"type": "shutdown", "id": 1})
    host.expect("fin_sent", id=1)
    assert read_until(host, 1, 10) == b"you sent 5"
    host.expect("eof", id=1)
    host.expect("closed", id=1)
    assert server.wait_results(1) == [b"12345"]


# -- a device's own certificate: the user decides ----------------------------------------------


def answer(host: HostProcess, sid: int, decision: str) -> dict:
    prompt = host.expect("prompt", id=sid, timeout=30)
    host.send({"type": "consent", "id": sid, "decision": decision})
    return prompt


def test_self_signed_device_asks_with_fingerprint_and_remembers_the_pin(host: HostProcess, isolated_env: dict[str, str], servers, tmp_path: Path) -> None:
    device = self_signed(["printer.local"])
    server = tls_server(servers, tmp_path, device)
    open_granted(host, isolated_env, server.port, secureTransport="on")
    prompt = answer(host, 1, "always")
    assert prompt["kind"] == "certificate" and prompt["host"] == "127.0.0.1" and prompt["port"] == server.port
    assert prompt["certificate"]["sha256Fingerprint"] == device.fingerprint
    assert prompt["certificate"]["spkiSha256"] == device.pin
    assert "self-signed" in prompt["reason"] and prompt["plaintext"] is False
    opened = host.expect("opened", id=1, timeout=30)
    assert opened["tls"]["peerCertificate"]["sha256Fingerprint"] == device.fingerprint
    echo_round(host, 1)
    stored = PermissionStore(Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json").load()
    assert Grant(ORIGIN, "certificate", "127.0.0.1", server.port, pin=device.pin) in stored
    listed = cli(isolated_env, "permissions", "list").stdout
    assert f"certificate\t127.0.0.1:{server.port}\tkey {device.pin}" in listed

    # Remembered: the next socket opens without a question.
    open_tcp(host, 2, server.port, secureTransport="on")
    host.expect("opened", id=2, timeout=30)

    # The device's key changes: that is asked again, and refusing gives a NetworkError.
    server.close()
    replaced = TlsServer(self_signed(["printer.local"]), tmp_path, tls_echo)
    servers.append(replaced)
    grant(isolated_env, f"127.0.0.1:{replaced.port}")
    stored_store = PermissionStore(Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json")
    stored_store.grant(Grant(ORIGIN, "certificate", "127.0.0.1", replaced.port, pin=device.pin))
    open_tcp(host, 3, replaced.port, secureTransport="on")
    prompt = answer(host, 3, "deny")
    assert "pin mismatch" in prompt["reason"]
    refused_with(host, 3, "did not trust")


def test_trusting_once_is_not_remembered(host: HostProcess, isolated_env: dict[str, str], servers, tmp_path: Path) -> None:
    server = tls_server(servers, tmp_path, self_signed(["cam.local"]))
    open_granted(host, isolated_env, server.port, secureTransport="on")
    answer(host, 1, "once")
    host.expect("opened", id=1, timeout=30)
    open_tcp(host, 2, server.port, secureTransport="on")
    answer(host, 2, "deny")
    refused_with(host, 2, "did not trust")


# -- STARTTLS ----------------------------------------------------------------------------------


def plaintext_until(host: HostProcess, sid: int, marker: bytes) -> bytes:
    """What the plaintext socket receives up to `marker` (with the page's usual 1 MiB credit)."""
    got = bytearray()
    while marker not in got:
        message = host.recv(30)
        assert message is not None and message["type"] == "data" and message["id"] == sid, message
        got += base64.b64decode(message["data"])
    return bytes(got)


def starttls(host: HostProcess, sid: int, new_id: int, **options: object) -> bytes:
    """The SMTP dialogue up to the go-ahead, then start_tls; returns the plaintext received."""
    host.send({"type": "read", "id": sid, "bytes": 1 << 20})
    assert plaintext_until(host, sid, b"\r\n") == b"220 test ESMTP\r\n"
    host.send({"type": "send", "id": sid, "data": b64(b"STARTTLS\r\n")})
    host.expect("ack", id=sid)
    received = plaintext_until(host, sid, b"220 Ready to start TLS\r\n")
    host.send({"type": "start_tls", "id": sid, "newId": new_id, "options": options})
    return received


def test_starttls_dialogue_continues_as_a_new_secure_socket(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    issued = ca.issue(["mail.test"])
    context = issued.server_context(tmp_path)
    server = TcpServer(starttls_server(context))
    servers.append(server)
    open_granted(host, isolated_env, server.port, secureTransport="starttls")
    opened = host.expect("opened", id=1, timeout=30)
    assert "tls" not in opened
    starttls(host, 1, 2, caCertificates=[ca.pem], serverName="mail.test")
    secured = host.expect("opened", id=2, timeout=30)
    assert secured["tls"]["peerCertificate"]["spkiSha256"] == issued.pin
    assert secured["remotePort"] == server.port
    # The plaintext socket is gone: a late message for it is dropped quietly, not answered.
    host.send({"type": "read", "id": 1, "bytes": 10})
    echo_round(host, 2, b"EHLO over TLS\r\n")
    host.send({"type": "shutdown", "id": 2})
    host.expect("fin_sent", id=2)
    host.send({"type": "read", "id": 2, "bytes": 10})
    host.expect("eof", id=2)
    host.expect("closed", id=2)
    assert server.wait_results(1) == ["secured"]


def test_starttls_injected_plaintext_never_reaches_the_secure_socket(host: HostProcess, isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    """A man in the middle appends a command after the go-ahead (CVE-2011-0411's pattern). It
    arrives on the plaintext socket, labelled as plaintext, or breaks the handshake; it is never
    delivered as if it came over TLS."""
    context = ca.issue(["mail.test"]).server_context(tmp_path)
    injected = b"250 injected before TLS\r\n"
    server = TcpServer(starttls_server(context, inject=injected))
    servers.append(server)
    open_granted(host, isolated_env, server.port, secureTransport="starttls")
    host.expect("opened", id=1, timeout=30)
    plaintext = starttls(host, 1, 2, caCertificates=[ca.pem], serverName="mail.test")
    message = host.recv(30)
    assert message is not None
    if message["type"] == "error":  # the injection reached the handshake and broke it
        assert message["id"] == 2 and message["name"] == "NetworkError" and "TLS" in message["detail"]
        return
    assert message["type"] == "opened" and message["id"] == 2, message
    assert plaintext.endswith(injected)
    host.send({"type": "send", "id": 2, "data": b64(b"QUIT\r\n")})
    host.expect("ack", id=2)
    assert read_until(host, 2, 6) == b"QUIT\r\n"


def test_start_tls_rules(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    open_granted(host, isolated_env, echo_server.port)
    host.expect("opened", id=1)
    host.send({"type": "start_tls", "id": 1, "newId": 2, "options": {}})
    fault = host.expect("error", id=1, code=Code.OUT_OF_ORDER)
    assert "starttls" in fault["detail"]
    open_tcp(host, 3, echo_server.port, secureTransport="starttls")
    host.expect("opened", id=3)
    host.send({"type": "start_tls", "id": 3, "newId": 3, "options": {}})
    host.expect("error", code=Code.SOCKET_ID_IN_USE)
    # Only a socket open both ways moves under TLS: not one whose page stopped reading.
    open_tcp(host, 4, echo_server.port, secureTransport="starttls")
    host.expect("opened", id=4)
    host.send({"type": "cancel", "id": 4})
    host.send({"type": "start_tls", "id": 4, "newId": 5, "options": {}})
    fault = host.expect("error", id=4, code=Code.OUT_OF_ORDER)
    assert "reading cancelled" in fault["detail"], fault


# -- TLS servers ------------------------------------------------------------------------------


def test_tls_server_socket_serves_the_sites_certificate(host: HostProcess, isolated_env: dict[str, str]) -> None:
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp-listen", "127.0.0.1:*")
    host.hello()
    host.send({"type": "tcp_listen", "id": 1, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
               "localAddress": "127.0.0.1", "secureTransport": "on"})
    opened = host.expect("opened", id=1, timeout=30)
    certificate = opened["tls"]["certificate"]
    port = opened["localPort"]
    host.send({"type": "accept", "id": 1, "socketId": 10})

    # A client that refuses to speak TLS never reaches the page; it costs no accept id.
    with socket.create_connection(("127.0.0.1", port)) as plain:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        plain.settimeout(10)
        assert plain.recv(100)[:1] in (b"", b"\x15")  # closed, perhaps after a TLS alert

    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # checked below, by fingerprint, as a client of such a page would
    with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None and describe(der)["sha256Fingerprint"] == certificate["sha256Fingerprint"]
        assert spki_sha256(der) == certificate["spkiSha256"]
        accepted = host.expect("accepted", id=1, socketId=10, timeout=30)
        assert accepted["tls"]["version"] == tls.version()
        tls.sendall(b"ping")
        assert read_until(host, 10, 4) == b"ping"
        host.send({"type": "send", "id": 10, "data": b64(b"pong")})
        host.expect("ack", id=10)
        assert tls.recv(4) == b"pong"
    host.expect("eof", id=10)  # the client closed

    # The same site gets the same certificate next time; `tls certs` lists it, and rotates it.
    host.send({"type": "tcp_listen", "id": 2, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False,
               "localAddress": "127.0.0.1", "secureTransport": "on"})
    assert host.expect("opened", id=2, timeout=30)["tls"]["certificate"] == certificate
    listed = cli(isolated_env, "tls", "certs").stdout
    assert ORIGIN in listed and certificate["sha256Fingerprint"] in listed
    rotated = cli(isolated_env, "tls", "certs", "--rotate", ORIGIN).stdout
    assert certificate["sha256Fingerprint"] not in rotated and ORIGIN in rotated
    key_files = list((Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "server-certificates").glob("*.key"))
    assert len(key_files) == 1 and key_files[0].stat().st_mode & 0o777 == 0o600


def tls_listen(host: HostProcess, sid: int, incognito: bool) -> dict:
    """A TLS server socket of ORIGIN, allowed once; its `opened`."""
    host.send({"type": "tcp_listen", "id": sid, "origin": ORIGIN, "tabId": sid, "frameId": 0, "incognito": incognito,
               "localAddress": "127.0.0.1", "secureTransport": "on"})
    host.expect("prompt", id=sid, timeout=30)
    host.send({"type": "consent", "id": sid, "decision": "once"})
    return host.expect("opened", id=sid, timeout=30)


def served_fingerprint(host: HostProcess, listener: int, port: int, accepted_id: int) -> str:
    host.send({"type": "accept", "id": listener, "socketId": accepted_id})
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        host.expect("accepted", id=listener, socketId=accepted_id, timeout=30)
    assert der is not None
    return describe(der)["sha256Fingerprint"]


def test_private_tls_server_certificate_is_in_memory_and_unlinkable(host: HostProcess, isolated_env: dict[str, str]) -> None:
    """Questionnaire 2.14: a private window's TLS server socket writes nothing (no file naming
    the site), and its certificate is not the normal window's, so its fingerprint links
    nothing; it lasts the private session (same one while it runs, a new one after)."""
    host.hello()
    before = user_files(isolated_env)
    private = tls_listen(host, 1, incognito=True)
    fingerprint = private["tls"]["certificate"]["sha256Fingerprint"]
    assert served_fingerprint(host, 1, private["localPort"], 10) == fingerprint  # it is the one served
    assert tls_listen(host, 2, incognito=True)["tls"]["certificate"]["sha256Fingerprint"] == fingerprint
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)
    assert written_since(before, isolated_env) == {}
    normal = tls_listen(host, 3, incognito=False)
    assert normal["tls"]["certificate"]["sha256Fingerprint"] != fingerprint
    # The last private window closed: its sockets end, and the next private session's
    # certificate is new.
    host.send({"type": "private_ended"})
    ended = [host.recv(timeout=10) for _ in range(3)]
    assert {(m["type"], m["id"], m.get("name")) for m in ended} == {("error", i, "NotAllowedError") for i in (1, 2, 10)}
    again = tls_listen(host, 4, incognito=True)["tls"]["certificate"]["sha256Fingerprint"]
    assert again not in (fingerprint, normal["tls"]["certificate"]["sha256Fingerprint"])


def test_server_certificates_renew_before_expiry(tmp_path: Path) -> None:
    import datetime as dt

    store = ServerCertificates(tmp_path)
    first = store.for_site("https://a.example")
    assert store.for_site("https://a.example").der == first.der
    assert store.for_site("https://b.example").der != first.der
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=380)
    assert store.for_site("https://a.example", now=later).der != first.der
    (tmp_path / (first.cert_path.name)).write_text("damaged")
    assert store.for_site("https://a.example").der  # a damaged one is made anew


# -- the CLI -----------------------------------------------------------------------------------


def test_tls_fetch_prints_chain_and_pins(isolated_env: dict[str, str], ca: TestCA, servers, tmp_path: Path) -> None:
    issued = ca.issue(["127.0.0.1"])
    server = tls_server(servers, tmp_path, issued)
    result = cli(isolated_env, "tls", "fetch", f"127.0.0.1:{server.port}")
    assert issued.fingerprint in result.stdout and issued.pin in result.stdout
    assert "subject: CN=127.0.0.1" in result.stdout and "issuer: CN=direct-sockets test CA" in result.stdout
    as_json = json.loads(cli(isolated_env, "tls", "fetch", f"127.0.0.1:{server.port}", "--json").stdout)
    assert as_json["chain"][0]["spkiSha256"] == issued.pin
    failed = cli(isolated_env, "tls", "fetch", "127.0.0.1:1", check=False)
    assert failed.returncode == 1 and "127.0.0.1:1" in failed.stderr
