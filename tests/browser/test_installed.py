"""A real browser through the host as `install.sh` registered it for this user (no throw-away
home, no install by the test): what a newcomer gets from the README's first command.

In CI, `.ci/run` runs `install.sh` first, so this always runs there; elsewhere it runs when
install.sh has registered the host for Firefox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.conftest import IN_CI
from tests.browser.harness import FIREFOX_BINARY, Firefox, ScenarioSite, cli
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
