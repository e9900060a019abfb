"""Writes and removes the native messaging host manifests, one template for every browser.

A manifest names a wrapper script (browsers start it with a minimal environment, so the
wrapper names the absolute interpreter path rather than trusting PATH) and the extension IDs
that may start the host. On Linux and macOS the manifest goes where the browser looks
(`browsers.py`); on Windows it lives in our data directory and a registry value under the
browser's key points at it. `uninstall` removes exactly what `install` wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import HOST_NAME, browsers, paths

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "manifests" / f"{HOST_NAME}.json"
EXTENSION_DIR = REPO / "extension"

BROWSERS = tuple(b.name for b in browsers.BROWSERS)


def chrome_extension_id(public_key_b64: str) -> str:
    """The ID Chrome derives from a manifest `key`: SHA-256 of the DER key, 0-f mapped to a-p."""
    digest = hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


@dataclass(frozen=True)
class ExtensionIds:
    chrome: str
    gecko: str


def extension_ids(extension_dir: Path = EXTENSION_DIR) -> ExtensionIds:
    manifest = json.loads((extension_dir / "manifest.json").read_text("utf-8"))
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
    return Target(browser, directory / f"{HOST_NAME}.json")


def wrapper_path(manifest: Path, platform: str = sys.platform) -> Path:
    tag = hashlib.sha256(str(manifest).encode()).hexdigest()[:12]
    return paths.wrappers_dir() / (f"native-host-{tag}.bat" if platform == "win32" else f"native-host-{tag}")


def render_manifest(browser: browsers.Browser, wrapper: Path, ids: ExtensionIds) -> dict[str, object]:
    manifest = json.loads(TEMPLATE.read_text("utf-8"))
    manifest["path"] = str(wrapper)
    if browser.family == "chromium":
        manifest["allowed_origins"] = [f"chrome-extension://{ids.chrome}/"]
    else:
        manifest["allowed_extensions"] = [ids.gecko]
    return manifest


def render_wrapper(manifest: Path, platform: str = sys.platform) -> str:
    if platform == "win32":
        return (
            "@echo off\r\n"
            f"rem Written by `direct-sockets install` for {manifest}; the browser starts it.\r\n"
            f'"{sys.executable}" -m direct_sockets native-host --manifest "{manifest}" %*\r\n'
        )
    return (
        "#!/bin/sh\n"
        f"# Written by `direct-sockets install` for {manifest}; the browser starts it.\n"
        f"exec {shlex.quote(sys.executable)} -m direct_sockets native-host --manifest {shlex.quote(str(manifest))} \"$@\"\n"
    )


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8", newline="")
    tmp.chmod(mode)
    os.replace(tmp, path)


def install(name: str, user_data_dir: Path | None = None, ctx: Context | None = None) -> Target:
    """Writes (or rewrites: it is idempotent) the manifest, its wrapper and, on Windows, the
    registry value. Returns where it went."""
    ctx = ctx or Context()
    where = target(name, user_data_dir, ctx)
    wrapper = wrapper_path(where.manifest, ctx.platform)
    _write(wrapper, render_wrapper(where.manifest, ctx.platform), 0o755)
    _write(where.manifest, json.dumps(render_manifest(where.browser, wrapper, extension_ids()), indent=2) + "\n", 0o644)
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
    for path in (where.manifest, wrapper_path(where.manifest, ctx.platform)):
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
