"""The package installed as a user gets it: a wheel outside the checkout, a system-wide
install in a throw-away root, what `uninstall --purge` removes, and the CLI's input checks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from direct_sockets.install.installer import extension_ids
from tests.conftest import ROOT, cli
from tests.support.installed import InstalledVenv

ORIGIN = "https://app.example"


# -- the wheel, outside the checkout ----------------------------------------------------------

def test_the_wheel_carries_the_extension_and_the_template(installed_wheel: InstalledVenv) -> None:
    with zipfile.ZipFile(installed_wheel.wheel) as wheel:
        names = set(wheel.namelist())
    source = {p.relative_to(ROOT / "extension").as_posix() for p in (ROOT / "extension").rglob("*") if p.is_file()}
    assert {f"direct_sockets_extension/{name}" for name in source} <= names
    assert "direct_sockets_manifests/direct_sockets.json" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(installed_wheel.wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_install_doctor_pack_and_extension_path_from_the_wheel(installed_wheel: InstalledVenv, isolated_env: dict[str, str], tmp_path: Path) -> None:
    print(f"wheel built and installed in {installed_wheel.seconds:.1f} s")
    folder = Path(installed_wheel.run(isolated_env, "extension-path").stdout.strip())
    assert folder.is_dir() and installed_wheel.base in folder.parents, folder  # the installed copy, not the checkout
    assert json.loads((folder / "manifest.json").read_text())["manifest_version"] == 3
    profile = tmp_path / "profile"
    installed_wheel.run(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
    installed_wheel.run(isolated_env, "install", "--browser", "firefox")
    manifest = json.loads((profile / "NativeMessagingHosts/direct_sockets.json").read_text())
    assert str(installed_wheel.python) in Path(manifest["path"]).read_text()
    doctor = installed_wheel.run(isolated_env, "doctor", "--browser", "firefox").stdout
    assert "[ok] firefox: the host answers" in doctor
    out = tmp_path / "dist"
    packed = installed_wheel.run(isolated_env, "pack", "--out", str(out)).stdout
    archives = sorted(out.iterdir())
    assert [p.suffix for p in archives] == [".zip", ".xpi"] and str(archives[0]) in packed
    with zipfile.ZipFile(archives[0]) as archive:
        assert "page-api.js" in archive.namelist()


def test_pack_archives_the_folder_it_is_given(tmp_path: Path) -> None:
    from direct_sockets.install import pack

    other = tmp_path / "other-extension"
    other.mkdir()
    manifest = json.loads((ROOT / "extension" / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "version": "9.8.7"}))
    (other / "only-here.js").write_text("// a file the packaged extension does not have\n")
    written = pack.pack(tmp_path / "out", other)
    assert [p.name for p in written] == ["direct-sockets-chrome-9.8.7.zip", "direct-sockets-firefox-9.8.7.xpi"]
    for path in written:
        with zipfile.ZipFile(path) as archive:
            assert sorted(archive.namelist()) == ["manifest.json", "only-here.js"]


# -- system-wide, in a throw-away root ---------------------------------------------------------

def test_system_install_goes_to_a_root_owned_place_and_nobody_can_run_it(installed_wheel: InstalledVenv, isolated_env: dict[str, str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("a system-wide install and running it as another user need root")
    root = installed_wheel.base / "sysroot"
    try:
        installed_wheel.run(isolated_env, "install", "--system", "--root", str(root), "--browser", "chromium", "--browser", "firefox")
        for browser, manifest_dir in (("chromium", "etc/chromium/native-messaging-hosts"), ("firefox", "usr/lib/mozilla/native-messaging-hosts")):
            manifest_path = root / manifest_dir / "direct_sockets.json"
            manifest = json.loads(manifest_path.read_text())
            wrapper = Path(manifest["path"])
            assert wrapper == root / "usr/local/lib/direct-sockets/bin" / f"native-host-{browser}"
            assert Path(isolated_env["HOME"]) not in wrapper.parents and ROOT not in wrapper.parents
            assert f"{installed_wheel.python} -I -m direct_sockets native-host --manifest {manifest_path}" in wrapper.read_text()
            assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755 and stat.S_IMODE(manifest_path.stat().st_mode) == 0o644
        doctor = installed_wheel.run(isolated_env, "doctor", "--system", "--root", str(root), "--browser", "chromium", "--browser", "firefox")
        for browser in ("chromium", "firefox"):
            assert f"[ok] {browser}: the manifest, wrapper, interpreter and" in doctor.stdout
            assert f"[ok] {browser}: the host answers to user nobody" in doctor.stdout
        # Another user cannot get in: the doctor says so, and does not claim the host answers.
        (root / "usr/local/lib").chmod(0o750)
        blocked = installed_wheel.run(isolated_env, "doctor", "--system", "--root", str(root), "--browser", "chromium", check=False)
        assert blocked.returncode == 1 and "other users cannot enter" in blocked.stdout and "answers" not in blocked.stdout
        (root / "usr/local/lib").chmod(0o755)
        installed_wheel.run(isolated_env, "uninstall", "--system", "--root", str(root), "--browser", "chromium", "--browser", "firefox")
        assert not list((root / "usr/local/lib/direct-sockets/bin").iterdir())
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_system_install_refuses_an_interpreter_others_can_change(isolated_env: dict[str, str], tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # any user could replace what is in here
    env_dir = shared / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python*/site-packages"))
    # This interpreter imports the checkout's package and its dependencies.
    (site / "checkout.pth").write_text("\n".join([str(ROOT / "host"), *(p for p in sys.path if p.endswith("site-packages"))]) + "\n")
    root = tmp_path / "root"
    result = subprocess.run([str(env_dir / "bin" / "python"), "-m", "direct_sockets", "install", "--system", "--root", str(root), "--browser", "chromium"],
                            env=isolated_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "refusing to install for every user" in result.stderr and f"{shared} is writable by every user" in result.stderr
    assert not root.exists()  # nothing written


def test_system_install_refuses_a_pth_file_others_can_change(isolated_env: dict[str, str], tmp_path: Path) -> None:
    """Python runs site-packages' .pth files at every start, even with -I."""
    if os.geteuid() != 0:
        pytest.skip("the files must be root's")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python*/site-packages"))
    pth = site / "checkout.pth"
    pth.write_text("\n".join([str(ROOT / "host"), *(p for p in sys.path if p.endswith("site-packages"))]) + "\n")
    pth.chmod(0o646)
    root = tmp_path / "root"
    result = subprocess.run([str(env_dir / "bin" / "python"), "-m", "direct_sockets", "install", "--system", "--root", str(root), "--browser", "chromium"],
                            env=isolated_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "refusing to install for every user" in result.stderr, result.stderr
    assert f"{pth} is writable by every user" in result.stderr and not root.exists()


def test_a_root_owned_path_is_safe_and_a_group_writable_one_is_not(tmp_path: Path) -> None:
    from direct_sockets.install.installer import writable_by_others

    if os.geteuid() != 0:
        pytest.skip("the files must be root's")
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "m.py").write_text("")
    assert writable_by_others(folder / "m.py") is None
    folder.chmod(0o775)
    assert writable_by_others(folder / "m.py") == f"{folder} is writable by its group (mode drwxrwxr-x)"
    folder.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(folder)
    folder.chmod(0o757)
    assert "writable by every user" in (writable_by_others(link) or "")  # a link's target is walked too


# -- doctor ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"name": "other_host"}, "its name is 'other_host', not 'direct_sockets'"),
        ({"type": "socket"}, "its type is 'socket', not 'stdio'"),
        ({"path": ""}, "its path '' is not an absolute path"),
        ({"path": "bin/native-host"}, "its path 'bin/native-host' is not an absolute path"),
        ({"path": "/nonexistent/native-host"}, "its path /nonexistent/native-host does not exist"),
    ],
    ids=["name", "type", "empty-path", "relative-path", "missing-path"],
)
def test_doctor_refuses_a_manifest_browsers_refuse(change: dict[str, str], says: str, isolated_env: dict[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "prof"
    args = ["--browser", "chromium", "--user-data-dir", str(profile)]
    cli(isolated_env, "install", *args)
    path = profile / "NativeMessagingHosts" / "direct_sockets.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    result = cli(isolated_env, "doctor", *args, check=False)
    assert result.returncode == 1 and says in result.stdout and "run: direct-sockets install" in result.stdout


def test_doctor_says_which_policy_files_are_in_force(isolated_env: dict[str, str], tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    env = {**isolated_env, "XDG_CONFIG_DIRS": f"{first}:{second}"}
    none = cli(env, "doctor", "--browser", "firefox", check=False).stdout
    assert f"[ok] no administrator's policy (looked for {first}/direct-sockets/policy.json, {second}/direct-sockets/policy.json, /etc/xdg/direct-sockets/policy.json)" in none
    (second / "direct-sockets").mkdir(parents=True)
    (second / "direct-sockets" / "policy.json").write_text(json.dumps({"version": 1}))
    assert f"[ok] policy in force: {second}/direct-sockets/policy.json" in cli(env, "doctor", "--browser", "firefox", check=False).stdout
    (second / "direct-sockets" / "policy.json").write_text("{")
    damaged = cli(env, "doctor", "--browser", "firefox", check=False)
    assert damaged.returncode == 1 and f"[FAIL] policy {second}/direct-sockets/policy.json is damaged" in damaged.stdout


# -- uninstall, plain and --purge --------------------------------------------------------------

def test_uninstall_keeps_the_users_files_and_purge_removes_them_after_saying_so(isolated_env: dict[str, str], tmp_path: Path) -> None:
    from direct_sockets import paths

    profile = tmp_path / "prof"
    cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
    cli(isolated_env, "install", "--browser", "firefox")
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp", "127.0.0.1:80")
    certs = paths.server_certificates_dir()
    certs.mkdir(parents=True)
    (certs / "site.json").write_text("{}")
    paths.log_dir().mkdir(parents=True)
    (paths.log_dir() / "host.log").write_text("a line\n")
    store = paths.permissions_file()

    plain = cli(isolated_env, "uninstall", "--browser", "chromium", "--user-data-dir", str(profile)).stdout
    assert f"kept (`uninstall --purge` removes them): the permission store (your grants): {store}" in plain
    assert str(certs) in plain and str(paths.log_dir()) in plain
    assert store.exists() and (certs / "site.json").exists() and (paths.log_dir() / "host.log").exists()

    purge = cli(isolated_env, "uninstall", "--browser", "chromium", "--user-data-dir", str(profile), "--purge").stdout
    said, _, done = purge.partition("removed ")
    assert "--purge removes, for this user:" in said and str(store) in said and str(certs) in said and str(paths.log_dir()) in said
    assert not store.exists() and not certs.exists() and not paths.log_dir().exists()
    # Firefox stays registered, and its wrapper stays with it.
    firefox = json.loads((Path(isolated_env["HOME"]) / ".mozilla/native-messaging-hosts/direct_sockets.json").read_text())
    assert Path(firefox["path"]).exists()
    again = cli(isolated_env, "uninstall", "--browser", "chromium", "--user-data-dir", str(profile), "--purge").stdout
    assert "no grants, certificates or logs to remove" in again


# -- the CLI's input checks --------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "exact", "wild"), [("--tcp", "127.0.0.1:80", "127.0.0.1:*"), ("--udp", "127.0.0.1:53", "127.0.0.1:*"),
                                                     ("--udp-bind", "127.0.0.1:5353", "127.0.0.1:*")])
def test_grant_a_wildcard_port_beside_a_numbered_one(flag: str, exact: str, wild: str, isolated_env: dict[str, str]) -> None:
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, flag, exact)
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, flag, wild)
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, flag, exact.replace(exact.rsplit(":", 1)[1], "9999"))
    listed = json.loads(cli(isolated_env, "permissions", "list", "--json").stdout)
    assert [g["port"] for g in listed] == [int(exact.rsplit(":", 1)[1]), 9999, "*"]


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--udp-bind", "0.0.0.0:80", "never binds UDP below port 1024"), ("--udp-bind", "127.0.0.1:1023", "never binds UDP below port 1024"),
     ("--tcp-listen", "127.0.0.1:80", "never listens for TCP below port 32768"), ("--tcp-listen", "::1:32767", "never listens for TCP below port 32768")],
)
def test_grants_the_host_always_refuses_are_refused_with_the_reason(flag: str, value: str, says: str, isolated_env: dict[str, str]) -> None:
    if value.startswith("::1"):
        value = "[::1]:32767"
    result = cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, flag, value, check=False)
    assert result.returncode == 2 and f"not granted: the host {says}" in result.stderr
    assert cli(isolated_env, "permissions", "list").stdout.strip() == "no grants"
    for ok in ("1024" if flag == "--udp-bind" else "32768", "*"):
        cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, flag, value.rsplit(":", 1)[0] + ":" + ok)


def test_the_limits_are_the_hosts_own() -> None:
    from direct_sockets import cli_permissions as cli_module
    from direct_sockets.session import opening as session

    assert "BOUND_UDP_MIN_PORT" in cli_module._always_refused.__code__.co_names
    assert cli_module._always_refused("udp-bind", session.BOUND_UDP_MIN_PORT - 1) and not cli_module._always_refused("udp-bind", session.BOUND_UDP_MIN_PORT)
    assert cli_module._always_refused("tcp-listen", session.LISTEN_MIN_PORT - 1) and not cli_module._always_refused("tcp-listen", session.LISTEN_MIN_PORT)


@pytest.mark.parametrize("flag", ["--http-port", "--echo-port"])
@pytest.mark.parametrize("value", ["70000", "0", "-1", "http"])
def test_demo_refuses_a_port_that_is_not_one(flag: str, value: str, isolated_env: dict[str, str]) -> None:
    result = cli(isolated_env, "demo", flag, value, check=False)
    assert result.returncode == 2 and f"argument {flag}:" in result.stderr and "Traceback" not in result.stderr


def test_extension_ids_come_from_the_packaged_extension() -> None:
    from direct_sockets import resources

    assert resources.extension_dir() == (ROOT / "extension")  # editable install: the checkout's own folder
    assert extension_ids().gecko == json.loads((ROOT / "extension/manifest.json").read_text())["browser_specific_settings"]["gecko"]["id"]


# -- sandboxed browsers -------------------------------------------------------------------------

def test_firefox_snap_is_registered_for_the_portal_and_others_get_true_advice(isolated_env: dict[str, str], tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    for name in ("firefox", "brave"):
        (snap / name).mkdir(parents=True)
    env = {**isolated_env, "PATH": os.path.dirname(sys.executable), "DIRECT_SOCKETS_SNAP_ROOT": str(snap),
           "DIRECT_SOCKETS_FLATPAK_ROOT": str(tmp_path / "no-flatpak")}
    result = cli(env, "install")
    # The portal reads the usual per-user manifest: it is written, and the user is told what to expect.
    assert (Path(env["HOME"]) / ".mozilla/native-messaging-hosts/direct_sockets.json").exists()
    assert "firefox: Firefox is installed as a Snap (firefox): it starts the host through the desktop's WebExtensions portal" in result.stderr
    assert "Install a non-Snap Firefox" not in result.stderr and "Install a build that is not a Snap (on Debian" not in result.stderr
    # Brave is in no Debian archive: no `apt install brave-browser`, but where its packages come from.
    brave = next(line for line in result.stderr.splitlines() if line.startswith("brave:"))
    assert "strict confinement" in brave and "the vendor's own package" in brave and "apt install" not in brave
    assert not (Path(env["XDG_CONFIG_HOME"]) / "BraveSoftware").exists()


def test_what_a_system_host_runs_includes_every_dependency_down_the_tree() -> None:
    """From the installed metadata: a dependency added to pyproject, or one a dependency
    brings (jsonschema -> referencing -> rpds), is checked without anyone listing it."""
    import importlib

    from direct_sockets.install.installer import runtime_paths

    found = runtime_paths()
    for module in ("cryptography", "idna", "jsonschema", "platformdirs", "websockets", "referencing", "rpds", "cffi"):
        assert Path(importlib.import_module(module).__file__).resolve().parent in found, module  # type: ignore[arg-type]
    assert Path(sys.executable) == found[0] and not any(p.name in ("pytest", "_pytest", "playwright") for p in found)
