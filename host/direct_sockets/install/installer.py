"""Writes and removes the native messaging host manifests, one template for every browser.

A manifest names a wrapper script (browsers start it with a minimal environment, so the
wrapper names the absolute interpreter path rather than trusting PATH) and the extension IDs
that may start the host. On Linux and macOS the manifest goes where the browser looks
(`browsers.py`); on Windows it lives in our data directory and a registry value under the
browser's key points at it. `uninstall` removes exactly what `install` wrote.

For every user (`--system`) the wrapper goes to a root-owned folder (`/usr/local/lib/direct-sockets`:
the administrator's own software, by the FHS; the .deb uses /usr/lib/direct-sockets), runs
Python isolated (`-I`: no user site, no PYTHON* variables, no current directory on the path),
and the install is refused when the interpreter or the packages it runs could be changed by a
user other than root: otherwise every user's browser would run code one user controls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .. import HOST_NAME, paths
from ..files import write_atomically
from .. import resources
from . import browsers

# Where `--system` puts the wrappers on Linux and macOS (under Context.root, if one is given).
SYSTEM_HOST_DIR = Path("/usr/local/lib/direct-sockets")

BROWSERS = tuple(b.name for b in browsers.BROWSERS)


def chrome_extension_id(public_key_b64: str) -> str:
    """The ID Chrome derives from a manifest `key`: SHA-256 of the DER key, 0-f mapped to a-p."""
    digest = hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


@dataclass(frozen=True)
class ExtensionIds:
    chrome: str
    gecko: str


def extension_ids(extension_dir: Path | None = None) -> ExtensionIds:
    manifest = json.loads(((extension_dir or resources.extension_dir()) / "manifest.json").read_text("utf-8"))
    return ExtensionIds(chrome_extension_id(manifest["key"]), manifest["browser_specific_settings"]["gecko"]["id"])


class Registry(Protocol):
    """The few Windows registry operations we need (a fake one in the tests)."""

    def set_default(self, root: str, key: str, value: str) -> None: ...

    def get_default(self, root: str, key: str) -> str | None: ...

    def delete_key(self, root: str, key: str) -> bool: ...


class WindowsRegistry:
    """The real registry, through `winreg` (Windows only)."""

    def _root(self, root: str):  # type: ignore[no-untyped-def]
        import winreg  # type: ignore[import-not-found]

        return {"HKEY_CURRENT_USER": winreg.HKEY_CURRENT_USER, "HKEY_LOCAL_MACHINE": winreg.HKEY_LOCAL_MACHINE}[root]

    def set_default(self, root: str, key: str, value: str) -> None:
        import winreg  # type: ignore[import-not-found]

        with winreg.CreateKey(self._root(root), key) as handle:
            winreg.SetValueEx(handle, "", 0, winreg.REG_SZ, value)

    def get_default(self, root: str, key: str) -> str | None:
        import winreg  # type: ignore[import-not-found]

        try:
            with winreg.OpenKey(self._root(root), key) as handle:
                return str(winreg.QueryValueEx(handle, "")[0])
        except OSError:
            return None

    def delete_key(self, root: str, key: str) -> bool:
        import winreg  # type: ignore[import-not-found]

        try:
            winreg.DeleteKey(self._root(root), key)
            return True
        except OSError:
            return False


@dataclass
class Context:
    """Where an installation goes: the platform, the user's home and environment, and whether
    it is for every user. The tests give fake ones."""

    platform: str = field(default_factory=lambda: sys.platform)
    home: Path = field(default_factory=Path.home)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    system: bool = False
    registry: Registry | None = None
    # For --system: the system's folders are taken under this one (tests, and staging a
    # machine's tree). The files written name the paths under it, so doctor can check them.
    root: Path | None = None

    def reg(self) -> Registry:
        if self.registry is None:
            self.registry = WindowsRegistry()
        return self.registry


@dataclass(frozen=True)
class Target:
    """One browser's registration: the manifest file, and on Windows the registry value."""

    browser: browsers.Browser
    manifest: Path
    registry_root: str = ""
    registry_key: str = ""


def target(name: str, user_data_dir: Path | None = None, ctx: Context | None = None) -> Target:
    ctx = ctx or Context()
    browser = browsers.get(name)
    if user_data_dir is not None:
        if browser.family != "chromium":
            raise ValueError(f"{browser.label} reads host manifests from fixed places only; --user-data-dir is for the Chromium family")
        return Target(browser, user_data_dir / "NativeMessagingHosts" / f"{HOST_NAME}.json")
    if ctx.platform == "win32":
        base = Path(ctx.env.get("PROGRAMDATA", r"C:\ProgramData")) / "direct-sockets" if ctx.system else paths.data_dir()
        root = "HKEY_LOCAL_MACHINE" if ctx.system else "HKEY_CURRENT_USER"
        return Target(browser, base / "manifests" / f"{browser.name}.json", root, f"{browser.windows_key}\\{HOST_NAME}")
    directory = browsers.manifest_dir(browser, ctx.platform, ctx.system, ctx.home, ctx.env)
    if ctx.system:
        directory = rerooted(directory, ctx)
    return Target(browser, directory / f"{HOST_NAME}.json")


def rerooted(path: Path, ctx: Context) -> Path:
    """A system path under ctx.root, when one is given."""
    return ctx.root / path.relative_to(path.anchor) if ctx.root is not None else path


def system_host_dir(ctx: Context) -> Path:
    if ctx.platform == "win32":
        return Path(ctx.env.get("PROGRAMDATA", r"C:\ProgramData")) / "direct-sockets"
    return rerooted(SYSTEM_HOST_DIR, ctx)


def wrapper_path(where: Target, ctx: Context) -> Path:
    """Per user: one wrapper per manifest, in the data directory. For every user: one per
    browser, in the root-owned system folder."""
    suffix = ".bat" if ctx.platform == "win32" else ""
    if ctx.system:
        return system_host_dir(ctx) / "bin" / f"native-host-{where.browser.name}{suffix}"
    tag = hashlib.sha256(str(where.manifest).encode()).hexdigest()[:12]
    return paths.wrappers_dir() / f"native-host-{tag}{suffix}"


CHROME_ID = re.compile(r"[a-p]{32}")


def checked_chrome_ids(ids: list[str]) -> list[str]:
    """Chromium extension IDs as `--extension-id` takes them: 32 letters a-p each."""
    for value in ids:
        if not CHROME_ID.fullmatch(value):
            raise ValueError(f"not a Chromium extension ID: {value!r} (32 letters a to p, as chrome://extensions shows)")
    return list(dict.fromkeys(ids))


def render_manifest(browser: browsers.Browser, wrapper: Path, ids: ExtensionIds, chrome_ids: list[str] | None = None) -> dict[str, object]:
    """`chrome_ids`: the Chromium extension IDs in use (a store's, or a managed CRX's), in place
    of the unpacked extension's own."""
    manifest = json.loads(resources.manifest_template().read_text("utf-8"))
    manifest["path"] = str(wrapper)
    if browser.family == "chromium":
        manifest["allowed_origins"] = [f"chrome-extension://{i}/" for i in checked_chrome_ids(chrome_ids or [ids.chrome])]
    else:
        manifest["allowed_extensions"] = [ids.gecko]
    return manifest


def render_wrapper(manifest: Path, platform: str = sys.platform, interpreter: str | None = None, isolated: bool = False) -> str:
    """The script the browser starts: the absolute interpreter, the host, the manifest it was
    installed for. `isolated` (every user's install) runs Python with -I, so nothing from the
    user's environment, site-packages or current directory is imported."""
    python = interpreter or sys.executable
    flags = " -I" if isolated else ""
    if platform == "win32":
        return (
            "@echo off\r\n"
            f"rem Written by `direct-sockets install` for {manifest}; the browser starts it.\r\n"
            f'"{python}"{flags} -m direct_sockets native-host --manifest "{manifest}" %*\r\n'
        )
    return (
        "#!/bin/sh\n"
        f"# Written by `direct-sockets install` for {manifest}; the browser starts it.\n"
        f"exec {shlex.quote(python)}{flags} -m direct_sockets native-host --manifest {shlex.quote(str(manifest))} \"$@\"\n"
    )


class UnsafeForEveryUser(ValueError):
    """A system-wide install would run code that a user other than root can change."""


def writable_by_others(path: Path) -> str | None:
    """Why someone other than root could change what `path` names, or None. Walks the path and
    every folder above it (any of them could be renamed or replaced): each must be owned by
    root and not group- or world-writable; a world-writable folder with the sticky bit (/tmp)
    passes, as others cannot rename what root owns inside it. Symbolic links are followed, and
    their targets walked too."""
    seen: set[Path] = set()
    pending = [Path(os.path.abspath(path))]
    while pending:
        current = pending.pop()
        for part in [current, *current.parents]:
            if part in seen:
                continue
            seen.add(part)
            try:
                info = part.lstat()
            except OSError as exc:
                return f"{part}: {exc.strerror}"
            if info.st_uid != 0:
                return f"{part} is owned by uid {info.st_uid}, not root"
            if stat.S_ISLNK(info.st_mode):
                pending.append(part.resolve())
                continue
            sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
                return f"{part} is writable by {'every user' if info.st_mode & stat.S_IWOTH else 'its group'} (mode {stat.filemode(info.st_mode)})"
    return None


def _dependency_dirs() -> list[Path]:
    """The folders of every installed package direct-sockets needs at run time, and of what
    those need in turn, from the installed metadata (so a new dependency cannot be missed)."""
    import re
    from importlib import metadata

    found: set[Path] = set()
    seen: set[str] = set()
    pending = ["direct-sockets"]
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        if key != "direct-sockets":
            for file in dist.files or []:
                if file.suffix in (".py", ".so") and file.parts[0] != ".." and not file.parts[0].endswith((".dist-info", ".data")):
                    found.add(Path(str(dist.locate_file(file.parts[0]))).resolve())
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                pending.append(re.split(r"[<>=!~;\s\[(]", requirement, maxsplit=1)[0])
    return sorted(found)


def runtime_paths() -> list[Path]:
    """What a system-wide host runs: the interpreter, this package's folder, the folders of
    every package it needs at run time, and what Python runs from site-packages at start."""
    import site

    found = [Path(sys.executable), Path(__file__).resolve().parents[1], *_dependency_dirs()]
    # .pth files run at every start, even with -I (and the editable install's finder they import).
    sites = dict.fromkeys([*(Path(p) for p in site.getsitepackages()), *(path.parent for path in found[1:])])
    found += sorted(p for folder in sites for pattern in ("*.pth", "__editable__*.py") for p in folder.glob(pattern))
    return found


def check_safe_for_every_user(runtime: list[Path] | None = None) -> None:
    """Refuses (UnsafeForEveryUser) an interpreter or package that a non-root user could change."""
    if sys.platform == "win32":
        return  # ACLs, not modes: Windows installs are out of this check's reach
    for path in runtime or runtime_paths():
        problem = writable_by_others(path)
        if problem is None and path.is_dir():
            for inner in sorted(path.rglob("*")):
                mode = inner.lstat().st_mode
                if mode & (stat.S_IWGRP | stat.S_IWOTH) and not stat.S_ISLNK(mode) or inner.lstat().st_uid != 0:
                    problem = writable_by_others(inner) or f"{inner} is not root's alone"
                    break
        if problem:
            raise UnsafeForEveryUser(
                f"refusing to install for every user: the host would run {path}, and {problem}. Every user's browser would "
                "run code that someone other than root can change. Install direct-sockets where only root can write "
                "(the .deb from packaging/build-deb.sh, or `pipx install` run as root with PIPX_HOME and PIPX_BIN_DIR under "
                "/opt), then run that copy's `direct-sockets install --system`."
            )


def install(name: str, user_data_dir: Path | None = None, ctx: Context | None = None, chrome_ids: list[str] | None = None) -> Target:
    """Writes (or rewrites: it is idempotent) the manifest, its wrapper and, on Windows, the
    registry value. Returns where it went. `chrome_ids`: see render_manifest."""
    ctx = ctx or Context()
    chrome_ids = checked_chrome_ids(chrome_ids) if chrome_ids else None  # before anything is written
    where = target(name, user_data_dir, ctx)
    if ctx.system:
        check_safe_for_every_user()
    wrapper = wrapper_path(where, ctx)
    # Folders we make are readable by everyone whatever the umask: another user's browser
    # must reach a system-wide manifest and wrapper (a user's own live in their private home).
    write_atomically(wrapper, render_wrapper(where.manifest, ctx.platform, isolated=ctx.system), 0o755, folder_mode=0o755)
    manifest = json.dumps(render_manifest(where.browser, wrapper, extension_ids(), chrome_ids), indent=2) + "\n"
    write_atomically(where.manifest, manifest, 0o644, folder_mode=0o755)
    if where.registry_key:
        ctx.reg().set_default(where.registry_root, where.registry_key, str(where.manifest))
    return where


def uninstall(name: str, user_data_dir: Path | None = None, ctx: Context | None = None) -> list[str]:
    """Removes exactly what install wrote; returns what was removed."""
    ctx = ctx or Context()
    where = target(name, user_data_dir, ctx)
    removed: list[str] = []
    if where.registry_key and ctx.reg().get_default(where.registry_root, where.registry_key) == str(where.manifest):
        ctx.reg().delete_key(where.registry_root, where.registry_key)
        removed.append(f"{where.registry_root}\\{where.registry_key}")
    for path in (where.manifest, wrapper_path(where, ctx)):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    return removed


def found_browsers(ctx: Context | None = None) -> list[tuple[browsers.Browser, browsers.Presence]]:
    """The browsers installed here (natively, or in a sandbox), in the table's order."""
    ctx = ctx or Context()
    found = []
    for browser in browsers.BROWSERS:
        presence = browsers.presence(browser, ctx.home, ctx.env)
        if presence.any:
            found.append((browser, presence))
    return found
