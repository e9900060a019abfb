"""`direct-sockets demo` started as a person or a test starts it: it says where it is only once
every service listens, and a demo that cannot listen says so and grants nothing."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from direct_sockets.trust.permissions import PermissionStore
from tests.support.servers import free_port

ANNOUNCEMENT = "The demo is at"


def demo_lines(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], "queue.Queue[str | None]"]:
    """The demo started with `args`, and its standard output line by line (None at its end).
    Without PYTHONUNBUFFERED: a pipe is block-buffered, as it is for anyone who pipes the demo."""
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "direct_sockets", "demo", *args], env=env, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def until_announced(lines: "queue.Queue[str | None]") -> list[str]:
    """What the demo said up to its announcement (included); [] if it ended without one."""
    said = []
    while (line := lines.get(timeout=30)) is not None:
        said.append(line)
        if line.startswith(ANNOUNCEMENT):
            return said
    return []


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[str]]]:
    """The demos a test started, stopped after it whatever happened."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_once_it_says_where_it_is_every_service_answers(isolated_env: dict[str, str], stopped: list[subprocess.Popen[str]]) -> None:
    http_port, echo_port = free_port(), free_port()
    proc, lines = demo_lines(isolated_env, "--grant", "--http-port", str(http_port), "--echo-port", str(echo_port))
    stopped.append(proc)
    said = until_announced(lines)
    assert said, "the demo ended without saying where it is"
    # At once, with no retry: whoever waits for the line may connect the moment it comes.
    page = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=10).read().decode()
    assert f'data-echo="{echo_port}"' in page
    with socket.create_connection(("127.0.0.1", echo_port), timeout=10) as tcp:
        tcp.sendall(b"over tcp")
        assert tcp.recv(100) == b"over tcp"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(10)
        udp.sendto(b"over udp", ("127.0.0.1", echo_port))
        assert udp.recvfrom(100)[0] == b"over udp"
    # --grant said what it allowed before the announcement.
    assert f"granted http://127.0.0.1:{http_port} udp 127.0.0.1:{echo_port}\n" in said, said


def test_a_demo_that_cannot_listen_says_so_and_grants_nothing(isolated_env: dict[str, str], stopped: list[subprocess.Popen[str]]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, lines = demo_lines(isolated_env, "--grant", "--http-port", str(taken.getsockname()[1]), "--echo-port", str(free_port()))
        stopped.append(proc)
        said = []
        while (line := lines.get(timeout=30)) is not None:
            said.append(line)
        assert proc.wait(10) == 1
    assert not any(line.startswith(ANNOUNCEMENT) for line in said), said
    assert any("the demo cannot listen" in line for line in said), said
    store = PermissionStore(Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json")
    assert store.load() == []
