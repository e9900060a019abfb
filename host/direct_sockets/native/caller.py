"""Who started the host, checked against the host manifest that the browser used.

Chrome passes `chrome-extension://ID/`; Firefox passes the manifest path and the add-on ID.
The browser already refuses extensions that its manifest does not list; checking again here
means a host started by anything else (or through a stale manifest) refuses to serve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Caller:
    browser: str  # "chromium" or "firefox"
    extension: str  # chrome-extension://ID/ or the Firefox add-on ID


class CallerRejected(Exception):
    pass


def identify(argv: list[str]) -> Caller:
    for arg in argv:
        if arg.startswith("chrome-extension://"):
            return Caller("chromium", arg if arg.endswith("/") else arg + "/")
    # Firefox: <manifest path> <add-on id>
    if len(argv) >= 2 and argv[0].endswith(".json"):
        return Caller("firefox", argv[1])
    raise CallerRejected(f"cannot tell which extension started the host from {argv!r}")


def check(caller: Caller, manifest_path: Path) -> None:
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise CallerRejected(f"cannot read host manifest {manifest_path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CallerRejected(f"host manifest {manifest_path} is not a JSON object")
    key = "allowed_origins" if caller.browser == "chromium" else "allowed_extensions"
    allowed = manifest.get(key)
    if not isinstance(allowed, list) or caller.extension not in allowed:
        raise CallerRejected(f"{caller.extension} is not in {key} of {manifest_path}")
