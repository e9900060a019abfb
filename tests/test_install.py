"""Host manifests, wrappers and the caller check."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from direct_sockets.native import caller
from direct_sockets.install.installer import chrome_extension_id, extension_ids
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
    assert result.returncode == 2 and "fixed places only" in result.stderr


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
        "from direct_sockets.native import stdio\n"
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


# -- every browser family, against fake homes --------------------------------------------------

from direct_sockets.install import browsers as browser_table  # noqa: E402
from direct_sockets.install import installer as installer  # noqa: E402

# Where each browser looks, written out here independently of browsers.py (per user, Linux).
LINUX_USER = {
    "chrome": "config/google-chrome/NativeMessagingHosts",
    "chrome-beta": "config/google-chrome-beta/NativeMessagingHosts",
    "chrome-dev": "config/google-chrome-unstable/NativeMessagingHosts",
    "chromium": "config/chromium/NativeMessagingHosts",
    "brave": "config/BraveSoftware/Brave-Browser/NativeMessagingHosts",
    "edge": "config/microsoft-edge/NativeMessagingHosts",
    "vivaldi": "config/vivaldi/NativeMessagingHosts",
    "opera": "config/opera/NativeMessagingHosts",
    "firefox": "home/.mozilla/native-messaging-hosts",
    "librewolf": "home/.librewolf/native-messaging-hosts",
    "waterfox": "home/.waterfox/native-messaging-hosts",
}
MACOS_USER = {
    "chrome": "Google/Chrome", "chrome-beta": "Google/Chrome Beta", "chrome-dev": "Google/Chrome Dev",
    "chromium": "Chromium", "brave": "BraveSoftware/Brave-Browser", "edge": "Microsoft Edge", "vivaldi": "Vivaldi",
    "opera": "com.operasoftware.Opera", "firefox": "Mozilla", "librewolf": "LibreWolf", "waterfox": "Waterfox",
}
WINDOWS_KEYS = {
    "chrome": r"Software\Google\Chrome\NativeMessagingHosts", "chromium": r"Software\Chromium\NativeMessagingHosts",
    "edge": r"Software\Microsoft\Edge\NativeMessagingHosts", "brave": r"Software\BraveSoftware\Brave-Browser\NativeMessagingHosts",
    "firefox": r"Software\Mozilla\NativeMessagingHosts", "librewolf": r"Software\LibreWolf\NativeMessagingHosts",
}


def test_the_table_covers_every_browser_the_tests_name() -> None:
    assert set(LINUX_USER) == set(MACOS_USER) == set(installer.BROWSERS)


@pytest.mark.parametrize("name", sorted(LINUX_USER))
def test_install_twice_then_uninstall_leaves_nothing_linux(name: str, isolated_env: dict[str, str], tmp_path: Path) -> None:
    ctx = installer.Context(platform="linux", home=tmp_path / "home", env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    expected = tmp_path / LINUX_USER[name] / "direct_sockets.json"
    assert installer.install(name, ctx=ctx).manifest == expected
    installer.install(name, ctx=ctx)  # idempotent
    assert [p.name for p in expected.parent.iterdir()] == ["direct_sockets.json"]
    manifest = json.loads(expected.read_text())
    family = browser_table.get(name).family
    if family == "chromium":
        assert manifest["allowed_origins"] == [f"chrome-extension://{extension_ids().chrome}/"] and "allowed_extensions" not in manifest
    else:
        assert manifest["allowed_extensions"] == [extension_ids().gecko] and "allowed_origins" not in manifest
    wrappers = list((Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "bin").iterdir())
    assert [w for w in wrappers if str(expected) in w.read_text()] == [Path(manifest["path"])]
    removed = installer.uninstall(name, ctx=ctx)
    assert removed == [str(expected), manifest["path"]]
    assert list(expected.parent.iterdir()) == [] and not Path(manifest["path"]).exists()
    assert installer.uninstall(name, ctx=ctx) == []


def test_chrome_config_home_wins_over_xdg(tmp_path: Path) -> None:
    ctx = installer.Context(platform="linux", home=tmp_path, env={"XDG_CONFIG_HOME": "/x", "CHROME_CONFIG_HOME": str(tmp_path / "cc")})
    assert installer.target("chrome", ctx=ctx).manifest == tmp_path / "cc/google-chrome/NativeMessagingHosts/direct_sockets.json"
    bare = installer.Context(platform="linux", home=tmp_path, env={})
    assert installer.target("brave", ctx=bare).manifest == tmp_path / ".config/BraveSoftware/Brave-Browser/NativeMessagingHosts/direct_sockets.json"


@pytest.mark.parametrize("name", sorted(MACOS_USER))
def test_macos_directories(name: str, tmp_path: Path) -> None:
    ctx = installer.Context(platform="darwin", home=tmp_path, env={})
    assert installer.target(name, ctx=ctx).manifest == tmp_path / "Library/Application Support" / MACOS_USER[name] / "NativeMessagingHosts/direct_sockets.json"


def test_system_directories() -> None:
    linux = installer.Context(platform="linux", system=True)
    assert installer.target("chrome", ctx=linux).manifest == Path("/etc/opt/chrome/native-messaging-hosts/direct_sockets.json")
    assert installer.target("chromium", ctx=linux).manifest == Path("/etc/chromium/native-messaging-hosts/direct_sockets.json")
    assert installer.target("firefox", ctx=linux).manifest == Path("/usr/lib/mozilla/native-messaging-hosts/direct_sockets.json")
    mac = installer.Context(platform="darwin", system=True)
    assert installer.target("chrome", ctx=mac).manifest == Path("/Library/Google/Chrome/NativeMessagingHosts/direct_sockets.json")
    assert installer.target("firefox", ctx=mac).manifest == Path("/Library/Application Support/Mozilla/NativeMessagingHosts/direct_sockets.json")


class FakeRegistry:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def set_default(self, root: str, key: str, value: str) -> None:
        self.values[(root, key)] = value

    def get_default(self, root: str, key: str) -> str | None:
        return self.values.get((root, key))

    def delete_key(self, root: str, key: str) -> bool:
        return self.values.pop((root, key), None) is not None


@pytest.mark.parametrize("name", sorted(WINDOWS_KEYS))
def test_windows_registry_install_and_uninstall(name: str, isolated_env: dict[str, str]) -> None:
    registry = FakeRegistry()
    ctx = installer.Context(platform="win32", env={}, registry=registry)
    where = installer.install(name, ctx=ctx)
    key = ("HKEY_CURRENT_USER", WINDOWS_KEYS[name] + "\\direct_sockets")
    assert registry.values == {key: str(where.manifest)}
    assert where.manifest == Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "manifests" / f"{name}.json"
    wrapper = Path(json.loads(where.manifest.read_text())["path"])
    assert wrapper.suffix == ".bat" and wrapper.read_bytes().startswith(b"@echo off\r\n") and b"%*\r\n" in wrapper.read_bytes()
    assert [line for line, good in __import__("direct_sockets.install.doctor", fromlist=["check"]).check(name, None, ctx)][0].startswith("registry ")
    assert installer.uninstall(name, ctx=ctx)[0] == "\\".join(key)
    assert registry.values == {} and not where.manifest.exists() and not wrapper.exists()
    system = installer.Context(platform="win32", env={"PROGRAMDATA": "C:/ProgramData"}, system=True, registry=registry)
    assert installer.target(name, ctx=system).registry_root == "HKEY_LOCAL_MACHINE"


def test_uninstall_leaves_a_registry_value_that_is_not_ours(isolated_env: dict[str, str]) -> None:
    registry = FakeRegistry()
    ctx = installer.Context(platform="win32", env={}, registry=registry)
    where = installer.install("chrome", ctx=ctx)
    registry.values[(where.registry_root, where.registry_key)] = r"C:\someone\else.json"
    assert str(where.manifest) in installer.uninstall("chrome", ctx=ctx)
    assert registry.values == {(where.registry_root, where.registry_key): r"C:\someone\else.json"}


def test_every_browser_found_and_sandboxed_ones_get_their_remedy(isolated_env: dict[str, str], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe in ("firefox-esr", "brave-browser"):
        (bin_dir / exe).write_text("#!/bin/sh\n")
        (bin_dir / exe).chmod(0o755)
    flatpak = tmp_path / "flatpak"
    (flatpak / "app" / "org.chromium.Chromium").mkdir(parents=True)
    snap = tmp_path / "snap"
    (snap / "opera").mkdir(parents=True)
    env = {**isolated_env, "PATH": f"{bin_dir}:{os.path.dirname(os.sys.executable)}",
           "DIRECT_SOCKETS_FLATPAK_ROOT": str(flatpak), "DIRECT_SOCKETS_SNAP_ROOT": str(snap)}
    result = cli(env, "install")
    home, config = Path(env["HOME"]), Path(env["XDG_CONFIG_HOME"])
    assert (home / ".mozilla/native-messaging-hosts/direct_sockets.json").exists()
    assert (config / "BraveSoftware/Brave-Browser/NativeMessagingHosts/direct_sockets.json").exists()
    assert not (config / "chromium").exists() and not (config / "opera").exists()
    assert "chromium: Chromium is installed as a Flatpak (org.chromium.Chromium)" in result.stderr
    assert "opera: Opera is installed as a Snap (opera)" in result.stderr
    assert "sudo apt install chromium" in result.stderr


def test_doctor_reports_each_broken_case_with_its_fix(isolated_env: dict[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "prof"
    args = ["--browser", "chromium", "--user-data-dir", str(profile)]
    fix = f"run: direct-sockets install --browser chromium --user-data-dir {profile}"
    missing = cli(isolated_env, "doctor", *args, check=False)
    assert missing.returncode == 1 and "no host manifest" in missing.stdout and fix in missing.stdout
    cli(isolated_env, "install", *args)
    assert "[ok] chromium: the host answers" in cli(isolated_env, "doctor", *args).stdout
    manifest_path = profile / "NativeMessagingHosts" / "direct_sockets.json"
    manifest = json.loads(manifest_path.read_text())
    wrapper = Path(manifest["path"])

    manifest_path.write_text(json.dumps({**manifest, "allowed_origins": ["chrome-extension://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/"]}))
    wrong_id = cli(isolated_env, "doctor", *args, check=False)
    assert wrong_id.returncode == 1 and "does not list chrome-extension://" in wrong_id.stdout and fix in wrong_id.stdout

    cli(isolated_env, "install", *args)
    wrapper.write_text(wrapper.read_text().replace(os.sys.executable, "/nonexistent/venv/bin/python"))
    no_python = cli(isolated_env, "doctor", *args, check=False)
    assert no_python.returncode == 1 and "'/nonexistent/venv/bin/python' does not exist" in no_python.stdout and fix in no_python.stdout

    wrapper.write_text("#!/bin/sh\nexec /bin/true\n")
    silent = cli(isolated_env, "doctor", *args, check=False)
    assert silent.returncode == 1 and "did not answer" in silent.stdout and fix in silent.stdout

    manifest_path.write_text("{not json")
    damaged = cli(isolated_env, "doctor", *args, check=False)
    assert damaged.returncode == 1 and "is not valid" in damaged.stdout and fix in damaged.stdout


def test_pack_builds_a_zip_and_an_xpi_with_trimmed_manifests(tmp_path: Path) -> None:
    import zipfile

    from direct_sockets.install import pack

    first = pack.pack(tmp_path / "a")
    second = pack.pack(tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]  # reproducible
    chrome_zip, firefox_xpi = first
    source = sorted(p.relative_to(ROOT / "extension").as_posix() for p in (ROOT / "extension").rglob("*") if p.is_file())
    for archive_path in first:
        with zipfile.ZipFile(archive_path) as archive:
            assert sorted(archive.namelist()) == source
    with zipfile.ZipFile(chrome_zip) as archive:
        chrome = json.loads(archive.read("manifest.json"))
    with zipfile.ZipFile(firefox_xpi) as archive:
        firefox = json.loads(archive.read("manifest.json"))
    assert "scripts" not in chrome["background"] and "browser_specific_settings" not in chrome and "key" not in chrome
    assert "service_worker" not in firefox["background"] and "key" not in firefox
    assert firefox["browser_specific_settings"]["gecko"]["id"] == extension_ids().gecko
