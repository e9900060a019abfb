"""`direct-sockets pack`: the extension as a Chrome zip and a Firefox xpi, from the extension
the package ships (`extension/` in the repository).

There is no build step: each archive holds the folder's files as they are, with a manifest
trimmed for its browser and ready for its store: Chrome does not know `background.scripts` or
`browser_specific_settings`, and the Chrome Web Store refuses `key` (it assigns its own ID; the
unpacked folder keeps `key` for a fixed ID in development); Firefox does not use `key` or
`background.service_worker`. Each runs its one background, so neither needs
`background.preferred_environment` (which only tells Firefox's linter that the unpacked folder
means to run in both). The archives are reproducible: sorted entries and a fixed timestamp.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .. import resources

FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def manifest_for(browser: str, manifest: dict) -> dict:  # type: ignore[type-arg]
    trimmed = json.loads(json.dumps(manifest))
    trimmed["background"].pop("preferred_environment", None)
    if browser == "chrome":
        trimmed["background"].pop("scripts", None)
        trimmed.pop("browser_specific_settings", None)
        trimmed.pop("key", None)
    else:
        trimmed["background"].pop("service_worker", None)
        trimmed.pop("key", None)
        trimmed.pop("minimum_chrome_version", None)
    return trimmed


def _archive(path: Path, extension_dir: Path, files: list[Path], manifest: dict) -> None:  # type: ignore[type-arg]
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            name = file.relative_to(extension_dir).as_posix()
            data = (json.dumps(manifest, indent=2) + "\n").encode() if name == "manifest.json" else file.read_bytes()
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def pack(out: Path, extension_dir: Path | None = None) -> list[Path]:
    """Archives `extension_dir` (default: the extension this package ships)."""
    extension_dir = extension_dir or resources.extension_dir()
    manifest = json.loads((extension_dir / "manifest.json").read_text("utf-8"))
    files = sorted(p for p in extension_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    version = manifest["version"]
    written = []
    for browser, suffix in (("chrome", "zip"), ("firefox", "xpi")):
        path = out / f"direct-sockets-{browser}-{version}.{suffix}"
        _archive(path, extension_dir, files, manifest_for(browser, manifest))
        written.append(path)
    return written
