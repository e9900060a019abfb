"""TLS from a real page: verification, pins, STARTTLS, ALPN, trusting a device's certificate in
the consent window, and a TLS server socket, in real headless Chromium and Firefox."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from pathlib import Path
from typing import Iterator

import pytest

from direct_sockets.sockets.tls import describe
from tests.browser.harness import Browser, wait_for
from tests.support.pki import TestCA, TlsServer, self_signed, sink_then_source, starttls_server, tls_echo
from tests.support.servers import TcpServer

pytestmark = pytest.mark.browser


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def servers() -> Iterator[list[TcpServer]]:
    made: list[TcpServer] = []
    yield made
    for server in made:
        server.close()


def test_tls_echo_with_ca_certificates_reports_the_session(browser: Browser, ca: TestCA, servers: list, tmp_path: Path) -> None:
    issued = ca.issue(["127.0.0.1"])
    server = TlsServer(issued, tmp_path, tls_echo, alpn=["h2"])
    servers.append(server)
    browser.grant(f"127.0.0.1:{server.port}")
    result = browser.run("tlsEcho", port=server.port, text="secret ✓",
                         options={"secureTransport": "on", "caCertificates": [ca.pem], "alpn": ["h2"]})
    assert result["opened"] and result["got"] == "secret ✓" and result["frozen"]
    assert result["tls"]["alpn"] == "h2" and result["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert result["tls"]["peerCertificate"] == describe(issued.der)


def test_bad_certificates_and_pins_are_refused_generically(browser: Browser, ca: TestCA, servers: list, tmp_path: Path) -> None:
    cases = {
        "wrong-name": (ca.issue(["other.test"]), {"caCertificates": [ca.pem]}),
        "expired": (ca.issue(["127.0.0.1"], expired=True), {"caCertificates": [ca.pem]}),
        "unknown-issuer": (TestCA("another CA").issue(["127.0.0.1"]), {"caCertificates": [ca.pem]}),
        "pin-mismatch": (self_signed(["device"]), {"pinnedCertificates": [self_signed(["x"]).pin]}),
    }
    for case, (issued, options) in cases.items():
        server = TlsServer(issued, tmp_path, tls_echo)
        servers.append(server)
        browser.grant(f"127.0.0.1:{server.port}")
        result = browser.run("tlsEcho", port=server.port, text="x", options={"secureTransport": "on", **options})
        assert result == {"opened": False, "error": {"name": "NetworkError", "message": "Network error.", "isDOMException": True}}, case


def test_pin_match_is_accepted(browser: Browser, servers: list, tmp_path: Path) -> None:
    device = self_signed(["printer.local"])
    server = TlsServer(device, tmp_path, tls_echo)
    servers.append(server)
    browser.grant(f"127.0.0.1:{server.port}")
    result = browser.run("tlsEcho", port=server.port, text="pinned", options={"secureTransport": "on", "pinnedCertificates": [device.pin]})
    assert result["got"] == "pinned" and result["tls"]["peerCertificate"]["spkiSha256"] == device.pin


def test_tls_option_checks(browser: Browser) -> None:
    assert browser.run("tlsOptionChecks") == {
        "badEnum": "TypeError", "tlsOptionWithoutTls": "TypeError", "badPin": "TypeError", "badCa": "TypeError",
        "alpnNotSequence": "TypeError", "ok": "ok", "startTlsOnPlain": "InvalidStateError",
    }


def test_starttls_dialogue(browser: Browser, ca: TestCA, servers: list, tmp_path: Path) -> None:
    issued = ca.issue(["mail.test"])
    context = issued.server_context(tmp_path)
    server = TcpServer(starttls_server(context))
    servers.append(server)
    browser.grant(f"127.0.0.1:{server.port}")
    result = browser.run("starttls", port=server.port, options={"caCertificates": [ca.pem], "serverName": "mail.test"})
    assert result["greeting"] == "220 test ESMTP\r\n" and result["goAhead"] == "220 Ready to start TLS\r\n"
    assert result["echoed"] == "EHLO secure\r\n" and result["endDone"] and result["isTCPSocket"]
    assert result["spki"] == issued.pin
    assert result["oldClosed"] == {"ok": True}  # the plain-text socket closed cleanly
    assert result["oldWritable"]["ok"] is False and result["oldWritable"]["error"]["name"] == "InvalidStateError"
    assert result["secondCall"]["ok"] is False and result["secondCall"]["error"]["name"] == "InvalidStateError"
    assert server.wait_results(1) == ["secured"]


def test_eight_mib_both_ways_over_tls(browser: Browser, ca: TestCA, servers: list, tmp_path: Path) -> None:
    size = 8 << 20
    download = os.urandom(size)

    server = TlsServer(ca.issue(["127.0.0.1"]), tmp_path, sink_then_source(download))
    servers.append(server)
    browser.grant(f"127.0.0.1:{server.port}")
    result = browser.run("bothWays", port=server.port, size=size, options={"secureTransport": "on", "caCertificates": [ca.pem]}, timeout=120)
    assert result["receivedBytes"] == size and result["receivedSha"] == hashlib.sha256(download).hexdigest()
    assert server.wait_results(1) == [result["uploadSha"]]


def test_self_signed_device_trusted_in_the_consent_window(browser: Browser, servers: list, tmp_path: Path) -> None:
    device = self_signed(["printer.local"])
    server = TlsServer(device, tmp_path, tls_echo)
    servers.append(server)
    browser.grant(f"127.0.0.1:{server.port}")
    result, shown = browser.run_answering("tlsEcho", ["always"], port=server.port, text="trusted", options={"secureTransport": "on"})
    assert shown[0]["cert-fingerprint"] == device.fingerprint
    assert "self-signed" in shown[0]["cert-reason"]
    assert shown[0]["action"].startswith("wants you to trust the TLS certificate")
    assert result["got"] == "trusted" and result["tls"]["peerCertificate"]["sha256Fingerprint"] == device.fingerprint
    # Stored as a pin with the site's grants: the next connection asks nothing.
    again = browser.run("tlsEcho", port=server.port, text="again", options={"secureTransport": "on"})
    assert again["got"] == "again"


def test_tls_server_socket(browser: Browser) -> None:
    browser.grant("127.0.0.1:*", kind="tcp-listen")
    inbox = browser.start("tlsServer")
    ready = inbox.get(timeout=60)
    assert ready["ok"], ready
    port, certificate = ready["value"]["localPort"], ready["value"]["certificate"]
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # verified by the fingerprint the page reported, below
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, client.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None and describe(der)["sha256Fingerprint"] == certificate["sha256Fingerprint"]
        tls.sendall(b"hello server\n")
        reply = b""
        while True:
            try:
                data = tls.recv(1024)
            except ssl.SSLZeroReturnError:
                break
            if not data:
                break
            reply += data
    assert reply == b"you said hello server\n"
    result = inbox.get(timeout=60)
    assert result["ok"] and result["value"] == {"got": "hello server\n", "acceptedTls": "TLSv1.3"}


def test_verification_reason_shown_in_the_popup(browser: Browser, ca: TestCA, servers: list, tmp_path: Path) -> None:
    from tests.browser.test_popup import ExtensionPage

    server = TlsServer(ca.issue(["127.0.0.1"], expired=True), tmp_path, tls_echo)
    servers.append(server)
    browser.grant(f"127.0.0.1:{server.port}")
    result = browser.run("tlsEcho", port=server.port, text="x", options={"secureTransport": "on", "caCertificates": [ca.pem]})
    assert result["opened"] is False and result["error"]["name"] == "NetworkError"
    popup = ExtensionPage(browser, f"popup.html?tab={browser.current_tab_id()}")
    try:
        assert wait_for(lambda: "certificate has expired" in popup.text("#failures"), timeout=10)
    finally:
        popup.close()
