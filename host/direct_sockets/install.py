"""Writes and removes the native messaging host manifests, one template for every browser.

A manifest names a wrapper script (browsers start it with a minimal environment, so the
wrapper names the absolute interpreter path rather than trusting PATH) and the extension IDs
that may start the host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from . import HOST_NAME, paths

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "manifests" / f"{HOST_NAME}.json"
EXTENSION_DIR = REPO / "extension"

BROWSERS = ("chromium", "firefox")


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


def manifest_dir(browser: str, user_data_dir: Path | None = None) -> Path:
    home = Path.home()
    if browser == "chromium":
        if user_data_dir is not None:
            return user_data_dir / "NativeMessagingHosts"
        config = Path(os.environ.get("CHROME_CONFIG_HOME") or os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        return config / "chromium" / "NativeMessagingHosts"
    if browser == "firefox":
        if user_data_dir is not None:
            raise ValueError("Firefox reads host manifests only from $HOME/.mozilla/native-messaging-hosts")
        return home / ".mozilla" / "native-messaging-hosts"
    raise ValueError(f"unknown browser {browser!r}")


def wrapper_path(manifest: Path) -> Path:
    tag = hashlib.sha256(str(manifest).encode()).hexdigest()[:12]
    return paths.wrappers_dir() / f"native-host-{tag}"


def render_manifest(browser: str, wrapper: Path, ids: ExtensionIds) -> dict[str, object]:
    manifest = json.loads(TEMPLATE.read_text("utf-8"))
    manifest["path"] = str(wrapper)
    if browser == "chromium":
        manifest["allowed_origins"] = [f"chrome-extension://{ids.chrome}/"]
    else:
        manifest["allowed_extensions"] = [ids.gecko]
    return manifest


def render_wrapper(manifest: Path) -> str:
    return (
        "#!/bin/sh\n"
        f"# Written by `direct-sockets install` for {manifest}; the browser starts it.\n"
        f"exec {shlex.quote(sys.executable)} -m direct_sockets native-host --manifest {shlex.quote(str(manifest))} \"$@\"\n"
    )


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def install(browser: str, user_data_dir: Path | None = None) -> Path:
    """Writes (or rewrites) the manifest and its wrapper; returns the manifest path."""
    manifest = manifest_dir(browser, user_data_dir) / f"{HOST_NAME}.json"
    wrapper = wrapper_path(manifest)
    _write(wrapper, render_wrapper(manifest), 0o755)
    _write(manifest, json.dumps(render_manifest(browser, wrapper, extension_ids()), indent=2) + "\n", 0o644)
    return manifest


def uninstall(browser: str, user_data_dir: Path | None = None) -> list[Path]:
    """Removes exactly what install wrote; returns what was removed."""
    manifest = manifest_dir(browser, user_data_dir) / f"{HOST_NAME}.json"
    removed = []
    for path in (manifest, wrapper_path(manifest)):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
