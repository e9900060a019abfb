"""Certificates made for the tests with `cryptography`: a private CA, server certificates it
signs (valid, expired, for another name), self-signed ones, and TLS servers on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from direct_sockets.sockets.tls import fingerprint, spki_sha256
from tests.support.servers import Handler, TcpServer

NOW = dt.datetime.now(dt.timezone.utc)


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)

    @property
    def pin(self) -> str:
        return spki_sha256(self.der)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.der)

    def server_context(self, directory: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.files(directory, f"server-{self.pin[:8].replace('/', '_')}"))
        return context

    def files(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "direct-sockets test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, names: list[str], expired: bool = False) -> Issued:
        return _leaf(names, self.name, self.key, expired)


def _leaf(names: list[str], issuer: x509.Name | None, issuer_key: ec.EllipticCurvePrivateKey | None, expired: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    start, end = (NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1)) if expired else (NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=30))
    subject = _name(names[0])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key or key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def self_signed(names: list[str]) -> Issued:
    return _leaf(names, None, None)


class TlsServer(TcpServer):
    """A TcpServer whose connections are TLS (the handler gets the wrapped socket)."""

    def __init__(self, issued: Issued, directory: Path, handler: Handler, alpn: list[str] | None = None, host: str = "127.0.0.1") -> None:
        cert, key = issued.files(directory, f"server-{id(self)}")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        if alpn:
            self.context.set_alpn_protocols(alpn)
        self.handshake_errors: list[BaseException] = []

        def wrapped(conn: socket.socket) -> object:
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(exc)
                return None
            try:
                return handler(tls)
            finally:
                tls.close()

        super().__init__(wrapped, host)


def tls_echo(conn: ssl.SSLSocket) -> None:
    """Echoes until the peer's close_notify, answers with its own."""
    while True:
        try:
            data = conn.recv(1 << 16)
        except ssl.SSLZeroReturnError:
            data = b""
        if not data:
            break
        conn.sendall(data)
    conn.unwrap()


def read_to_close_notify(conn: ssl.SSLSocket) -> bytes:
    """Everything the client sends until its close_notify (or a bare EOF)."""
    got = bytearray()
    while True:
        try:
            data = conn.recv(1 << 16)
        except ssl.SSLZeroReturnError:
            break
        if not data:
            break
        got += data
    return bytes(got)


def sink_then_source(download: bytes) -> Callable[[ssl.SSLSocket], object]:
    """Reads to the client's close_notify, then sends `download` (TLS half-close) and its own
    close_notify; returns the SHA-256 of what it read."""
    import hashlib

    def handler(conn: ssl.SSLSocket) -> object:
        digest = hashlib.sha256(read_to_close_notify(conn)).hexdigest()
        conn.sendall(download)
        conn.unwrap()
        return digest

    return handler


def starttls_server(context: ssl.SSLContext, inject: bytes = b"") -> Callable[[socket.socket], object]:
    """An SMTP-like dialogue: greeting, STARTTLS, then TLS echo. `inject` is plaintext sent right
    after the go-ahead (a man in the middle's STARTTLS injection)."""

    def handler(conn: socket.socket) -> object:
        conn.sendall(b"220 test ESMTP\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = conn.recv(1)
            if not chunk:
                return "eof before STARTTLS"
            line += chunk
        if line.strip().upper() != b"STARTTLS":
            conn.sendall(b"500 expected STARTTLS\r\n")
            return f"got {line!r}"
        conn.sendall(b"220 Ready to start TLS\r\n" + inject)
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            return f"handshake failed: {exc}"
        tls_echo(tls)
        return "secured"

    return handler
