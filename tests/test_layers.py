"""The host package keeps its layers (docs/ARCHITECTURE.md): a lower layer never imports a
higher one, and no module grows past what one reader holds in mind.

Every module under host/direct_sockets is parsed (never imported: an import cycle or a side
effect cannot hide a violation), and every import in it, at the top or inside a function,
relative or absolute, is resolved to the module it names and checked against `MAY_IMPORT`.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = "direct_sockets"
HOST = Path(__file__).resolve().parent.parent / "host" / PACKAGE

# The top-level modules every layer may use: the version and names, where files live, where the
# package data is (the extension: the installer packs it, the bulk server serves its frame), and the
# one atomic document writer. They use nothing of ours but each other.
LEAVES = {"__init__", "paths", "files", "resources"}

# Each layer, and the layers it may import besides itself and the leaves.
MAY_IMPORT: dict[str, set[str]] = {
    "leaves": set(),
    "protocol": set(),
    "trust": {"protocol"},
    "sockets": {"protocol", "trust"},
    "session": {"protocol", "trust", "sockets"},
    "native": {"protocol", "trust", "sockets", "session"},
    "install": {"protocol", "trust"},  # doctor reads the policy and speaks frames to the host
    "demo": {"trust", "install"},  # grants for its page; the extension as package data
    "cli": {"protocol", "trust", "sockets", "session", "native", "install", "demo"},
}

# No module over this many lines, and the session's router, which only dispatches, smaller still:
# a module that grows past them is split by role (docs/ARCHITECTURE.md).
MAX_LINES = 400
MAX_ROUTER_LINES = 300


def modules(root: Path = HOST) -> list[Path]:
    found = sorted(root.rglob("*.py"))
    assert len(found) > 30, found  # the whole package, not a stray folder
    return found


def module_name(path: Path, root: Path = HOST) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def exists(name: str, root: Path = HOST) -> bool:
    """Whether `direct_sockets.x.y` is a module or a package of ours."""
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def layer_of(name: str) -> str:
    parts = name.split(".")
    assert parts[0] == PACKAGE, name
    if len(parts) == 1 or parts[1] in LEAVES:
        return "leaves"
    if parts[1] in ("cli", "cli_permissions", "__main__"):
        return "cli"
    assert parts[1] in MAY_IMPORT, f"{name}: a folder the layer table does not know; add it to MAY_IMPORT"
    return parts[1]


def imported(path: Path, root: Path = HOST) -> list[tuple[int, str]]:
    """Every module of ours that `path` imports, with the line: `from .. import paths` names
    the module `direct_sockets.paths`, `from .. import HOST_NAME` the package itself."""
    here = module_name(path, root)
    package = here if is_package(path) else here.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if exists(submodule, root) else target))
    return found


def violations(root: Path = HOST) -> list[str]:
    broken: list[str] = []
    for path in modules(root):
        layer = layer_of(module_name(path, root))
        allowed = MAY_IMPORT[layer] | {layer, "leaves"}
        for line, target in imported(path, root):
            other = layer_of(target)
            if other not in allowed:
                broken.append(f"{path.relative_to(root)}:{line} ({layer}) imports {target} ({other})")
    return broken


def test_every_import_keeps_to_the_layers() -> None:
    assert violations() == []


def test_the_scan_sees_imports_of_every_kind() -> None:
    """The reader itself: relative, absolute, package-level and inside a function."""
    seen = {target for path in modules() for _, target in imported(path)}
    assert "direct_sockets.protocol.errors" in seen  # from ..protocol.errors import Code
    assert "direct_sockets.paths" in seen  # from .. import paths
    assert "direct_sockets" in seen  # from .. import HOST_NAME
    doctor = HOST / "install" / "doctor.py"
    inside = [n for n in ast.walk(ast.parse(doctor.read_text())) if isinstance(n, ast.FunctionDef)
              for m in ast.walk(n) if isinstance(m, ast.ImportFrom)]
    assert inside, "doctor.py imports inside a function (the policy): the scan must see such imports"
    assert "direct_sockets.trust.policy" in {t for _, t in imported(doctor)}


def test_a_violation_would_be_seen(tmp_path: Path) -> None:
    """A protocol module reaching up into sessions, written the ways one could (in a copy)."""
    root = tmp_path / PACKAGE
    shutil.copytree(HOST, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(root) == violations()
    (root / "protocol" / "_planted.py").write_text(
        "import direct_sockets.session.router\n\ndef f():\n    from ..sockets import tcp\n    from .. import cli\n")
    found = violations(root)
    assert [v.split(" imports ")[1] for v in found if "_planted" in v] == [
        "direct_sockets.session.router (session)", "direct_sockets.sockets.tcp (sockets)", "direct_sockets.cli (cli)",
    ]


def test_no_module_grows_past_the_limit() -> None:
    sizes = {str(path.relative_to(HOST)): len(path.read_text(encoding="utf-8").splitlines()) for path in modules()}
    oversized = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    print(f"modules over {MAX_LINES} lines: {sorted(oversized.items(), key=lambda item: -item[1])}")
    assert not oversized, f"over {MAX_LINES} lines (split by role): {oversized}"
    assert sizes["session/router.py"] <= MAX_ROUTER_LINES, sizes["session/router.py"]
