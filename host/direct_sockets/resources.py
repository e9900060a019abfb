"""Where the files the CLI reads at run time are: the extension and the host-manifest template.

They stay at the top of the repository (`extension/`, `manifests/`) and ship in the wheel as
the data-only packages `direct_sockets_extension` and `direct_sockets_manifests`
(pyproject.toml maps them), so the same lookup works in a wheel, an sdist build, a pipx
install and an editable checkout. Nothing here knows where a checkout is.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib import resources
from pathlib import Path

from . import HOST_NAME

EXTENSION_PACKAGE = "direct_sockets_extension"
MANIFESTS_PACKAGE = "direct_sockets_manifests"


class ResourceMissing(RuntimeError):
    """The package was installed without its data, or zipped where a folder is needed."""


def _directory(package: str) -> Path:
    """The package's folder on disk. A browser loads an unpacked extension from a real folder,
    and `pack` walks it, so a zipped install is refused rather than unpacked into some
    temporary place that vanishes."""
    try:
        root = resources.files(package)
        if isinstance(root, Path) and root.is_dir():
            return root
    except ModuleNotFoundError as exc:
        raise ResourceMissing(f"{package} is not installed with direct-sockets (a broken install?): {exc}") from exc
    except NotADirectoryError:
        pass  # Python 3.11 refuses a namespace path with an entry that is no folder (editable installs add one)
    # A data-only (namespace) package: importlib.resources gives a MultiplexedPath, whose
    # folders the import system's spec names.
    spec = importlib.util.find_spec(package)
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    real = [f for f in folders if f.is_dir()]
    if not real:
        raise ResourceMissing(
            f"direct-sockets' {package} is not a folder on disk ({', '.join(map(str, folders)) or 'nowhere'}): a zipped "
            "install cannot give a browser an extension folder; install it unzipped (pip, pipx or the .deb do)"
        )
    return real[0]


@cache
def extension_dir() -> Path:
    """The unpacked extension: the folder a user loads, and what `pack` archives."""
    folder = _directory(EXTENSION_PACKAGE)
    if not (folder / "manifest.json").is_file():
        raise ResourceMissing(f"the extension in {folder} has no manifest.json")
    return folder


@cache
def manifest_template() -> Path:
    """The one native-messaging host manifest template every browser's variant derives from."""
    path = _directory(MANIFESTS_PACKAGE) / f"{HOST_NAME}.json"
    if not path.is_file():
        raise ResourceMissing(f"the host manifest template {path} is missing")
    return path
