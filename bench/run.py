"""direct-sockets against websockify and the machine's floor, side by side in one run.

    .venv/bin/python bench/run.py [--quick] [--echo-only] [--browsers chromium,firefox] [--json bench/results.json]

Prints a table and writes it as JSON. Browsers run headless with no driver attached while they
are timed: Chromium is started directly with the page's URL; Firefox is handed the add-on and the
URL over Marionette, whose session is then closed. The page posts its figures to a local endpoint.
Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.harness import CHROMIUM_BINARY, CHROMIUM_FLAGS, EXTENSION, FIREFOX_BINARY, Firefox, browser_env, cli  # noqa: E402
from tests.support.hostproc import HostProcess, find_host_pids  # noqa: E402
from tests.support.servers import echo_server_process  # noqa: E402

MiB = 1024 * 1024
T = TypeVar("T")
SITE = Path(__file__).resolve().parent / "site"


# -- local servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_echo_server() -> tuple[subprocess.Popen[bytes], int]:
    return echo_server_process(read_size=1 << 20)


def start_websockify(target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "websockify", f"127.0.0.1:{port}", f"127.0.0.1:{target_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("websockify did not start")


class PushServer:
    """Pushes up to `limit` bytes at each client and counts how much the kernel took."""

    def __init__(self, limit: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.limit = limit
        self.pushed = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._push, args=(conn,), daemon=True).start()

    def _push(self, conn: socket.socket) -> None:
        block = bytes(MiB)
        try:
            while self.pushed < self.limit:
                conn.sendall(block)
                self.pushed += len(block)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


class Site:
    """Serves bench/site/ and takes the page's reports (POST /result) and waits (GET /wait)."""

    def __init__(self) -> None:
        self.inboxes: dict[str, queue.Queue[Any]] = {}
        self.signals: dict[str, threading.Event] = {}
        self.requested: dict[str, threading.Event] = {}
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(SITE), **kwargs)

            def log_message(self, *args: Any) -> None:
                pass

            def end_headers(self) -> None:
                # Cross-origin isolated, the page's performance.now() ticks in 5 us, not 100 us
                # (Chromium), so round trips of a few tenths of a millisecond can be told apart.
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                super().end_headers()

            def do_GET(self) -> None:
                if self.path.startswith("/wait?"):
                    token = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["token"][0]
                    site.signal(token).wait(600)
                    self.send_response(204)
                    self.end_headers()
                    return
                if self.path.startswith("/bench.html?"):
                    token = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["token"][0]
                    site.page_requested(token).set()
                super().do_GET()

            def do_POST(self) -> None:
                token = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["token"][0]
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                site.inbox(token).put(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        # The same pages on a second port, which Chromium is told is on the public internet
        # (--ip-address-space-overrides): where Local Network Access refuses a page's own
        # WebSocket to loopback, as it would for a real web app's.
        self.public_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.public_port = self.public_server.server_port
        self.public_origin = f"http://127.0.0.1:{self.public_port}"
        threading.Thread(target=self.public_server.serve_forever, daemon=True).start()

    def inbox(self, token: str) -> queue.Queue[Any]:
        return self.inboxes.setdefault(token, queue.Queue())

    def signal(self, token: str) -> threading.Event:
        return self.signals.setdefault(token, threading.Event())

    def page_requested(self, token: str) -> threading.Event:
        return self.requested.setdefault(token, threading.Event())

    def url(self, params: dict[str, Any], public: bool = False) -> tuple[str, str]:
        token = uuid.uuid4().hex
        query = urllib.parse.urlencode({"token": token, "params": json.dumps(params)})
        return f"{self.public_origin if public else self.origin}/bench.html?{query}", token


# -- the browsers, with no driver attached while they are timed --------------------------------


def native_only_extension(directory: Path) -> Path:
    """The extension as it is, except that sockets never ask for the bulk path: native
    messaging alone, the design this project started from, measured in the same run."""
    copy = directory / "extension-native-only"
    if not copy.exists():
        shutil.copytree(EXTENSION, copy)
        bridge = copy / "bridge.js"
        text = bridge.read_text()
        marker = "message = { ...message, bulk: true, "
        assert marker in text, "bridge.js changed: update the bench's native-only variant"
        bridge.write_text(text.replace(marker, "message = { ...message, bulk: false, "))
    return copy


class DriverlessBrowser:
    def __init__(self, kind: str, base: Path, site: Site, extension: Path = EXTENSION) -> None:
        self.extension = extension
        self.kind = kind
        self.base = base
        self.site = site
        self.env = browser_env(base)
        self.proc: subprocess.Popen[bytes] | None = None
        self.firefox: Firefox | None = None
        self.token = ""  # the bench page's, once it is opened

    def grant(self, origin: str) -> None:
        cli(self.env, "permissions", "grant", "--origin", origin, "--tcp", "127.0.0.1:*")

    def open(self, url: str) -> None:
        if self.kind == "chromium":
            profile = self.base / "profile"
            cli(self.env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
            self.proc = subprocess.Popen(
                [CHROMIUM_BINARY, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 f"--ip-address-space-overrides=127.0.0.1:{self.site.public_port}=public", f"--disable-extensions-except={self.extension}",
                 f"--load-extension={self.extension}", url],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            return

        tests_site = type("S", (), {"origin": self.site.origin})()
        # The variant asked for (the native-only copy, say): Firefox's own default is the checkout's.
        self.firefox = Firefox(self.base, tests_site, extension=self.extension)  # type: ignore[arg-type]
        self.firefox.navigate(url)
        self.firefox.marionette.delete_session()  # nothing attached from here on

    def host_pids(self) -> list[int]:
        return find_host_pids(str(self.base))

    def root_pid(self) -> int:
        if self.firefox is not None:
            return self.firefox.proc.pid
        assert self.proc is not None, "the browser is not running"
        return self.proc.pid

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.firefox is not None:
            self.firefox.proc.terminate()
            try:
                self.firefox.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.firefox.proc.kill()
            self.firefox.log.close()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def started(site: Site, token: str) -> None:
    """The page says so first: a browser started cold now and then misses its first page."""
    first = site.inbox(token).get(timeout=60)
    if first != {"ok": True, "value": "started"}:
        raise RuntimeError(f"the page did not start: {first}")


@contextlib.contextmanager
def bench_page(
    kind: str, base: Path, site: Site, params: dict[str, Any], extension: Path = EXTENSION,
    first: str | None = None, first_timeout: float = 60, public: bool = False,
) -> Iterator[tuple[DriverlessBrowser, str]]:
    """A browser with no driver on the bench page with `params` (served from the origin Chromium
    counts as public, when `public`): yields it and the page's token once the page started (and
    reported `first`, when given); closes it after."""
    browser = open_bench_page(kind, base, site, params, extension, public)
    token = browser.token
    try:
        started(site, token)
        if first is not None:
            report = site.inbox(token).get(timeout=first_timeout)
            if report != {"ok": True, "value": first}:
                raise RuntimeError(f"{kind}: {report}")
        yield browser, token
    finally:
        browser.close()


PAGE_REQUEST_SECONDS = 20


def open_bench_page(kind: str, base: Path, site: Site, params: dict[str, Any], extension: Path, public: bool) -> DriverlessBrowser:
    """A browser started with the bench page's URL. Chromium started cold with a fresh profile
    now and then never asks for the URL on its command line (a third of the starts in one run
    of ten here): a browser that has not asked for it in `PAGE_REQUEST_SECONDS` is started again,
    with a fresh profile, up to three times."""
    for attempt in range(3):
        browser = DriverlessBrowser(kind, base / f"start{attempt}", site, extension)
        browser.grant(site.public_origin if public else site.origin)
        url, browser.token = site.url(params, public)
        try:
            browser.open(url)
        except BaseException:
            browser.close()
            raise
        if site.page_requested(browser.token).wait(PAGE_REQUEST_SECONDS):
            return browser
        print(f"{kind}: the browser did not ask for the page; starting it again", file=sys.stderr)
        browser.close()
    raise RuntimeError(f"{kind}: the browser never asked for the page")


def run_page(kind: str, base: Path, site: Site, params: dict[str, Any], timeout: float, extension: Path = EXTENSION,
             public: bool = False) -> dict[str, Any]:
    with bench_page(kind, base, site, params, extension, public=public) as (_, token):
        result = site.inbox(token).get(timeout=timeout)
    if not result.get("ok"):
        raise RuntimeError(f"{kind}: {result.get('error')}")
    return result["value"]


def memory_under_push(kind: str, base: Path, site: Site, limit: int, seconds: float) -> dict[str, float]:
    """A peer pushes up to `limit` bytes at a page that never reads: host RSS growth."""
    push = PushServer(limit)
    try:
        with bench_page(kind, base, site, {"mode": "hold", "pushPort": push.port}, first="holding") as (browser, token):
            [pid] = browser.host_pids()
            baseline = rss_kib(pid)
            time.sleep(seconds)
            peak = rss_kib(pid, "VmHWM")
            site.signal(token).set()
            site.inbox(token).get(timeout=30)
            return {"pushedMiB": push.pushed / MiB, "hostRssGrowthMiB": max(0, peak - baseline) / 1024}
    finally:
        push.close()


# -- where the CPU goes -------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU clock ticks of the process and of the children it has reaped)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # From the state on: ppid is the 2nd; utime, stime, cutime, cstime the 12th to 15th.
        table[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def family_seconds(table: dict[int, tuple[int, int]], root: int, exclude: set[int] = frozenset()) -> float:  # type: ignore[assignment]
    """CPU seconds of a process and its descendants, leaving out the subtrees of `exclude`."""
    return sum(family_by_role(table, root, exclude).values())


BROWSER_ROLES = ("page", "extension", "network", "rest")


def process_role(pid: int) -> str:
    """What a browser's process does, from its command line: a web page's renderer (`page`),
    the extension's (`extension`: its frames and background), the network service
    (`network`: Chromium's; Firefox's socket process, where it has one), or anything else."""
    try:
        # Chromium's zygote children rewrite their title: one string, arguments split by spaces.
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
    except OSError:
        return "rest"
    if "--type=renderer" in args:
        return "extension" if "--extension-process" in args else "page"
    if any(a.startswith("--utility-sub-type=network.") for a in args):
        return "network"
    if "-contentproc" in args:  # Firefox: its process type is the last argument
        return {"tab": "page", "extension": "extension", "socket": "network"}.get(args[-1], "rest")
    return "rest"


def family_by_role(table: dict[int, tuple[int, int]], root: int, exclude: set[int] = frozenset()) -> dict[str, float]:  # type: ignore[assignment]
    """CPU seconds of a process and its descendants by `process_role`, leaving out the
    subtrees of `exclude`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    ticks, stack = dict.fromkeys(BROWSER_ROLES, 0), [root]
    while stack:
        pid = stack.pop()
        if pid in exclude or pid not in table:
            continue
        ticks[process_role(pid)] += table[pid][1]
        stack.extend(children.get(pid, []))
    return {role: t / os.sysconf("SC_CLK_TCK") for role, t in ticks.items()}


def cpu_per_gib(kind: str, base: Path, site: Site, params: dict[str, Any], way: str, echo_pid: int, websockify_pid: int,
                public: bool = False) -> dict[str, Any]:
    """One way of echoing alone: CPU seconds per GiB echoed, for the browser (all its processes,
    and `roles`: the same by `process_role`), the relay (our host, or websockify with the child
    it forks per connection) and the echo server, counted from /proc around the measured echo
    (the browser starting is not in it). On the public page (`public`), ours takes the bulk frame."""
    with bench_page(kind, base, site, {**params, "mode": "cpu", "way": way}, first="ready", first_timeout=600,
                    public=public) as (browser, token):

        def count() -> dict[str, float]:
            table, hosts = process_table(), set(browser.host_pids())
            relay = sum(family_seconds(table, pid) for pid in hosts) if way == "ours" else family_seconds(table, websockify_pid)
            roles = family_by_role(table, browser.root_pid(), exclude=hosts)
            return {**{f"role:{r}": v for r, v in roles.items()}, "relay": relay, "echoServer": family_seconds(table, echo_pid)}

        before = count()
        site.signal(token).set()
        result = site.inbox(token).get(timeout=600)
        after = count()
    if not result.get("ok"):
        raise RuntimeError(f"{kind}: {result.get('error')}")
    gib = params["total"] / (1 << 30)
    spent = {name: (after[name] - before[name]) / gib for name in before}
    roles = {name.split(":", 1)[1]: spent.pop(name) for name in list(spent) if name.startswith("role:")}
    browser_total = sum(roles.values())
    return {"MBs": result["value"], "browser": browser_total, "roles": roles, **spent,
            "total": browser_total + spent["relay"] + spent["echoServer"]}


# -- the machine's floor: raw loopback TCP from Python ---------------------------------------


async def raw_echo(port: int, chunk: int, total: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    payload = bytes(chunk)
    start = time.perf_counter()

    async def read_all() -> None:
        got = 0
        while got < total:
            got += len(await reader.read(1 << 20))

    reading = asyncio.create_task(read_all())
    for _ in range(0, total, chunk):
        writer.write(payload)
        await writer.drain()
    await reading
    seconds = time.perf_counter() - start
    writer.close()
    return total / seconds / 1e6


async def raw_round_trip(port: int, count: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(bytes(32))
        got = 0
        while got < 32:
            got += len(await reader.read(64))
        times.append((time.perf_counter() - start) * 1000)
    writer.close()
    times.sort()
    return {"p50": times[len(times) // 2], "p99": times[min(len(times) - 1, int(len(times) * 0.99))]}


# -- the host alone, driven over its pipes by Python ----------------------------------------


def host_only(base: Path, echo_port: int, total: int, sockets: int) -> dict[str, float]:
    import base64

    from direct_sockets.install.installer import extension_ids
    from websockets.sync.client import connect

    env = browser_env(base)
    profile = base / "profile"
    cli(env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
    origins = [f"http://127.0.0.1:{9000 + i}" for i in range(max(1, sockets // 50))]
    for origin in origins:
        cli(env, "permissions", "grant", "--origin", origin, "--tcp", "127.0.0.1:*")
    host = HostProcess(profile / "NativeMessagingHosts" / "direct_sockets.json", f"chrome-extension://{extension_ids().chrome}/", env)
    results: dict[str, float] = {}
    try:
        host.send({"type": "hello", "version": 1})
        host.expect("hello")

        def open_socket(sid: int, origin: str, bulk: bool) -> dict[str, Any]:
            host.send({"type": "tcp_open", "id": sid, "origin": origin, "tabId": 1, "frameId": 0, "incognito": False,
                       "remoteAddress": "127.0.0.1", "remotePort": echo_port, "options": {"noDelay": True}, "bulk": bulk})
            return host.expect("opened", id=sid, timeout=30)

        # Relay throughput over native messaging: what the pipes and base64 cost, browser aside.
        open_socket(1, origins[0], False)
        chunk = 512 * 1024
        payload = base64.b64encode(bytes(chunk)).decode()
        start = time.perf_counter()
        host.send({"type": "read", "id": 1, "bytes": 1 << 20})
        sent = received = inflight = 0
        credit = 1 << 20
        while received < total:
            while sent < total and inflight + chunk <= 1 << 20:
                host.send({"type": "send", "id": 1, "data": payload})
                sent += chunk
                inflight += chunk
            message = host.recv(30)
            assert message is not None
            if message["type"] == "ack":
                inflight -= message["bytes"]
            elif message["type"] == "data":
                n = len(base64.b64decode(message["data"]))
                received += n
                credit -= n
                if credit < 1 << 19:
                    host.send({"type": "read", "id": 1, "bytes": (1 << 20) - credit})
                    credit = 1 << 20
        results["relayNativeMessagingMBs"] = total / (time.perf_counter() - start) / 1e6
        host.send({"type": "release", "id": 1})

        # Relay throughput over the bulk path.
        offer = open_socket(2, origins[0], True)["bulk"]
        with connect(offer["url"], origin=origins[0], compression=None, max_size=None) as ws:
            ws.send(offer["token"])
            ws.recv(timeout=10)
            window = 4 << 20
            ws.send(json.dumps({"type": "read", "bytes": window}))
            raw = bytes(chunk)
            sent = received = inflight = 0
            credit = window
            start = time.perf_counter()
            while received < total:
                while sent < total and inflight + chunk <= 1 << 20:
                    ws.send(raw)
                    sent += chunk
                    inflight += chunk
                message = ws.recv(timeout=30)
                if isinstance(message, bytes):
                    received += len(message)
                    credit -= len(message)
                    if credit < window // 2:
                        ws.send(json.dumps({"type": "read", "bytes": window - credit}))
                        credit = window
                elif json.loads(message)["type"] == "ack":
                    inflight -= json.loads(message)["bytes"]
            results["relayBulkMBs"] = total / (time.perf_counter() - start) / 1e6
        host.send({"type": "release", "id": 2})

        # Connections per second, and the host's memory with `sockets` of them open.
        baseline = rss_kib(host.pid)
        start = time.perf_counter()
        for i in range(sockets):
            host.send({"type": "tcp_open", "id": 100 + i, "origin": origins[i % len(origins)], "tabId": 1, "frameId": 0,
                       "incognito": False, "remoteAddress": "127.0.0.1", "remotePort": echo_port, "options": {}})
        opened = 0
        while opened < sockets:
            message = host.recv(60)
            assert message is not None and message["type"] == "opened", message
            opened += 1
        results["connectionsPerSecond"] = sockets / (time.perf_counter() - start)
        results["openSockets"] = sockets
        results["rssWithSocketsMiB"] = rss_kib(host.pid) / 1024
        results["rssGrowthForSocketsMiB"] = (rss_kib(host.pid) - baseline) / 1024
    finally:
        host.kill()
    return results


# -- the table --------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(results: dict[str, Any]) -> str:
    lines = []
    total_mib = results["config"]["totalMiB"]
    lines.append(f"Echo throughput, MB/s of payload ({total_mib} MiB each way, median of {results['config']['runs']} runs)")
    lines.append(f"{'chunk':>8} | {'raw TCP':>8} | " + " | ".join(f"{b + ' ours':>15} | {b + ' websockify':>21} | {'ratio':>6}" for b in results["browsers"]))
    for chunk in results["config"]["chunks"]:
        row = f"{chunk // 1024:>6}Ki | {results['raw']['echo'][str(chunk)]:>8.0f} | "
        cells = []
        for b in results["browsers"]:
            echo = results["browsers"][b]["echo"][str(chunk)]
            ours, ws = median(echo["ours"]), median(echo["websockify"])
            cells.append(f"{ours:>15.0f} | {ws:>21.0f} | {ours / ws:>5.2f}x")
        lines.append(row + " | ".join(cells))
    lines.extend(page_rows(results))
    if results.get("nativeOnly"):
        lines.append("")
        lines.append("The same chain with native messaging alone (no bulk path), MB/s (16 MiB, 1 run)")
        lines.append(f"{'chunk':>8} | " + " | ".join(f"{b:>10}" for b in results["nativeOnly"]))
        for chunk in results["config"]["chunks"]:
            lines.append(f"{chunk // 1024:>6}Ki | " + " | ".join(f"{median(r['echo'][str(chunk)]['ours']):>10.0f}" for r in results["nativeOnly"].values()))
        lines.append(f"{'RTT p50':>8} | " + " | ".join(f"{r['roundTrip']['ours']['p50']:>7.3f} ms" for r in results["nativeOnly"].values()))
    lines.append("")
    lines.append(f"Round trip of 32 bytes, ms ({results['config']['roundTrips']} round trips)")
    lines.append(f"{'':>24} | {'p50':>6} | {'p99':>6}")
    lines.append(f"{'raw TCP':>24} | {results['raw']['roundTrip']['p50']:>6.3f} | {results['raw']['roundTrip']['p99']:>6.3f}")
    for b, r in results["browsers"].items():
        for way in ("ours", "websockify", "worker"):
            rt = r["roundTrip"].get(way)
            if rt:
                lines.append(f"{b + ' ' + way:>24} | {rt['p50']:>6.3f} | {rt['p99']:>6.3f}")
        public = results.get("publicPage", {}).get(b)
        if public:
            for way in ("ours", "worker"):
                rt = public["roundTrip"][way]
                lines.append(f"{b + ' public ' + way:>24} | {rt['p50']:>6.3f} | {rt['p99']:>6.3f}")
    if results.get("cpu"):
        lines.append("")
        chunk_kib, mib = results["config"]["cpuChunk"] // 1024, results["config"]["cpuMiB"]
        lines.append(f"Where the CPU goes: seconds of CPU per GiB echoed ({mib} MiB in {chunk_kib} KiB writes, each way alone;"
                     f" {os.cpu_count()} cores for every process)")
        lines.append("  (browser: its processes by role; Firefox networks in its parent process, counted under rest)")
        lines.append(f"{'':>26} | {'MB/s':>5} | {'browser':>7} ({'page':>5} | {'extension':>9} | {'network':>7} | {'rest':>5})"
                     f" | {'relay':>5} | {'echo server':>11} | {'total':>5}")
        for b, ways in results["cpu"].items():
            for way, c in ways.items():
                r = c.get("roles", {})
                roles = " | ".join(f"{r.get(role, float('nan')):>{width}.2f}" for role, width in zip(BROWSER_ROLES, (5, 9, 7, 5)))
                lines.append(f"{b + ' ' + way:>26} | {c['MBs']:>5.0f} | {c['browser']:>7.2f} ({roles})"
                             f" | {c['relay']:>5.2f} | {c['echoServer']:>11.2f} | {c['total']:>5.2f}")
            ws = ways["websockify"]
            lines.append(f"{'':>26}   {b}: the chain without websockify's share costs {ws['total'] - ws['relay']:.2f} s/GiB; a relay costing"
                         f" nothing would be at most {ws['total'] / (ws['total'] - ws['relay']):.2f}x websockify where the cores are the limit")
            public = ways.get("ours, public page")
            if public:
                lines.append(f"{'':>26}   {b}: on the public page the extension's renderer, a process websockify's page does not cross,"
                             f" costs {public['roles']['extension']:.2f} s/GiB; the whole chain {public['total']:.2f} against websockify's {ws['total']:.2f}")
    if results.get("hostOnly"):
        lines.extend(host_rows(results))
    lines.append("")
    for b, m in results["memory"].items():
        lines.append(f"Memory, {b}: a peer pushed {m['pushedMiB']:.0f} MiB (of {results['config']['pushMiB']} MiB it tried) at a page that does not read; host RSS grew {m['hostRssGrowthMiB']:.1f} MiB")
    lines.append("")
    lines.append("Targets")
    for name, (value, goal, ok) in results["targets"].items():
        lines.append(f"  [{'met' if ok else 'MISSED'}] {name}: {value} (goal {goal})")
    return "\n".join(lines)


def page_rows(results: dict[str, Any]) -> list[str]:
    """Ours from a dedicated worker (loopback page), and ours on a page Chromium counts as public
    (page and worker), each against websockify on the loopback page of the same run."""
    lines = ["", "The same echo from a worker, and on a public page (Chromium), MB/s; ratio to websockify on the loopback page"]
    lines.append(f"{'chunk':>8} | " + " | ".join(f"{name:>22} | {'ratio':>6}" for name in _page_columns(results)))
    for chunk in results["config"]["chunks"]:
        cells = []
        for b, where, way in _page_columns(results).values():
            ours = median(results[where][b]["echo"][str(chunk)][way])
            ws = median(results["browsers"][b]["echo"][str(chunk)]["websockify"])
            cells.append(f"{ours:>22.0f} | {ours / ws:>5.2f}x")
        lines.append(f"{chunk // 1024:>6}Ki | " + " | ".join(cells))
    return lines


def _page_columns(results: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    columns = {}
    for b in results["browsers"]:
        if results["browsers"][b]["echo"][str(results["config"]["chunks"][0])].get("worker"):
            columns[f"{b} worker"] = (b, "browsers", "worker")
        if b in results.get("publicPage", {}):
            columns[f"{b} public page"] = (b, "publicPage", "ours")
            columns[f"{b} public worker"] = (b, "publicPage", "worker")
    return columns


def host_rows(results: dict[str, Any]) -> list[str]:
    lines = [""]
    h = results["hostOnly"]
    lines.append("Host alone, driven over its pipes by Python")
    lines.append(f"  relay over native messaging: {h['relayNativeMessagingMBs']:.0f} MB/s; over the bulk WebSocket: {h['relayBulkMBs']:.0f} MB/s")
    lines.append(f"  connections per second: {h['connectionsPerSecond']:.0f}")
    lines.append(f"  RSS with {h['openSockets']} open sockets: {h['rssWithSocketsMiB']:.1f} MiB (+{h['rssGrowthForSocketsMiB']:.1f} MiB for them)")
    return lines


def targets(results: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    out: dict[str, tuple[str, str, bool]] = {}
    for b, goal in (("chromium", 1.5), ("firefox", 1.0)):
        if b not in results["browsers"]:
            continue
        echo = results["browsers"][b]["echo"]
        ratios = [median(e["ours"]) / median(e["websockify"]) for e in echo.values()]
        out[f"{b} echo vs websockify (lowest over chunk sizes)"] = (f"{min(ratios):.2f}x", f">= {goal}x", min(ratios) >= goal)
        rt = results["browsers"][b]["roundTrip"]
        out[f"{b} round trip p50 vs websockify"] = (f"{rt['ours']['p50']:.3f} vs {rt['websockify']['p50']:.3f} ms", "<=", rt["ours"]["p50"] <= rt["websockify"]["p50"])
        public = results.get("publicPage", {}).get(b)
        if public:
            ratios = [median(public["echo"][c]["ours"]) / median(echo[c]["websockify"]) for c in echo]
            out[f"{b} public page echo vs websockify on a loopback page (lowest)"] = (f"{min(ratios):.2f}x", ">= 1.0x", min(ratios) >= 1.0)
            p50 = public["roundTrip"]["ours"]["p50"]
            out[f"{b} public page round trip p50 vs websockify"] = (f"{p50:.3f} vs {rt['websockify']['p50']:.3f} ms", "<=", p50 <= rt["websockify"]["p50"])
    for b, m in results["memory"].items():
        out[f"{b} host RSS growth under the push"] = (f"{m['hostRssGrowthMiB']:.1f} MiB", "< 16 MiB", m["hostRssGrowthMiB"] < 16)
    h = results.get("hostOnly")
    if h:
        out[f"host RSS with {h['openSockets']} sockets"] = (f"{h['rssWithSocketsMiB']:.1f} MiB", "< 200 MiB", h["rssWithSocketsMiB"] < 200)
    return out


def twice(what: str, run: Callable[[int], T]) -> T:
    """A browser started cold now and then misses its first page: one more try."""
    for attempt in range(2):
        try:
            return run(attempt)
        except (queue.Empty, AssertionError, RuntimeError) as exc:
            print(f"{what}: failed ({exc!r}); again", file=sys.stderr)
    raise RuntimeError(f"{what}: failed twice")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller transfers and fewer runs (a smoke run)")
    parser.add_argument("--browsers", default="chromium,firefox")
    parser.add_argument("--echo-only", action="store_true",
                        help="only the pages' echo and round trip (loopback, public and worker rows), for comparing changes")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    total_mib = 8 if args.quick else 64
    config = {
        "totalMiB": total_mib, "total": total_mib * MiB, "chunks": [16384, 65536, 262144, 1048576],
        "runs": 1 if args.quick else 3, "roundTrips": 200 if args.quick else 2000,
        "pushMiB": 64 if args.quick else 1024, "sockets": 100 if args.quick else 1000,
        "cpuMiB": 256 if args.quick else 512, "cpuChunk": 65536,
    }
    echo_proc, echo_port = start_echo_server()
    websockify_proc, websockify_port = start_websockify(echo_port)
    site = Site()
    results: dict[str, Any] = {"config": config, "browsers": {}, "publicPage": {}, "nativeOnly": {}, "memory": {}, "cpu": {},
                               "machine": {"kernel": os.uname().release, "cores": os.cpu_count()}}
    work = Path(tempfile.mkdtemp(prefix="direct-sockets-bench-"))
    try:
        print("raw loopback TCP ...", file=sys.stderr)
        results["raw"] = {
            "echo": {str(c): asyncio.run(raw_echo(echo_port, c, config["total"])) for c in config["chunks"]},
            "roundTrip": asyncio.run(raw_round_trip(echo_port, config["roundTrips"])),
        }
        params = {"echoPort": echo_port, "websockifyUrl": f"ws://127.0.0.1:{websockify_port}/", "chunks": config["chunks"],
                  "total": config["total"], "runs": config["runs"], "roundTrips": config["roundTrips"]}
        for kind in args.browsers.split(","):
            binary = CHROMIUM_BINARY if kind == "chromium" else FIREFOX_BINARY
            if not Path(binary).exists():
                print(f"{kind}: not installed ({binary}), skipped", file=sys.stderr)
                continue
            print(f"{kind}: full chain ...", file=sys.stderr)
            results["browsers"][kind] = twice(f"{kind} full chain", lambda attempt: run_page(
                kind, work / f"{kind}-echo{attempt}", site, {**params, "worker": True}, timeout=600))
            if kind == "chromium":
                # websockify is not run here: a public page's WebSocket to loopback waits for the
                # user's Local Network Access answer. Its row is the loopback page's, above.
                print(f"{kind}: public page ...", file=sys.stderr)
                results["publicPage"][kind] = twice(f"{kind} public page", lambda attempt: run_page(
                    kind, work / f"{kind}-public{attempt}", site, {**params, "worker": True, "oursOnly": True}, timeout=600, public=True))
            if args.echo_only:
                continue
            print(f"{kind}: native messaging alone ...", file=sys.stderr)
            native = {**params, "oursOnly": True, "runs": 1, "total": min(config["total"], 16 * MiB), "roundTrips": min(config["roundTrips"], 500)}
            results["nativeOnly"][kind] = twice(f"{kind} native messaging alone", lambda attempt: run_page(
                kind, work / f"{kind}-native{attempt}", site, native, timeout=600, extension=native_only_extension(work)))
            print(f"{kind}: where the CPU goes ...", file=sys.stderr)
            cpu_params = {**params, "chunk": config["cpuChunk"], "total": config["cpuMiB"] * MiB}
            results["cpu"][kind] = {
                way: twice(f"{kind} CPU {way}", lambda attempt, way=way: cpu_per_gib(
                    kind, work / f"{kind}-cpu-{way}{attempt}", site, cpu_params, way, echo_proc.pid, websockify_proc.pid))
                for way in ("ours", "websockify")
            }
            if kind == "chromium":
                # Where the public page's extra process hop costs: the bulk frame's renderer.
                results["cpu"][kind]["ours, public page"] = twice(f"{kind} CPU public page", lambda attempt: cpu_per_gib(
                    kind, work / f"{kind}-cpu-public{attempt}", site, cpu_params, "ours", echo_proc.pid, websockify_proc.pid, public=True))
            print(f"{kind}: memory under a push ...", file=sys.stderr)
            results["memory"][kind] = twice(f"{kind} memory", lambda attempt: memory_under_push(
                kind, work / f"{kind}-push{attempt}", site, config["pushMiB"] * MiB, seconds=3 if args.quick else 8))
        if not args.echo_only:
            print("host alone ...", file=sys.stderr)
            results["hostOnly"] = host_only(work / "host", echo_port, config["total"], config["sockets"])
        results["targets"] = targets(results)
    finally:
        echo_proc.kill()
        websockify_proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    text = table(results)
    print(text)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n(written to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
