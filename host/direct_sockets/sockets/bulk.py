"""The bulk path: a TCP socket's bytes over a loopback WebSocket instead of native messaging.

Native messaging carries every decision (opening, consent, policy, release) and stays the only
way in. Once a socket is open, the host may offer it a WebSocket: `opened` carries a URL on
127.0.0.1 and a 256-bit secret made for that socket alone. The page's API (or the extension's
bulk frame for it) connects and sends the secret as its first message; the host answers `attached`, and
from then on that socket's stream (data, credit, acknowledgements, the end) travels over that
WebSocket, binary frames for bytes, JSON text for the rest (docs/BULK.md), each text message
checked against its schema (protocol/bulk_control.py) before the socket sees it. The socket
and this transport know each other only through bulk_link.py: here a socket is a
`BulkSocket`, and to it a `BulkChannel` (bulk_channel.py) is a `PageLink`.

A secret works once, only within `ATTACH_TIMEOUT`, only for the socket it was made for, and only
from a WebSocket whose `Origin` may hold it: the socket's own page (its WebSocket), the
extension (its bulk frame, Chromium), or, in Firefox, the host's own frame (bulk_frame.py),
served to that page alone on a listener of its own, claiming for the page the browser says
embedded it. Every failed claim (a guess, a replay, a late secret, another origin, silence) is
closed alike, with 1008 and no reason, at once; why goes to the host log only. No message on
the WebSocket can open anything.

Connections that have not claimed a socket are bounded: at most `MAX_UNCLAIMED` at once (the
oldest is dropped for a new one) and each for at most `CLAIM_TIMEOUT`, so another local process
cannot hold the host's descriptors by connecting and saying nothing.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import secrets
import socket
from typing import Callable

from ..trust.destinations import InvalidDestination, normalize_origin
from .bulk_channel import CLAIM_TIMEOUT, BulkChannel
from .bulk_frame import FrameSite
from .bulk_link import BulkSocket

log = logging.getLogger(__name__)

__all__ = ["ATTACH_TIMEOUT", "CLAIM_TIMEOUT", "MAX_UNCLAIMED", "BulkServer"]

ATTACH_TIMEOUT = 10.0  # seconds from `opened` for the WebSocket to attach, and for its secret
# Connections that have not claimed a socket yet (each for at most CLAIM_TIMEOUT): a page's
# WebSocket sends its secret the moment it opens, and the page gives up after 3 s anyway.
MAX_UNCLAIMED = 64
# Listeners serving the host's frame at once (Firefox's), one per page origin, tab and private
# state, each open while a socket it was offered for lives: past this many in all, or the second
# many for one origin (its tabs), no frame is offered (the worker takes its own WebSocket).
MAX_FRAME_SITES = 64
MAX_FRAME_SITES_PER_ORIGIN = 8


class BulkServer:
    """One loopback WebSocket server per host process, started when first needed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock | None = None
        # Offers by the SHA-256 of their secret: a lookup reveals nothing about the secret's
        # bytes, and the secret itself is then compared in constant time.
        self._offers: dict[bytes, tuple[str, BulkSocket]] = {}
        self._channels: set[BulkChannel] = set()
        # Connections that have not claimed a socket, oldest first (`MAX_UNCLAIMED`).
        self._unclaimed: collections.OrderedDict[BulkChannel, None] = collections.OrderedDict()
        self.url = ""
        # Who may claim (`claim_origins`): the socket's page, and the extension's own origin.
        # The session sets these; until then only a page whose origin is known may claim.
        self.page_origin: Callable[[BulkSocket], str | None] = lambda connection: None
        self.extension_origin: str | None = None
        # The browsing context a socket's page is in (its tab, and whether it is private): each
        # gets a frame listener of its own, so that no two share the port the frame shows.
        self.page_context: Callable[[BulkSocket], tuple[object, ...]] = lambda connection: ()
        self._serves_frame = False  # Firefox's: the host's own frame, for its workers
        # The listeners that serve it, by (the page's origin, *page_context).
        self._frame_sites: dict[tuple[object, ...], tuple[asyncio.Server, FrameSite]] = {}
        self._making_site = asyncio.Lock()  # two sockets of a page offered at once: one listener
        self._site_of: dict[BulkSocket, tuple[object, ...]] = {}  # a socket offered a frame: its listener's key

    async def offer(self, connection: BulkSocket) -> dict[str, str] | None:
        """A secret for this socket's WebSocket; None if the server cannot run."""
        try:
            await self._start()
        except OSError as exc:
            log.warning("bulk path unavailable: %s", exc)
            return None
        token = secrets.token_urlsafe(32)
        key = _key(token)
        self._offers[key] = (token, connection)
        asyncio.get_running_loop().call_later(ATTACH_TIMEOUT, self._expire, key)
        offer = {"url": self.url, "token": token}
        site = await self._frame_site(connection)
        if site is not None:
            offer["frame"] = site.url
        return offer

    def for_caller(self, browser: str, extension: str) -> None:
        """Who the extension is, as the browser that started the host said (caller.py).
        Chromium's bulk frame sends its `chrome-extension://ID` origin, which the host knows.
        Firefox has no extension bulk frame (its `moz-extension://UUID` would name the install
        to pages, and the host could not know the UUID anyway): there the host serves a frame
        of its own (bulk_frame.py), which its workers' sockets take."""
        if browser == "chromium":
            self.extension_origin = extension.rstrip("/")
        elif browser == "firefox":
            # Its workers' sockets take the host's own frame instead (bulk_frame.py).
            self._serves_frame = True

    async def _frame_site(self, connection: BulkSocket) -> FrameSite | None:
        """The listener serving the host's frame to this socket's page in its tab (Firefox's),
        made when first needed; None where there is none."""
        page = self.page_origin(connection)
        if not self._serves_frame or page is None:
            return None
        try:
            key = (normalize_origin(page), *self.page_context(connection))
        except InvalidDestination:
            return None
        async with self._making_site:
            try:
                site = await self._site_for(key, page)
            except asyncio.CancelledError:  # the socket went while its listener was made
                self._close_if_unused(key)
                raise
        if site is not None:
            self._site_of[connection] = key
        return site

    async def _site_for(self, key: tuple[object, ...], page: str) -> FrameSite | None:
        if key in self._frame_sites:
            return self._frame_sites[key][1]
        same_origin = sum(1 for other in self._frame_sites if other[0] == key[0])
        if len(self._frame_sites) >= MAX_FRAME_SITES or same_origin >= MAX_FRAME_SITES_PER_ORIGIN:
            log.warning("bulk path: frame listeners in use (%d, %d for %s): no frame", len(self._frame_sites), same_origin, page)
            return None
        # Bound first: each connection's channel is made knowing the site, which names the port.
        # (TCP_NODELAY is set on every accepted connection, BulkChannel.connection_made.)
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listening.bind((self._host, 0))
            site = FrameSite(page, listening.getsockname()[1])
            # Not serving yet: made without a pause, so it is recorded (and closed with its
            # sockets) before anything can cancel us.
            server = await asyncio.get_running_loop().create_server(lambda: BulkChannel(self, site), sock=listening, start_serving=False)
        except OSError as exc:
            listening.close()
            log.warning("bulk path: no frame for %s: %s", page, exc)
            return None
        self._frame_sites[key] = (server, site)
        await server.start_serving()
        return site

    def _close_if_unused(self, key: tuple[object, ...]) -> None:
        """Closes a frame's listener once no socket it was offered for lives (offered, attached
        or not: an offer may wait for its page). Its port is then free for anyone: the page's
        API embeds only the frame a socket's own offer names, so no later socket goes there.
        Connections through it do not count: anyone could hold one, to keep it open; they live
        on without it."""
        entry = self._frame_sites.get(key)
        if entry is None or key in self._site_of.values():
            return
        del self._frame_sites[key]
        entry[0].close()

    def withdraw(self, connection: BulkSocket) -> None:
        for key, (_, offered) in list(self._offers.items()):
            if offered is connection:
                del self._offers[key]
        site_key = self._site_of.pop(connection, None)
        if site_key is not None:
            self._close_if_unused(site_key)

    def _expire(self, key: bytes) -> None:
        _, connection = self._offers.pop(key, (None, None))
        if connection is not None:
            log.info("socket %d: its WebSocket never came; it stays on native messaging", connection.id)
            connection.decline("no WebSocket within the time allowed")

    async def _start(self) -> None:
        if self._server is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is not None:
                return
            self._server = await asyncio.get_running_loop().create_server(lambda: BulkChannel(self), self._host, 0)
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"ws://{self._host}:{port}/"
            log.info("bulk path listening on %s", self.url)

    def claim(self, token: str, origin: str | None, page: str | None = None, site: FrameSite | None = None) -> BulkSocket | None:
        """The socket `token` was made for, if `origin` may claim it (on a frame's listener
        `site`, for the `page` that embedded the frame); the offer is then used up. A secret
        from the wrong origin leaves the offer for the page (and is logged)."""
        key = _key(token)
        token_offered, connection = self._offers.get(key, ("", None))
        # Constant-time comparison: the secret must not leak through timing.
        if connection is None or not hmac.compare_digest(token_offered.encode(), token.encode()):
            return None
        if not self._may_claim(origin, connection, page, site):
            log.warning("bulk path: socket %d's secret came from origin %r, which may not hold it", connection.id, origin)
            return None
        del self._offers[key]
        return connection

    def _may_claim(self, origin: str | None, connection: BulkSocket, page: str | None, site: FrameSite | None) -> bool:
        if origin is None:  # a browser's WebSocket always has one
            return False
        if site is not None:
            # On a frame's listener only that frame claims, for the page it was made for, which
            # embedded it, and only a socket whose offer named this very listener (so a frame of
            # one tab, or of a listener since closed, claims nothing through another): the
            # socket's page must be that one too (below).
            if origin not in site.origins or page is None or not _same_origin(page, site.page):
                return False
            if self._frame_sites.get(self._site_of.get(connection, ()), (None, None))[1] is not site:
                return False
            origin = page
        elif self.extension_origin is not None and origin == self.extension_origin:
            return True
        owner = self.page_origin(connection)
        # "null" (an opaque origin), or nothing like an origin, is no page's
        return owner is not None and _same_origin(origin, owner)

    # -- connections that have not claimed a socket -------------------------------------------

    def connected(self, channel: BulkChannel) -> None:
        self._channels.add(channel)
        self._unclaimed[channel] = None
        while len(self._unclaimed) > MAX_UNCLAIMED:
            # The oldest goes: holding connections open then gains a flood nothing, and a page's
            # WebSocket, which claims the moment it opens, is the newest.
            oldest, _ = self._unclaimed.popitem(last=False)
            oldest.drop("more than %d connections without a secret" % MAX_UNCLAIMED)

    def claimed(self, channel: BulkChannel) -> None:
        self._unclaimed.pop(channel, None)

    def lost(self, channel: BulkChannel) -> None:
        self._channels.discard(channel)
        self._unclaimed.pop(channel, None)

    async def close(self) -> None:
        for server, _ in self._frame_sites.values():
            server.close()
        self._frame_sites.clear()
        for channel in list(self._channels):
            channel.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def _same_origin(one: str, other: str) -> bool:
    try:
        return normalize_origin(one) == normalize_origin(other)
    except InvalidDestination:
        return False


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()
