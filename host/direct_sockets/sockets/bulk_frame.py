"""The bulk frame the host serves itself, for Firefox's dedicated workers (docs/BULK.md, "The
host's frame, for Firefox's workers").

Firefox drives a worker's WebSocket from its page's main thread: a page busy for seconds stalls
its worker's sockets. A `MessagePort` from the worker to a cross-site frame does not stall, since
under Fission that frame has a process, and a main thread, of its own (measured). So the host
serves a frame, the page's API embeds it hidden and hands its worker a port to it, and the frame
holds the socket's WebSocket.

Each page origin gets a listener of its own (a `FrameSite`), named in its sockets' offers, under
the loopback name that is not the page's site (`localhost` for a page on 127.0.0.1, 127.0.0.1
for any other): a port the frame's URL shows the page is that page's alone, so it cannot link
the user across sites, and it serves nothing but that page's frame. The frame runs the
extension's own `bulk.js` (one implementation of the bulk frame); there it connects only to the
listener that served it, and claims a socket for the page the browser says embedded it
(`event.origin`). The host accepts that claim only from the frame's own origin, for the
listener's page, and for a socket of that page whose offer named this listener (bulk.py).

Only two paths exist, and only under the listener's own host names (a rebound DNS name gets
404). Nothing in a response depends on the request beyond that choice.
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..resources import ResourceMissing, extension_dir

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
FRAME_PATH = "/frame"
SCRIPT_PATH = "/frame.js"

FRAME_HTML = b"""<!doctype html>
<meta charset="utf-8">
<title>Direct Sockets bulk path</title>
<script src="/frame.js"></script>
"""


@dataclass(frozen=True, eq=False)
class FrameSite:
    """A listener that serves the host's frame to one page origin. Two are the same only if
    they are one object: a listener closed, and another given the same port, is another."""

    page: str  # the page's origin, as the session knows it
    port: int

    @property
    def origins(self) -> frozenset[str]:
        """The origins the frame has: its WebSockets carry one of them."""
        return frozenset(f"http://{name}:{self.port}" for name in LOOPBACK_NAMES)

    @property
    def url(self) -> str:
        """Where the page embeds it: under a name of another site than the page's."""
        name = "localhost" if urlsplit(self.page).hostname == "127.0.0.1" else "127.0.0.1"
        return f"http://{name}:{self.port}{FRAME_PATH}"


def is_upgrade(request: Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@cache
def _script() -> bytes | None:
    """The extension's bulk.js, which ships beside this package (resources.py)."""
    try:
        return (extension_dir() / "bulk.js").read_bytes()
    except (ResourceMissing, OSError) as exc:
        log.warning("bulk path: the host's frame cannot be served: %s", exc)
        return None


def response_for(request: Request, port: int) -> Response:
    """The answer to a plain HTTP request on the bulk port: the frame, its script, or 404."""
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    script = _script()
    # What asks for it, as the browser says (Fetch Metadata, which a page cannot set): the frame
    # only as a frame, its script only for the frame itself. Another page that loads the script
    # from each loopback port in turn, to find the listeners, is answered as for any other path.
    wanted = {FRAME_PATH: ("iframe", None), SCRIPT_PATH: ("script", "same-origin")}.get(request.path)
    if wanted is None or request.headers.get("Host") not in hosts or script is None or not _fetched_as(request, *wanted):
        return _response(404, "Not Found", "text/plain; charset=utf-8", b"Not Found\n")
    if request.path == SCRIPT_PATH:
        return _response(200, "OK", "text/javascript; charset=utf-8", script)
    return _response(200, "OK", "text/html; charset=utf-8", FRAME_HTML, csp=(
        # Its own script only; it connects to the bulk server alone.
        f"default-src 'none'; script-src 'self'; connect-src ws://127.0.0.1:{port}; base-uri 'none'; form-action 'none'"
    ))


def _fetched_as(request: Request, destination: str, site: str | None) -> bool:
    headers = request.headers
    return headers.get("Sec-Fetch-Dest") == destination and (site is None or headers.get("Sec-Fetch-Site") == site)


def _response(status: int, reason: str, content_type: str, body: bytes, csp: str | None = None) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        # A cross-origin-isolated page may embed it: it opts in to being embedded cross-origin.
        ("Cross-Origin-Resource-Policy", "cross-origin"),
        ("Cross-Origin-Embedder-Policy", "require-corp"),
    ])
    if csp is not None:
        headers["Content-Security-Policy"] = csp
    return Response(status, reason, headers, body)
