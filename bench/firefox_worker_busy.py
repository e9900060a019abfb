"""Which transports keep a Firefox dedicated worker's bytes moving while its page's main thread spins?

    .venv/bin/python bench/firefox_worker_busy.py [MODE ...]

The feasibility probe behind docs/API.md, "Bytes while the page is busy". No extension: each mode
is the bare web API in a classic worker of a page on 127.0.0.1, against servers here on
127.0.0.1. The page waits 1 s, spins `while (Date.now() < t) {}` for 3 s, waits 1 s, and posts
MB/s in the second before, during the spin and in the second after, and the longest gap in the
spin with nothing counted. Modes (bench/site/busy/worker.js):

  fetch-down[-cors]         a streamed response body, read from fetch() (same-origin, or CORS)
  fetch-up[-par][-blob][-cors]  256 KiB POSTs, one (or four) in flight, ArrayBuffer or Blob body
  ws                        a WebSocket echo, 16 x 64 KiB in flight
  xhr-down                  XMLHttpRequest progress events of a streamed response
  eventsource               server-sent events, 64 KiB each
  port-frame[-same][-up]    a MessagePort to a cross-site iframe (another process under Fission),
                            or a same-site one (the page's process), that sends (or takes)
                            transferred 64 KiB ArrayBuffers
  webtransport              only whether the constructor exists (it needs HTTP/3 and a certificate)

Also prints the prefs that decide it (dom.workers.pFetch.enabled, fission.autostart).
Run it under `flock /tmp/ds-browser.lock` on a shared machine.
"""

from __future__ import annotations

import http.server
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import free_port  # noqa: E402
from tests.browser.harness import FIREFOX_BINARY, FIREFOX_PREFS  # noqa: E402

SITE = Path(__file__).resolve().parent / "site" / "busy"
MODES = ["fetch-down", "fetch-down-cors", "fetch-up", "fetch-up-cors", "fetch-up-par-cors", "fetch-up-blob-cors",
         "ws", "xhr-down", "eventsource", "port-frame", "port-frame-up", "port-frame-same", "port-frame-same-up", "webtransport"]
STREAM_SECONDS = 12  # longer than one mode's 1 + 3 + 1 s, bounded so a stray reader ends


def serve(results: queue.Queue[dict[str, Any]]) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def stream(self, content_type: str, piece: bytes) -> None:
            self.send_response(200)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Type", content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            end = time.monotonic() + STREAM_SECONDS
            try:
                while time.monotonic() < end:
                    self.wfile.write(piece)
            except OSError:
                pass  # the reader went away
            self.close_connection = True

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/stream":
                return self.stream("application/octet-stream", b"x" * 65536)
            if path == "/sse":
                return self.stream("text/event-stream", b"data: " + b"x" * 65536 + b"\n\n")
            file = SITE / path.lstrip("/")
            if file.parent != SITE or not file.is_file():
                self.send_error(404)
                return
            body = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript" if file.suffix == ".js" else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/result":
                results.put(json.loads(data))
            self.send_response(200)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", "0")
            self.end_headers()

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def main() -> int:
    from marionette_driver.marionette import Marionette
    from websockets.sync.server import serve as ws_serve

    modes = sys.argv[1:] or MODES
    results: queue.Queue[dict[str, Any]] = queue.Queue()
    server, port = serve(results)

    def echo(ws: Any) -> None:
        try:
            for message in ws:
                ws.send(message)
        except Exception:
            pass  # the worker was terminated

    ws_port = free_port()
    ws_server = ws_serve(echo, "127.0.0.1", ws_port, max_size=None)
    threading.Thread(target=ws_server.serve_forever, daemon=True).start()

    profile = Path(tempfile.mkdtemp(prefix="ff-busy-"))
    marionette_port = free_port()
    # frame.test: a second site on 127.0.0.1, so that Fission gives the frame its own process.
    prefs = {**FIREFOX_PREFS, "marionette.port": marionette_port, "network.dns.localDomains": "frame.test"}
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items()))
    proc = subprocess.Popen(
        [FIREFOX_BINARY, "--headless", "--marionette", "-remote-allow-system-access", "--no-remote", "--profile", str(profile)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        m = Marionette(host="127.0.0.1", port=marionette_port, startup_timeout=60)
        m.start_session()
        with m.using_context(m.CONTEXT_CHROME):
            print("firefox", m.execute_script("return Services.appinfo.version"), json.dumps(m.execute_script(
                "const r = {}; for (const n of ['dom.workers.pFetch.enabled', 'fission.autostart', 'network.http.http3.enable'])"
                " r[n] = Services.prefs.getPrefType(n) ? Services.prefs.getBoolPref(n) : 'absent'; return r;")), flush=True)
        for mode in modes:
            m.navigate("about:blank")
            m.navigate(f"http://127.0.0.1:{port}/probe.html?mode={mode}&spin=3000"
                       f"&cross=http://frame.test:{port}&ws=ws://127.0.0.1:{ws_port}/")
            try:
                result = results.get(timeout=40)
            except queue.Empty:
                result = {"mode": mode, "error": "no result in 40 s"}
            print(json.dumps(result), flush=True)
    finally:
        proc.kill()
        server.shutdown()
        ws_server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
