"""`direct-sockets demo`: a local page with a telnet-style TCP client, a UDP sender and receiver,
and a small TCP server, served on 127.0.0.1 with the echo services it talks to."""

from __future__ import annotations

import asyncio
import http.server
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Callable

from ..trust.permissions import Grant, PermissionStore

DEMO_FILES = resources.files(__package__)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # the client's FIN, answered with ours
    except ConnectionError:
        pass
    finally:
        writer.close()


def _http_handler(echo_port: int) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(DEMO_FILES), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                # The page learns the echo service's port from the page itself.
                body = (DEMO_FILES / "index.html").read_text("utf-8").replace('<html lang="en">', f'<html lang="en" data-echo="{echo_port}">')
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            super().do_GET()

    return Handler


def grant_demo(store: PermissionStore, origin: str, echo_port: int) -> list[Grant]:
    grants = [
        Grant(origin, "tcp", "127.0.0.1", "*"),  # the echo service, and the page's own server
        Grant(origin, "udp", "127.0.0.1", echo_port),
        Grant(origin, "udp-bind", "127.0.0.1", "*"),
        Grant(origin, "tcp-listen", "127.0.0.1", "*"),
    ]
    for grant in grants:
        store.grant(grant)
    return grants


async def serve(http_port: int, echo_port: int, listening: Callable[[], None] = lambda: None) -> None:
    """Serves the page and the echo services until cancelled; `listening` is called once all
    three listen."""
    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(_tcp_echo, "127.0.0.1", echo_port)
    udp = None
    httpd = None
    try:
        udp, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", echo_port))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), _http_handler(echo_port))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        listening()
        await asyncio.Event().wait()
    finally:
        if httpd is not None:
            httpd.shutdown()
        if udp is not None:
            udp.close()
        tcp.close()


def run(http_port: int, echo_port: int, grant: bool, store_path: Path) -> int:
    origin = f"http://127.0.0.1:{http_port}"

    def listening() -> None:
        # Said only now, and flushed (a pipe is block-buffered): whoever waits for this line
        # may connect at once. A demo that cannot listen grants nothing.
        if grant:
            for g in grant_demo(PermissionStore(store_path), origin, echo_port):
                print(f"granted {origin} {g.kind} {g.host}:{g.port}")
        print(f"The demo is at {origin}/ (echo services on 127.0.0.1:{echo_port}, TCP and UDP).")
        print("Open it in a browser with the extension loaded. Ctrl-C stops it.")
        if not grant:
            print(f"Each first use asks in a consent window; `--grant` allows the demo's destinations ahead (revoke with "
                  f"`direct-sockets permissions revoke --origin {origin}`).")
        sys.stdout.flush()

    try:
        asyncio.run(serve(http_port, echo_port, listening))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"direct-sockets: the demo cannot listen: {exc} (try --http-port and --echo-port)")
        return 1
    return 0
