"""The npm tools the tests run (web-ext, TypeScript), installed project-locally in tests/node by
`./install.sh --test` from its package-lock.json."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

NODE_TOOLS = Path(__file__).resolve().parents[1] / "node"


def node_tool(name: str) -> Path:
    """tests/node/node_modules/.bin/NAME, or a skip saying how to get it; in CI a failure."""
    path = NODE_TOOLS / "node_modules" / ".bin" / name
    if not path.exists() or shutil.which("node") is None:
        message = f"{name} is not installed ({path}): run ./install.sh --test (npm ci in tests/node)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
