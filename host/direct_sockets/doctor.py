"""`direct-sockets doctor`: is the host installed where the browser looks, and does it answer?

Each check says what it found; each failure says the command that fixes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from . import PROTOCOL_VERSION
from .framing import HEADER, encode
from .install import Context, extension_ids, target

PING_TIMEOUT = 10.0


def ping(wrapper: Path, browser_args: list[str], timeout: float = PING_TIMEOUT) -> dict[str, object]:
    """Starts the host as the browser would, exchanges hello and a ping; returns the hello, once
    the pong came back too."""
    frames = encode({"type": "hello", "version": PROTOCOL_VERSION}) + encode({"type": "ping", "seq": 1})
    proc = subprocess.run([str(wrapper), *browser_args], input=frames, capture_output=True, timeout=timeout)
    answers = []
    out = proc.stdout
    while len(out) >= HEADER.size:
        (length,) = HEADER.unpack(out[: HEADER.size])
        answers.append(json.loads(out[HEADER.size : HEADER.size + length]))
        out = out[HEADER.size + length :]
    if not answers:
        raise RuntimeError(f"no answer (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    if answers[0].get("type") == "hello" and {"type": "pong", "seq": 1} not in answers[1:]:
        raise RuntimeError(f"answered hello but not the ping: {answers[1:]}")
    return answers[0]


def _interpreter(wrapper: Path) -> str | None:
    """The interpreter the wrapper runs (its exec line names it), or None if unreadable."""
    try:
        text = wrapper.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if line.startswith("exec "):
            words = line.split()
            return words[1].strip("'\"") if len(words) > 1 else None
        if "-m direct_sockets" in line:  # the Windows wrapper
            return line.split('"')[1] if line.startswith('"') else None
    return None


def check(browser: str, user_data_dir: Path | None, ctx: Context | None = None) -> Iterator[tuple[str, bool]]:
    ctx = ctx or Context()
    where = target(browser, user_data_dir, ctx)
    manifest_path = where.manifest
    fix = f"direct-sockets install --browser {browser}" + (f" --user-data-dir {user_data_dir}" if user_data_dir else "") + (
        " --system" if ctx.system else ""
    )
    if where.registry_key:
        pointed = ctx.reg().get_default(where.registry_root, where.registry_key)
        if pointed != str(manifest_path):
            yield f"the registry value {where.registry_root}\\{where.registry_key} is {pointed!r}, not {manifest_path}; run: {fix}", False
            return
        yield f"registry {where.registry_root}\\{where.registry_key} -> {manifest_path}", True
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
    chromium = where.browser.family == "chromium"
    expected = f"chrome-extension://{ids.chrome}/" if chromium else ids.gecko
    key = "allowed_origins" if chromium else "allowed_extensions"
    if expected not in manifest.get(key, []):
        yield f"{key} does not list {expected} (the extension's ID); run: {fix}", False
        return
    yield f"{key} lists {expected}", True
    if not (wrapper.is_file() and os.access(wrapper, os.X_OK)):
        yield f"host wrapper {wrapper} is missing or not executable; run: {fix}", False
        return
    interpreter = _interpreter(wrapper)
    if interpreter is None or not (os.path.isabs(interpreter) and os.access(interpreter, os.X_OK)):
        found = shutil.which("direct-sockets")
        yield f"the wrapper's interpreter {interpreter!r} does not exist (was the virtual environment moved or deleted?); run: {fix}" + (
            "" if found else " from the environment where direct-sockets is installed"
        ), False
        return
    yield f"host wrapper {wrapper} runs {interpreter}", True
    args = [expected] if chromium else [str(manifest_path), expected]
    try:
        answer = ping(wrapper, args)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        yield f"the host did not answer: {exc}; run: {fix}, then `direct-sockets doctor --browser {browser}` again", False
        return
    if answer.get("type") != "hello":
        yield f"the host answered {answer}; run: {fix}", False
        return
    yield f"the host answers ({answer.get('host')}, protocol {answer.get('version')}, ping and pong)", True
