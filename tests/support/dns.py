"""A small DNS server for the tests, on 127.0.0.1:53 inside the session's own namespaces.

It answers A and AAAA questions from `records`, which a test changes as it likes (with TTL 0,
so nothing is cached), and says NXDOMAIN for everything else: a name can resolve to a public
address now and to loopback a moment later, which is what a DNS rebinding attack does.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading


class TestResolver:
    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(query), client)
            except (OSError, ValueError, IndexError, struct.error):
                continue

    def _answer(self, query: bytes) -> bytes:
        (ident,) = struct.unpack("!H", query[:2])
        labels, offset = [], 12
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii").lower())
            offset += 1 + length
        qtype, _ = struct.unpack("!HH", query[offset + 1 : offset + 5])
        question = query[12 : offset + 5]
        name = ".".join(labels)
        self.queries.append(name)
        if name not in self.records:
            return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        wanted = {1: 4, 28: 6}.get(qtype)
        answers = [ipaddress.ip_address(a) for a in self.records[name]]
        answers = [a for a in answers if a.version == wanted]
        body = b"".join(
            struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(a.packed)) + a.packed for a in answers
        )
        return struct.pack("!HHHHHH", ident, 0x8180, 1, len(answers), 0, 0) + question + body

    def close(self) -> None:
        self.sock.close()
