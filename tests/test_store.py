"""Store-ready packages from `direct-sockets pack`.

- `web-ext lint` (the linter addons.mozilla.org runs) finds nothing in the unpacked extension nor
  in the Firefox package: no error, no warning.
- Icons at 16, 32, 48 and 128 px, PNGs of their size, made by tools/make_icons.py.
- The Chrome Web Store upload has no `key`; the Firefox package declares that it collects no data.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

from direct_sockets.install import pack
from tests.support.node import node_tool

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "extension"


def lint(source: Path) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [str(node_tool("web-ext")), "lint", "--source-dir", str(source), "--output", "json", "--no-config-discovery"],
        capture_output=True, text=True, timeout=300,
    )
    return json.loads(result.stdout)


def test_web_ext_lint_finds_nothing_in_the_extension_nor_its_firefox_package(tmp_path: Path) -> None:
    _, xpi = pack.pack(tmp_path / "dist")
    unpacked = tmp_path / "xpi"
    with zipfile.ZipFile(xpi) as archive:
        archive.extractall(unpacked)
    for source in (EXTENSION, unpacked):
        report = lint(source)
        found = [(m["code"], m["message"]) for kind in ("errors", "warnings") for m in report[kind]]
        assert report["summary"]["errors"] == report["summary"]["warnings"] == 0, f"{source}: {found}"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_icons_are_pngs_of_their_size_and_the_script_makes_them(tmp_path: Path) -> None:
    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    assert set(manifest["icons"]) == {"16", "32", "48", "128"}  # 128: the Chrome Web Store's
    for size, name in [*manifest["icons"].items(), *manifest["action"]["default_icon"].items()]:
        assert _png_size((EXTENSION / name).read_bytes()) == (int(size), int(size)), name
    # The committed icons are what tools/make_icons.py draws (it writes into a copy here).
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_icons
    finally:
        sys.path.pop(0)
    for size in make_icons.SIZES:
        assert make_icons.png(size) == (EXTENSION / "icons" / f"icon-{size}.png").read_bytes(), size


def test_the_store_packages_are_what_each_store_takes(tmp_path: Path) -> None:
    chrome_zip, xpi = pack.pack(tmp_path)
    with zipfile.ZipFile(chrome_zip) as archive:
        chrome = json.loads(archive.read("manifest.json"))
        assert "icons/icon-128.png" in archive.namelist()
    with zipfile.ZipFile(xpi) as archive:
        firefox = json.loads(archive.read("manifest.json"))
    assert "key" not in chrome  # the Chrome Web Store refuses it and assigns its own ID
    assert chrome["background"] == {"service_worker": "background/main.js", "type": "module"}
    assert json.loads((EXTENSION / "manifest.json").read_text())["key"]  # the unpacked one keeps its fixed dev ID
    assert firefox["background"] == {"scripts": ["background/main.js"], "type": "module"}
    assert firefox["browser_specific_settings"]["gecko"]["data_collection_permissions"] == {"required": ["none"]}
