"""Where the host keeps its files. platformdirs honours XDG_DATA_HOME and friends, which is
also how the tests give every run a throw-away home."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "direct-sockets"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def permissions_file() -> Path:
    return data_dir() / "permissions.json"


def server_certificates_dir() -> Path:
    """The per-site keys and certificates of TLS server sockets."""
    return data_dir() / "server-certificates"


def wrappers_dir() -> Path:
    return data_dir() / "bin"


# Always looked in, whatever XDG_CONFIG_DIRS says: the documented place must never be skipped
# because a distribution (Ubuntu: /etc/xdg/xdg-ubuntu) or a user's environment puts other
# folders first or leaves it out.
DEFAULT_CONFIG_DIR = Path("/etc/xdg")


def policy_files() -> list[Path]:
    """Every place an administrator's policy may be: `direct-sockets/policy.json` under each
    XDG_CONFIG_DIRS entry and under /etc/xdg, in that order, once each. All that exist are
    read and merged, the strictest winning (policy.py): a policy is never ignored because
    another folder came first."""
    dirs = [Path(d) for d in os.environ.get("XDG_CONFIG_DIRS", "").split(os.pathsep) if os.path.isabs(d)]
    found: list[Path] = []
    for folder in [*dirs, DEFAULT_CONFIG_DIR]:
        path = folder / APP / "policy.json"
        if path not in found:
            found.append(path)
    return found
