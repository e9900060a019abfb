"""A real browser through the host as a user installs it: as `install.sh` registered it for
this user (no throw-away home, no install by the test), and from the wheel installed into a
fresh venv outside the checkout (`pip install` / `pipx install`), with the extension folder that
install's `extension-path` names.

In CI, `.ci/run` runs `install.sh` first, so the first always runs there; elsewhere it runs when
install.sh has registered the host for Firefox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.conftest import IN_CI
from tests.browser.harness import CHROMIUM_BINARY, FIREFOX_BINARY, Chromium, Firefox, ScenarioSite, browser_env, cli
from tests.support.installed import InstalledVenv
from tests.support.servers import TcpServer

pytestmark = pytest.mark.browser


def test_a_round_trip_through_the_host_install_sh_registered(site: ScenarioSite, echo_server: TcpServer, tmp_path: Path) -> None:
    env = dict(os.environ)
    manifest = Path(env["HOME"]) / ".mozilla" / "native-messaging-hosts" / "direct_sockets.json"
    if not manifest.exists() or not Path(FIREFOX_BINARY).exists():
        message = f"install.sh has not registered the host for Firefox here ({manifest})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    doctor = cli(env, "doctor", "--browser", "firefox")
    assert "[ok] firefox: the host answers" in doctor
    cli(env, "permissions", "grant", "--origin", site.origin, "--tcp", f"127.0.0.1:{echo_server.port}")
    browser = Firefox(tmp_path, site, installed_env=env)
    try:
        result = browser.run("echo", port=echo_server.port, text="through the installed host")
        assert result["got"] == "through the installed host"
        assert browser.host_pids(), "the host was not started through install.sh's manifest"
    finally:
        browser.close()
        cli(env, "permissions", "revoke", "--origin", site.origin, check=False)


@pytest.mark.parametrize("kind", ["chromium", "firefox"])
def test_a_round_trip_through_the_installed_wheel(kind: str, site: ScenarioSite, echo_server: TcpServer, installed_wheel: InstalledVenv,
                                                 tmp_path: Path) -> None:
    if not Path(CHROMIUM_BINARY if kind == "chromium" else FIREFOX_BINARY).exists():
        if IN_CI:
            pytest.fail(f"{kind} is not installed")
        pytest.skip(f"{kind} is not installed")
    base = tmp_path / kind
    env = browser_env(base)
    extension = Path(installed_wheel.run(env, "extension-path").stdout.strip())
    assert installed_wheel.base in extension.parents  # the wheel's copy, not the checkout's
    args = ["--user-data-dir", str(base / "profile")] if kind == "chromium" else []
    installed_wheel.run(env, "install", "--browser", kind, *args)
    assert f"[ok] {kind}: the host answers" in installed_wheel.run(env, "doctor", "--browser", kind, *args).stdout
    installed_wheel.run(env, "permissions", "grant", "--origin", site.origin, "--tcp", f"127.0.0.1:{echo_server.port}")
    browser = Chromium(base, site, installed_env=env, extension=extension) if kind == "chromium" else Firefox(base, site, installed_env=env, extension=extension)
    try:
        result = browser.run("echo", port=echo_server.port, text=f"through the wheel in {kind}")
        assert result["got"] == f"through the wheel in {kind}"
        pids = browser.host_pids()
        assert pids, "the browser did not start the installed host"
        command = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        assert command[0].decode() == str(installed_wheel.python), command  # the wheel's interpreter ran the host
    finally:
        browser.close()
