"""The one atomic document writer (files.py): whole or not at all, with the mode it was given."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from direct_sockets.files import leftovers, sweep, write_atomically


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_the_document_whole(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    write_atomically(path, b"old", 0o644)
    write_atomically(path, "new, as UTF-8: \u00e9", 0o644)
    assert path.read_bytes() == "new, as UTF-8: \u00e9".encode()
    assert leftovers(path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]


def test_private_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask: the mode must still be exactly ours
    try:
        path = tmp_path / "fresh" / "deeper" / "site.key"
        write_atomically(path, b"secret", 0o600)
        public = tmp_path / "shared" / "manifest.json"
        write_atomically(public, b"{}", 0o644, folder_mode=0o755)
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700 and mode_of(path.parent.parent) == 0o700  # every folder it made
    assert mode_of(public) == 0o644 and mode_of(public.parent) == 0o755
    os.umask(0o077)  # and the strictest: a public document is still readable by everyone
    try:
        write_atomically(public, b"{}", 0o644)
    finally:
        os.umask(old)
    assert mode_of(public) == 0o644


CRASHING_WRITER = """
import os, signal, sys
from pathlib import Path
from direct_sockets.files import write_atomically
real = os.fsync
def die(fd):
    real(fd)
    os.kill(os.getpid(), signal.SIGKILL)  # the bytes are in the temporary file, not yet renamed
os.fsync = die
write_atomically(Path(sys.argv[1]), b'{"version": 2, "half": "' + b"x" * 1_000_000 + b'"}', 0o600)
"""


def test_a_writer_killed_mid_write_leaves_the_old_document(tmp_path: Path) -> None:
    path = tmp_path / "permissions.json"
    write_atomically(path, json.dumps({"version": 1}).encode(), 0o600)
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(path)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(path.read_bytes()) == {"version": 1}
    left = leftovers(path)
    assert len(left) == 1 and left[0].stat().st_size > 1_000_000  # what it had written, aside
    sweep(path)
    assert leftovers(path) == [] and path.exists()


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.mkdir()  # a folder where the document should be: the rename fails
    with pytest.raises(OSError):
        write_atomically(path, b"data", 0o644)
    assert leftovers(path) == []


def test_a_reader_sees_one_document_or_the_other(tmp_path: Path) -> None:
    path = tmp_path / "doc"
    documents = {b"a" * 300_000, b"b" * 200_000}
    write_atomically(path, b"a" * 300_000, 0o644)
    done = threading.Event()
    torn: list[int] = []

    def read() -> None:
        while not done.is_set():
            data = path.read_bytes()
            if data not in documents:
                torn.append(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            write_atomically(path, sorted(documents)[i % 2], 0o644)
    finally:
        done.set()
        reader.join()
    assert torn == []
