"""Where the host keeps its files. platformdirs honours XDG_DATA_HOME and friends, which is
also how the tests give every run a throw-away home."""

from __future__ import annotations

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


def policy_file() -> Path:
    """The administrator's policy. XDG_CONFIG_DIRS decides where (default /etc/xdg)."""
    return Path(platformdirs.site_config_dir(APP, appauthor=False, multipath=False)) / "policy.json"
