"""The one way the host and the installer write a document: whole or not at all.

Every file someone else reads while we may be writing it (the permission store, a site's TLS
key, a browser's host manifest, a managed policy) is written to a temporary file in the same
folder, flushed to the disk, given its mode, and renamed over the old one. A reader sees the old
document or the new one, never half of either; a writer killed mid-write leaves the old one and a
temporary file that `sweep` (or the next install) removes. A leaf module: every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}-"


def write_atomically(path: Path, data: bytes | str, mode: int, folder_mode: int = 0o700) -> None:
    """Replaces `path` with `data` (str is written as UTF-8) in one rename. The temporary file
    is born 0600 (mkstemp), so a private key is never readable by others, not even for a
    moment; it gets exactly `mode`, whatever the umask, before the rename. Missing folders are
    made with exactly `folder_mode` (0o755 for what another user's browser must reach)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    _make_folders(path.parent, folder_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    try:
        os.chmod(tmp, mode)  # by name, not fchmod: the installer also runs on Windows
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if os.name != "posix":
        return  # Windows cannot open a folder to flush it; its renames are journaled
    # The rename itself reaches the disk only with its folder: without this a power cut may
    # bring back the old document after we said the new one was written.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def leftovers(path: Path) -> list[Path]:
    """The temporary files writers of `path` were killed before renaming."""
    return sorted(path.parent.glob(f"{_temp_prefix(path)}*{TEMP_SUFFIX}"))


def sweep(path: Path) -> None:
    """Removes what killed writers of `path` left. Only for a caller that holds the lock all
    writers of `path` take (else it could remove a live writer's file)."""
    for stale in leftovers(path):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _make_folders(folder: Path, mode: int) -> None:
    made = [p for p in reversed([folder, *folder.parents]) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for each in made:
        each.chmod(mode)  # mkdir's mode is cut by the umask; chmod is not
