"""Host manifests, wrappers and the caller check."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from direct_sockets import caller
from direct_sockets.install import chrome_extension_id, extension_ids
from tests.conftest import ROOT, cli


def test_extension_ids_come_from_the_manifest() -> None:
    manifest = json.loads((ROOT / "extension" / "manifest.json").read_text())
    ids = extension_ids()
    assert ids.chrome == chrome_extension_id(manifest["key"])
    assert len(ids.chrome) == 32 and set(ids.chrome) <= set("abcdefghijklmnop")
    assert ids.gecko == manifest["browser_specific_settings"]["gecko"]["id"]


def test_chrome_id_algorithm_on_a_known_key() -> None:
    # SHA-256 of one zero byte is 6e340b9cffb37a989ca544e6bb780a2c...; 0-f map to a-p.
    import base64

    assert chrome_extension_id(base64.b64encode(b"\x00").decode()) == "godealjmppldhkjijmkfeeogllhiakcm"


def test_install_chromium_profile_and_uninstall(isolated_env: dict[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "prof"
    cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
    manifest_path = profile / "NativeMessagingHosts" / "direct_sockets.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["name"] == "direct_sockets" and manifest["type"] == "stdio"
    assert manifest["allowed_origins"] == [f"chrome-extension://{extension_ids().chrome}/"]
    assert "allowed_extensions" not in manifest
    wrapper = Path(manifest["path"])
    assert wrapper.is_absolute() and os.access(wrapper, os.X_OK)
    assert wrapper.parent == Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "bin"
    text = wrapper.read_text()
    assert text.startswith("#!/bin/sh\n") and str(manifest_path) in text
    interpreter = text.split("exec ")[1].split()[0].strip("'")
    assert os.path.isabs(interpreter) and os.access(interpreter, os.X_OK)
    cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(profile))  # idempotent
    assert [p.name for p in manifest_path.parent.iterdir()] == ["direct_sockets.json"]
    cli(isolated_env, "uninstall", "--browser", "chromium", "--user-data-dir", str(profile))
    assert not manifest_path.exists() and not wrapper.exists()


def test_install_firefox_and_default_chromium_paths(isolated_env: dict[str, str]) -> None:
    home = Path(isolated_env["HOME"])
    cli(isolated_env, "install", "--browser", "firefox", "--browser", "chromium")
    ff = json.loads((home / ".mozilla/native-messaging-hosts/direct_sockets.json").read_text())
    assert ff["allowed_extensions"] == [extension_ids().gecko] and "allowed_origins" not in ff
    chromium = Path(isolated_env["XDG_CONFIG_HOME"]) / "chromium/NativeMessagingHosts/direct_sockets.json"
    assert chromium.exists()
    out = cli(isolated_env, "doctor", "--browser", "firefox").stdout
    assert "[ok] firefox: the host answers" in out


def test_doctor_reports_missing_install_with_fix(isolated_env: dict[str, str]) -> None:
    result = cli(isolated_env, "doctor", "--browser", "firefox", check=False)
    assert result.returncode == 1
    assert "run: direct-sockets install --browser firefox" in result.stdout


def test_firefox_refuses_user_data_dir(isolated_env: dict[str, str], tmp_path: Path) -> None:
    result = cli(isolated_env, "install", "--browser", "firefox", "--user-data-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "Firefox reads host manifests only" in result.stderr


def test_caller_identification() -> None:
    assert caller.identify(["chrome-extension://abc/"]) == caller.Caller("chromium", "chrome-extension://abc/")
    assert caller.identify(["/x/direct_sockets.json", "a@b"]) == caller.Caller("firefox", "a@b")
    with pytest.raises(caller.CallerRejected):
        caller.identify([])


def test_caller_check_against_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"allowed_origins": ["chrome-extension://abc/"]}))
    caller.check(caller.Caller("chromium", "chrome-extension://abc/"), manifest)
    for who in [caller.Caller("chromium", "chrome-extension://xyz/"), caller.Caller("firefox", "chrome-extension://abc/")]:
        with pytest.raises(caller.CallerRejected):
            caller.check(who, manifest)
    manifest.write_text("[]")
    with pytest.raises(caller.CallerRejected):
        caller.check(caller.Caller("chromium", "chrome-extension://abc/"), manifest)
    with pytest.raises(caller.CallerRejected):
        caller.check(caller.Caller("chromium", "chrome-extension://abc/"), tmp_path / "missing.json")


def test_stdout_is_reserved_for_the_protocol() -> None:
    code = (
        "import os, sys\n"
        "from direct_sockets import stdio\n"
        "i, o = stdio.reserve()\n"
        "print('stray print')\n"
        "os.write(1, b'stray write to fd 1\\n')\n"
        "os.write(o, b'FRAME')\n"
    )
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20)
    assert proc.stdout == b"FRAME"
    assert b"stray print" in proc.stderr and b"stray write to fd 1" in proc.stderr


def test_native_host_mode_never_writes_stray_bytes_to_stdout(isolated_env: dict[str, str]) -> None:
    import sys

    bad_args = subprocess.run([sys.executable, "-m", "direct_sockets", "native-host", "--manifest"], capture_output=True, env=isolated_env, timeout=20)
    assert bad_args.returncode == 2 and bad_args.stdout == b"" and b"usage" in bad_args.stderr
    no_manifest = subprocess.run([sys.executable, "-m", "direct_sockets", "native-host", "chrome-extension://x/"], capture_output=True, env=isolated_env, timeout=20)
    assert no_manifest.returncode == 2
    # Only one protocol frame (error 122), nothing else.
    from tests.support.hostproc import HEADER

    (length,) = HEADER.unpack(no_manifest.stdout[:4])
    assert len(no_manifest.stdout) == 4 + length and json.loads(no_manifest.stdout[4:])["code"] == 122
