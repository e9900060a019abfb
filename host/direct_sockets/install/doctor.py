"""`direct-sockets doctor`: is the host installed where the browser looks, and does it answer?

Each check says what it found; each failure says the command that fixes it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .. import HOST_NAME, PROTOCOL_VERSION, paths
from ..protocol.framing import HEADER, encode
from .installer import Context, extension_ids, target, writable_by_others

PING_TIMEOUT = 10.0


# Who "another user" is for `doctor --system`: nobody, who owns nothing.
NOBODY = 65534


def ping(wrapper: Path, browser_args: list[str], timeout: float = PING_TIMEOUT, as_nobody: bool = False) -> dict[str, object]:
    """Starts the host as the browser would, exchanges hello and a ping; returns the hello, once
    the pong came back too. `as_nobody` (root only): as user nobody, with a home of its own, as
    another user's browser would."""
    frames = encode({"type": "hello", "version": PROTOCOL_VERSION}) + encode({"type": "ping", "seq": 1})
    if not as_nobody:
        proc = subprocess.run([str(wrapper), *browser_args], input=frames, capture_output=True, timeout=timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="direct-sockets-nobody-") as home:
            os.chmod(home, 0o700)
            os.chown(home, NOBODY, NOBODY)
            env = {"PATH": os.defpath, "HOME": home, "LANG": "C.UTF-8"}
            command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", str(wrapper), *browser_args]
            proc = subprocess.run(command, input=frames, capture_output=True, timeout=timeout, env=env, cwd=home)
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


def others_cannot_reach(path: Path, executable: bool = False) -> str | None:
    """Why a user other than the owner cannot read (or run) `path`, or None: every folder on the
    way must let others through, and the file must let them read (and run) it."""
    real = path.resolve()
    for folder in real.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return f"other users cannot enter {folder} (mode {stat.filemode(folder.stat().st_mode)})"
    mode = real.stat().st_mode
    needed = stat.S_IROTH | (stat.S_IXOTH if executable else 0)
    if mode & needed != needed:
        return f"other users cannot {'run' if executable else 'read'} {real} (mode {stat.filemode(mode)})"
    return None


def _runtime_of(interpreter: str) -> list[Path]:
    """The interpreter's own answer to: which folders does the host run from?"""
    code = "import json; from direct_sockets.install.installer import runtime_paths; print(json.dumps([str(p) for p in runtime_paths()]))"
    proc = subprocess.run([interpreter, "-I", "-c", code], capture_output=True, text=True, timeout=PING_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-300:] or f"exit {proc.returncode}")
    return [Path(p) for p in json.loads(proc.stdout)]


def _for_every_user(manifest_path: Path, wrapper: Path, interpreter: str) -> Iterator[tuple[str, bool]]:
    """A system-wide install: could another user run it, and could one change it?"""
    try:
        runtime = _runtime_of(interpreter)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        yield f"{interpreter} cannot say where the host runs from: {exc}", False
        return
    for path, executable in [(manifest_path, False), (wrapper, True), (Path(interpreter), True), *((p, False) for p in runtime[1:])]:
        problem = writable_by_others(path) or others_cannot_reach(path, executable)
        if problem:
            yield f"not safe or not reachable for every user: {problem}", False
            return
    yield f"the manifest, wrapper, interpreter and {len(runtime) - 1} package folders are root's alone and readable by every user", True


def policy_report() -> tuple[str, bool]:
    """Which administrator's policy files are in force (every one found is read: policy.py)."""
    from ..trust.policy import PolicyFile

    policy = PolicyFile(paths.policy_files())
    found = policy.existing()
    if not found:
        return f"no administrator's policy (looked for {', '.join(str(p) for p in policy.paths)})", True
    damage = policy.damage()
    if damage:
        return f"policy {damage}: the API is off for every site until it is fixed", False
    return "policy in force: " + ", ".join(str(p) for p in found) + (" (all read; the strictest rule wins)" if len(found) > 1 else ""), True


def check(browser: str, user_data_dir: Path | None, ctx: Context | None = None, chrome_ids: list[str] | None = None) -> Iterator[tuple[str, bool]]:
    """`chrome_ids`: the Chromium extension IDs in use (`--extension-id`), if not the unpacked one's."""
    ctx = ctx or Context()
    where = target(browser, user_data_dir, ctx)
    manifest_path = where.manifest
    fix = f"direct-sockets install --browser {browser}" + (f" --user-data-dir {user_data_dir}" if user_data_dir else "") + (
        " --system" if ctx.system else ""
    ) + (f" --root {ctx.root}" if ctx.system and ctx.root is not None else "") + "".join(f" --extension-id {i}" for i in chrome_ids or [])
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
        if not isinstance(manifest, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as exc:
        yield f"host manifest {manifest_path} is not valid ({exc}); run: {fix}", False
        return
    # What browsers refuse outright: another name than the one the extension asks for, another
    # type, a path that is empty, relative or names nothing.
    path = manifest.get("path")
    problem = (
        f"its name is {manifest.get('name')!r}, not {HOST_NAME!r}" if manifest.get("name") != HOST_NAME
        else f"its type is {manifest.get('type')!r}, not 'stdio'" if manifest.get("type") != "stdio"
        else f"its path {path!r} is not an absolute path" if not (isinstance(path, str) and os.path.isabs(path))
        else f"its path {path} does not exist" if not os.path.exists(path)
        else None
    )
    if problem:
        yield f"host manifest {manifest_path} is not what browsers accept: {problem}; run: {fix}", False
        return
    wrapper = Path(path)
    yield f"host manifest {manifest_path}", True
    ids = extension_ids()
    chromium = where.browser.family == "chromium"
    wanted = [f"chrome-extension://{i}/" for i in chrome_ids or [ids.chrome]] if chromium else [ids.gecko]
    key = "allowed_origins" if chromium else "allowed_extensions"
    missing = [w for w in wanted if w not in manifest.get(key, [])]
    if missing:
        yield f"{key} does not list {', '.join(missing)} (the extension's ID); run: {fix}", False
        return
    expected = wanted[0]
    yield f"{key} lists {', '.join(wanted)}", True
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
    as_nobody = False
    if ctx.system and sys.platform != "win32":
        verdicts = list(_for_every_user(manifest_path, wrapper, interpreter))
        yield from verdicts
        if not all(good for _, good in verdicts):
            return
        # Only root can become another user; a non-root doctor has checked the modes above.
        as_nobody = os.geteuid() == 0 and shutil.which("setpriv") is not None
    args = [expected] if chromium else [str(manifest_path), expected]
    try:
        answer = ping(wrapper, args, as_nobody=as_nobody)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        yield f"the host did not answer: {exc}; run: {fix}, then `direct-sockets doctor --browser {browser}` again", False
        return
    if answer.get("type") != "hello":
        yield f"the host answered {answer}; run: {fix}", False
        return
    who = " to user nobody" if as_nobody else ""
    yield f"the host answers{who} ({answer.get('host')}, protocol {answer.get('version')}, ping and pong)", True
