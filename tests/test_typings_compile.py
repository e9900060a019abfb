"""types/direct-sockets.d.ts compiles what the guide shows: every ```js and ```ts example of
docs/API.md, and a small app (tests/typings/app.ts), under `tsc --strict --noEmit`; and the
typings folder is an npm package of the project's version.

TypeScript is the project-local one (tests/node/, installed by `./install.sh --test`). Where it
is missing the test skips, except in CI, where that is a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import direct_sockets
from tests.support.node import node_tool

ROOT = Path(__file__).resolve().parents[1]
TYPES = ROOT / "types"
TYPINGS = TYPES / "direct-sockets.d.ts"
EXAMPLE = re.compile(r"^```(js|ts)\n(.*?)^```", re.S | re.M)


def examples(markdown: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced js/ts block."""
    return [(m.group(1), m.group(2)) for m in EXAMPLE.finditer(markdown.read_text("utf-8"))]


def tsc(work: Path, files: list[Path]) -> subprocess.CompletedProcess[str]:
    config = {
        "compilerOptions": {
            "target": "ES2022", "module": "ES2022", "lib": ["ES2022", "DOM", "DOM.Iterable", "DOM.AsyncIterable"],
            # JavaScript examples are checked as JavaScript, with the declarations in scope, as an
            # editor checks a page's script; each file is its own module (top-level await).
            "allowJs": True, "checkJs": True, "moduleDetection": "force", "types": [], "skipLibCheck": False,
        },
        "files": [str(TYPINGS), *map(str, files)],
    }
    (work / "tsconfig.json").write_text(json.dumps(config, indent=2))
    return subprocess.run([str(node_tool("tsc")), "--strict", "--noEmit", "-p", str(work / "tsconfig.json")],
                          capture_output=True, text=True, cwd=work, timeout=300)


def test_the_guide_and_an_app_compile_under_strict(tmp_path: Path) -> None:
    found = examples(ROOT / "docs" / "API.md")
    assert len(found) >= 6, "the guide's examples were not found"
    files = []
    for index, (language, code) in enumerate(found):
        path = tmp_path / f"api-example-{index + 1}.{language}"
        path.write_text(code)
        files.append(path)
    shutil.copy(ROOT / "tests" / "typings" / "app.ts", tmp_path / "app.ts")
    result = tsc(tmp_path, [*files, tmp_path / "app.ts"])
    assert result.returncode == 0, f"tsc --strict:\n{result.stdout}{result.stderr}"


def test_a_wrong_use_does_not_compile(tmp_path: Path) -> None:
    """The compile can fail: a plain socket's `tls` used without a check is an error."""
    bad = tmp_path / "bad.ts"
    bad.write_text("const s = new TCPSocket('127.0.0.1', 1);\nexport const v = (await s.opened).tls.version;\n")
    result = tsc(tmp_path, [bad])
    assert result.returncode != 0 and "possibly 'undefined'" in result.stdout


def test_the_typings_are_an_npm_package_of_the_projects_version(tmp_path: Path) -> None:
    package = json.loads((TYPES / "package.json").read_text())
    assert package["version"] == direct_sockets.__version__
    assert (TYPES / package["types"]) == TYPINGS
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is not installed: ./install.sh --test installs it")
        pytest.skip("npm is not installed: ./install.sh --test installs it")
    # What `npm publish` would send, without sending it.
    result = subprocess.run([npm, "pack", "--dry-run", "--json"], cwd=TYPES, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "npm_config_cache": str(tmp_path / "npm-cache")})  # type: ignore[list-item]
    assert result.returncode == 0, result.stderr
    [packed] = json.loads(result.stdout)
    assert packed["name"] == package["name"] and packed["version"] == direct_sockets.__version__
    assert {f["path"] for f in packed["files"]} >= {"package.json", "direct-sockets.d.ts", "README.md"}
