"""`direct-sockets doctor`: is the host installed where the browser looks, and does it answer?"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

from . import HOST_NAME, PROTOCOL_VERSION
from .framing import HEADER, encode
from .install import extension_ids, manifest_dir


def ping(wrapper: Path, browser_args: list[str], timeout: float = 10.0) -> dict[str, object]:
    """Starts the host as the browser would and exchanges hello; returns the host's answer."""
    frames = encode({"type": "hello", "version": PROTOCOL_VERSION})
    proc = subprocess.run([str(wrapper), *browser_args], input=frames, capture_output=True, timeout=timeout)
    if len(proc.stdout) < HEADER.size:
        raise RuntimeError(f"no answer (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    (length,) = HEADER.unpack(proc.stdout[: HEADER.size])
    return json.loads(proc.stdout[HEADER.size : HEADER.size + length])


def check(browser: str, user_data_dir: Path | None) -> Iterator[tuple[str, bool]]:
    manifest_path = manifest_dir(browser, user_data_dir) / f"{HOST_NAME}.json"
    fix = f"direct-sockets install --browser {browser}" + (f" --user-data-dir {user_data_dir}" if user_data_dir else "")
    if not manifest_path.exists():
        yield f"no host manifest at {manifest_path}; run: {fix}", False
        return
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        wrapper = Path(manifest["path"])
    except (ValueError, KeyError, TypeError) as exc:
        yield f"host manifest {manifest_path} is not valid ({exc}); run: {fix}", False
        return
    yield f"host manifest {manifest_path}", True
    ids = extension_ids()
    expected = f"chrome-extension://{ids.chrome}/" if browser == "chromium" else ids.gecko
    key = "allowed_origins" if browser == "chromium" else "allowed_extensions"
    if expected not in manifest.get(key, []):
        yield f"{key} does not list {expected}; run: {fix}", False
        return
    yield f"{key} lists {expected}", True
    if not (wrapper.is_file() and os.access(wrapper, os.X_OK)):
        yield f"host wrapper {wrapper} is missing or not executable; run: {fix}", False
        return
    args = [expected] if browser == "chromium" else [str(manifest_path), expected]
    try:
        answer = ping(wrapper, args)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        yield f"the host did not answer: {exc}; run: {fix}", False
        return
    if answer.get("type") != "hello":
        yield f"the host answered {answer}; run: {fix}", False
        return
    yield f"the host answers ({answer.get('host')}, protocol {answer.get('version')})", True
