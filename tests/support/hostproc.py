"""The real host process over real pipes, as a browser would start it."""

from __future__ import annotations

import json
import os
import queue
import resource
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from direct_sockets.protocol.framing import encode
from direct_sockets.protocol.validation import check_outbound

HEADER = struct.Struct("=I")


class HostProcess:
    def __init__(self, manifest: Path, caller: str | list[str], env: dict[str, str], nofile: tuple[int, int] | None = None) -> None:
        """`caller`: what the browser passes, `chrome-extension://ID/` or Firefox's manifest
        path and add-on ID."""
        def limit() -> None:  # in the child, before the host starts: its descriptor limits
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "direct_sockets", "native-host", "--manifest", str(manifest), *([caller] if isinstance(caller, str) else caller)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            preexec_fn=limit if nofile is not None else None,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.prompt_ids: dict[int, int] = {}  # socket id -> its latest prompt's promptId
        self.stderr = bytearray()
        self.bad_stdout: list[bytes] = []
        self.reading = threading.Event()  # clear it to play a browser that stopped reading
        self.reading.set()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            self.reading.wait()
            header = out.read(HEADER.size)
            if len(header) < HEADER.size:
                if header:
                    self.bad_stdout.append(header)
                self.messages.put(None)
                return
            (length,) = HEADER.unpack(header)
            body = out.read(length)
            try:
                message = json.loads(body)
                check_outbound(message)  # every message the host sends must match its schema
            except Exception:
                self.bad_stdout.append(header + body)
                raise
            if message.get("type") == "prompt":
                self.prompt_ids[message["id"]] = message["promptId"]
            self.messages.put(message)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(encode(with_prompt_id(message, self.prompt_ids), max_frame=1 << 30))

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 10) -> dict[str, Any] | None:
        """The next message, or None at EOF. Raises queue.Empty on timeout."""
        return self.messages.get(timeout=timeout)

    def expect(self, type_: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        message = self.recv(timeout)
        assert message is not None, f"host closed stdout; stderr:\n{self.stderr.decode(errors='replace')}"
        assert message["type"] == type_, message
        for key, value in fields.items():
            assert message.get(key) == value, (key, message)
        return message

    def hello(self) -> dict[str, Any]:
        self.send({"type": "hello", "version": 1})
        return self.expect("hello")

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def find_host_pids(needle: str) -> list[int]:
    """The native host processes whose command line mentions `needle` (their manifest's path,
    or a directory it is under): the ones a browser started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"native-host" in cmdline and any(needle.encode() in part for part in cmdline):
            pids.append(int(entry.name))
    return pids


NEVER_SHOWN = 1 << 40  # a promptId no host shows in a test's lifetime


def with_prompt_id(message: dict[str, Any], prompt_ids: dict[int, int]) -> dict[str, Any]:
    """A `consent` as the extension sends it: naming the socket's latest prompt (the one its
    window shows), unless the test names one itself."""
    if message.get("type") != "consent" or "promptId" in message:
        return message
    return {**message, "promptId": prompt_ids.get(message.get("id"), NEVER_SHOWN)}  # type: ignore[arg-type]
