"""TLS for TCP sockets: what to verify, how to describe a certificate, and a TLS layer that a
`TcpConnection` drives over its non-blocking socket.

The layer is Python's `ssl.SSLObject` over two memory BIOs, so TLS adds no I/O model of its own:
the connection still reads the OS only under the page's credit, and every record it writes goes
out in order under one lock. Certificate work (names, dates, fingerprints) uses `cryptography`.

How a client socket is verified (docs/TLS.md):
  - the page's `pinnedCertificates`: the leaf's key must match one; no CA or name check, no
    prompt on a mismatch (the page said exactly what it trusts);
  - the page's `caCertificates`: these CAs only (the system store is not added), name checked;
  - otherwise the system store and the name, unless the user trusted a certificate for this
    site and destination: then its key pin replaces both (a device's self-signed certificate).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 20.0
RECV_SIZE = 64 * 1024  # ciphertext read at once; what the page has not asked for waits in the BIO

# OpenSSL's X509_V_ERR codes that mean "no authority vouches for this certificate": the ones a
# user may answer by trusting the certificate itself. Expiry or a wrong name are never asked.
UNTRUSTED_CODES = {
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
}


class TlsFailed(Exception):
    """The handshake or verification failed. `reason` is for the log and the popup only; the
    page hears a generic NetworkError. `askable` failures may be answered by the user trusting
    `certificate` (DER), when the page left verification to the defaults."""

    def __init__(self, reason: str, askable: bool = False, certificate: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.askable = askable
        self.certificate = certificate


@dataclass(frozen=True)
class ClientTls:
    """What a TLS client socket verifies against (see the module's docstring)."""

    server_name: str
    alpn: tuple[str, ...] = ()
    ca_pems: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()  # the page's: final
    trusted: tuple[str, ...] = field(default=())  # the user's trusted certificates for the destination

    @property
    def page_decides(self) -> bool:
        return bool(self.pins or self.ca_pems)

    @classmethod
    def from_options(cls, host: str, options: dict[str, Any], trusted: tuple[str, ...] = ()) -> "ClientTls":
        return cls(
            server_name=options.get("serverName") or host,
            alpn=tuple(options.get("alpn", ())),
            ca_pems=tuple(options.get("caCertificates", ())),
            pins=tuple(options.get("pinnedCertificates", ())),
            trusted=trusted,
        )

    def context(self) -> ssl.SSLContext:
        if self.pins or (self.trusted and not self.ca_pems):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the pin check after the handshake replaces it
        else:
            try:
                context = ssl.create_default_context(cadata="\n".join(self.ca_pems) if self.ca_pems else None)
            except ssl.SSLError as exc:
                raise TlsFailed(f"caCertificates: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.alpn:
            context.set_alpn_protocols(list(self.alpn))
        return context

    def check_pin(self, leaf: bytes | None) -> None:
        """After a handshake without CA verification: the leaf's key must be one pinned."""
        pins = self.pins or self.trusted
        if not pins:
            return
        if leaf is None:
            raise TlsFailed("the server sent no certificate")
        actual = spki_sha256(leaf)
        if actual not in pins:
            # A certificate the user trusted has changed: ask again (the page pinned nothing).
            raise TlsFailed(f"pin mismatch: the server's key is {actual}", askable=not self.pins, certificate=leaf)


def spki_sha256(der: bytes) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo: the form pins take."""
    certificate = x509.load_der_x509_certificate(der)
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def fingerprint(der: bytes) -> str:
    """SHA-256 of the whole certificate, as browsers show it (AB:CD:...)."""
    return hashlib.sha256(der).digest().hex(":").upper()


def describe(der: bytes) -> dict[str, str]:
    certificate = x509.load_der_x509_certificate(der)
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "notBefore": certificate.not_valid_before_utc.isoformat(),
        "notAfter": certificate.not_valid_after_utc.isoformat(),
        "sha256Fingerprint": fingerprint(der),
        "spkiSha256": spki_sha256(der),
    }


def peer_chain(tls: ssl.SSLObject) -> list[bytes]:
    """The certificates the peer sent, leaf first, verified or not (for `tls fetch`)."""
    getter = getattr(tls, "get_unverified_chain", None)  # Python 3.13
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)  # 3.10-3.12
    if getter is not None:
        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


class TlsLayer:
    """One TLS session over a connected non-blocking socket."""

    def __init__(self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.object = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname)
        self._send_lock = asyncio.Lock()
        self.ragged_eof = False

    async def handshake(self, sock: socket.socket, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        try:
            await asyncio.wait_for(self._handshake(sock), timeout)
        except asyncio.TimeoutError as exc:
            raise TlsFailed(f"no TLS handshake within {timeout:g} s") from exc

    async def _handshake(self, sock: socket.socket) -> None:
        while True:
            try:
                self.object.do_handshake()
                await self._flush(sock)
                return
            except ssl.SSLWantReadError:
                await self._flush(sock)
                if not await self._fill(sock):
                    raise TlsFailed("the peer closed the connection during the TLS handshake") from None
            except ssl.SSLCertVerificationError as exc:
                await self._flush_quietly(sock)  # the alert tells the peer why
                askable = exc.verify_code in UNTRUSTED_CODES
                raise TlsFailed(f"certificate verification failed: {exc.verify_message}", askable=askable) from exc
            except ssl.SSLError as exc:
                await self._flush_quietly(sock)
                raise TlsFailed(f"TLS handshake failed: {exc.reason or exc}") from exc

    async def recv(self, sock: socket.socket, budget: int) -> bytes:
        """Up to `budget` bytes of plaintext; b"" at the end of the stream."""
        while True:
            try:
                data = self.object.read(budget)
            except ssl.SSLWantReadError:
                await self._flush(sock)  # anything the read produced (a key update's answer)
                if not await self._fill(sock):
                    self._incoming.write_eof()
                continue
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                # The peer closed TCP without close_notify. Many devices and servers do; the
                # page gets the end of the stream, and the log says it was not a clean one.
                self.ragged_eof = True
                return b""
            except ssl.SSLError as exc:
                raise OSError(f"TLS: {exc.reason or exc}") from exc
            if self._outgoing.pending:
                await self._flush(sock)
            return data

    async def sendall(self, sock: socket.socket, data: bytes) -> None:
        try:
            self.object.write(data)
        except ssl.SSLError as exc:
            raise OSError(f"TLS: {exc.reason or exc}") from exc
        await self._flush(sock)

    async def close_write(self, sock: socket.socket) -> None:
        """Sends close_notify: TLS's end of the writing side. Reading goes on."""
        try:
            self.object.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify comes when it is done writing
        except ssl.SSLError as exc:
            log.info("TLS close_notify: %s", exc)
        await self._flush(sock)

    def summary(self) -> dict[str, Any]:
        cipher = self.object.cipher()
        leaf = self.object.getpeercert(binary_form=True)
        summary: dict[str, Any] = {
            "version": self.object.version() or "",
            "cipher": cipher[0] if cipher else "",
            "alpn": self.object.selected_alpn_protocol(),
        }
        if leaf:
            summary["peerCertificate"] = describe(leaf)
        return summary

    async def _fill(self, sock: socket.socket) -> bool:
        data = await asyncio.get_running_loop().sock_recv(sock, RECV_SIZE)
        if not data:
            return False
        self._incoming.write(data)
        return True

    async def _flush(self, sock: socket.socket) -> None:
        # One lock: the reading and the writing task both produce records, which must reach
        # the socket in the order the TLS object made them.
        async with self._send_lock:
            pending = self._outgoing.read()
            if pending:
                await asyncio.get_running_loop().sock_sendall(sock, pending)

    async def _flush_quietly(self, sock: socket.socket) -> None:
        try:
            await self._flush(sock)
        except OSError:
            pass


async def probe_certificate(address: Any, family: int, server_name: str, timeout: float = HANDSHAKE_TIMEOUT) -> list[bytes]:
    """The chain a server presents, without verifying it: for the user to judge a certificate
    no authority vouches for, and for `direct-sockets tls fetch`."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        layer = TlsLayer(context, server_side=False, server_hostname=server_name)
        await layer.handshake(sock, timeout)
        chain = peer_chain(layer.object)
        await layer.close_write(sock)
        return chain
    finally:
        sock.close()


def fetch_chain(host: str, port: int, server_name: str | None = None) -> list[bytes]:
    """The chain HOST:PORT sends, unverified (for `direct-sockets tls fetch`)."""

    async def run() -> list[bytes]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        return await probe_certificate(address, family, server_name or host)

    return asyncio.run(run())
