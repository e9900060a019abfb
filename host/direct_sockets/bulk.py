"""The bulk path: a TCP socket's bytes over a loopback WebSocket instead of native messaging.

Native messaging carries every decision (opening, consent, policy, release) and stays the only
way in. Once a socket is open, the host may offer it a WebSocket: `opened` carries a URL on
127.0.0.1 and a 256-bit secret made for that socket alone. The page's API (or the extension's
bulk frame for it) connects and sends the secret as its first message; the host answers `attached`, and
from then on that socket's stream (data, credit, acknowledgements, the end) travels over that
WebSocket, binary frames for bytes, JSON text for the rest (docs/BULK.md).

A secret works once, only within `ATTACH_TIMEOUT`, and only for the socket it was made for: a
second client, a replay or a guess gets the connection closed with 1008 and nothing else. No
message on the WebSocket can open anything.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from .tcp import TcpConnection

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 10.0  # seconds from `opened` for the WebSocket to attach, and for its secret
MAX_FRAME = 1024 * 1024  # the most a page's binary frame may carry (its chunks are at most 1 MiB)


class BulkServer:
    """One loopback WebSocket server per host process, started when first needed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: Server | None = None
        self._starting: asyncio.Lock | None = None
        self._offers: dict[str, "TcpConnection"] = {}
        self.url = ""

    async def offer(self, connection: "TcpConnection") -> dict[str, str] | None:
        """A secret for this connection's WebSocket; None if the server cannot run."""
        try:
            await self._start()
        except OSError as exc:
            log.warning("bulk path unavailable: %s", exc)
            return None
        token = secrets.token_urlsafe(32)
        self._offers[token] = connection
        asyncio.get_running_loop().call_later(ATTACH_TIMEOUT, self._expire, token)
        return {"url": self.url, "token": token}

    def withdraw(self, connection: "TcpConnection") -> None:
        for token, offered in list(self._offers.items()):
            if offered is connection:
                del self._offers[token]

    def _expire(self, token: str) -> None:
        connection = self._offers.pop(token, None)
        if connection is not None:
            log.info("socket %d: its WebSocket never came; it stays on native messaging", connection.id)
            connection.decline_bulk("no WebSocket within the time allowed")

    async def _start(self) -> None:
        if self._server is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is not None:
                return
            self._server = await serve(
                self._handle, self._host, 0,
                compression=None,  # bytes of sockets are not worth compressing, and it costs CPU
                max_size=MAX_FRAME, max_queue=16, write_limit=1024 * 1024,
                ping_interval=None,  # loopback: a dead peer closes the TCP connection
                server_header=None,
            )
            port = next(iter(self._server.sockets)).getsockname()[1]
            self.url = f"ws://{self._host}:{port}/"
            log.info("bulk path listening on %s", self.url)

    def _claim(self, token: str) -> "TcpConnection | None":
        # Constant-time comparison: the secret must not leak through timing.
        for offered, connection in list(self._offers.items()):
            if hmac.compare_digest(offered.encode(), token.encode()):
                del self._offers[offered]
                return connection
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            first = await asyncio.wait_for(ws.recv(), ATTACH_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionClosed):
            await ws.close(1008, "no secret")
            return
        connection = self._claim(first) if isinstance(first, str) and len(first) < 100 else None
        if connection is None:
            log.warning("bulk path: refused a WebSocket from %s with a wrong or used secret", ws.remote_address)
            await ws.close(1008, "wrong secret")
            return
        await connection.attach(ws)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def event_text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
