from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from tests.support import netns

# Before anything starts a thread: see tests/support/netns.py.
PRIVATE_NETWORK = netns.enter()

from direct_sockets.install.installer import extension_ids
from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer, echo

ROOT = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from tests.support.dns import TestResolver


def pytest_report_header() -> list[str]:
    fuzz = f"fuzzing: {os.environ.get('DIRECT_SOCKETS_FUZZ_EXAMPLES', '150')} inputs per property (DIRECT_SOCKETS_FUZZ_EXAMPLES)"
    if PRIVATE_NETWORK.active:
        return ["network: a private namespace made for this session (loopback and an internal veth pair only)", fuzz]
    return [f"network: the machine's own (no private namespace: {PRIVATE_NETWORK.reason}); multicast tests skip", fuzz]


_RESOLVER = None


def skip_unless_ci(reason: str) -> None:
    """Skips a test that cannot run on this machine; under CI (CI=true) fails it instead, so
    that a CI without a private network does not lose those tests in silence."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test, and cannot here: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def dns() -> "TestResolver":
    """The tests' own DNS server (names resolve as the test says); skips where it cannot run
    (fails under CI)."""
    global _RESOLVER
    from tests.support.dns import TestResolver

    if not PRIVATE_NETWORK.resolver:
        skip_unless_ci(f"no resolver the tests control: {PRIVATE_NETWORK.reason or 'no private mount namespace'}")
    if _RESOLVER is None:
        _RESOLVER = TestResolver()
    _RESOLVER.records.clear()
    return _RESOLVER


@pytest.fixture
def private_network() -> netns.PrivateNetwork:
    """For tests that need multicast: they skip, saying why, where no namespace could be made
    (and fail under CI)."""
    if not PRIVATE_NETWORK.active:
        skip_unless_ci(f"multicast needs a route that stays on this machine; {PRIVATE_NETWORK.reason}")
    return PRIVATE_NETWORK


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A throw-away home, data and config directory for this test and every process it starts."""
    env = dict(os.environ)
    for name, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_DIRS", "system-config")):
        path = tmp_path / sub
        path.mkdir()
        env[name] = str(path)
        monkeypatch.setenv(name, str(path))
    return env


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "direct_sockets", *args], env=env, capture_output=True, text=True, check=check)


@pytest.fixture
def chromium_manifest(isolated_env: dict[str, str], tmp_path: Path) -> Path:
    profile = tmp_path / "profile"
    cli(isolated_env, "install", "--browser", "chromium", "--user-data-dir", str(profile))
    return profile / "NativeMessagingHosts" / "direct_sockets.json"


@pytest.fixture
def host(isolated_env: dict[str, str], chromium_manifest: Path) -> Iterator[HostProcess]:
    proc = HostProcess(chromium_manifest, f"chrome-extension://{extension_ids().chrome}/", isolated_env)
    yield proc
    proc.kill()
    assert not proc.bad_stdout, "the host wrote something on stdout that is not a valid protocol frame"


FIREFOX_ADDON = "direct-sockets@direct-sockets.invalid"


@pytest.fixture
def firefox_host(isolated_env: dict[str, str]) -> Iterator[HostProcess]:
    """The host as Firefox starts it: the manifest's path and the add-on's ID."""
    cli(isolated_env, "install", "--browser", "firefox")
    manifest = Path(isolated_env["HOME"]) / ".mozilla/native-messaging-hosts/direct_sockets.json"
    proc = HostProcess(manifest, [str(manifest), FIREFOX_ADDON], isolated_env)
    yield proc
    proc.kill()
    assert not proc.bad_stdout, "the host wrote something on stdout that is not a valid protocol frame"


@pytest.fixture
def echo_server() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.close()


@pytest.fixture(scope="session")
def installed_wheel() -> Iterator["InstalledVenv"]:
    """The package built as a wheel and installed into a fresh venv outside the checkout."""
    from tests.support.installed import build, remove

    venv = build()
    yield venv
    remove(venv)


if TYPE_CHECKING:
    from tests.support.installed import InstalledVenv


USER_DIRS = ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_DIRS")


def user_files(env: dict[str, str]) -> dict[str, bytes]:
    """Every file under the home, data, config, state and cache directories of `env`, with
    its content: what a test compares before and after to see that nothing was written."""
    files: dict[str, bytes] = {}
    for name in USER_DIRS:
        root = Path(env[name])
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[f"{name}/{path.relative_to(root)}"] = path.read_bytes()
    return files


def written_since(before: dict[str, bytes], env: dict[str, str], log_may_grow: bool = True) -> dict[str, bytes]:
    """The files under `env`'s user directories that are new or changed since `before`, but
    the host log, which records what the host does (it must hold no grant: see the caller)."""
    after = user_files(env)
    return {
        path: content for path, content in after.items()
        if before.get(path) != content and not (log_may_grow and path.endswith("direct-sockets/log/host.log"))
    }
