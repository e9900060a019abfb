from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.browser.harness import CHROMIUM_BINARY, FIREFOX_BINARY, Browser, Chromium, Firefox, ScenarioSite

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def site() -> Iterator[ScenarioSite]:
    s = ScenarioSite()
    yield s
    s.close()


def _launch(kind: str, base: Path, site: ScenarioSite) -> Browser:
    binary = CHROMIUM_BINARY if kind == "chromium" else FIREFOX_BINARY
    if not Path(binary).exists():
        message = f"{kind} is not installed ({binary}); .ci/run installs it"
        if IN_CI:
            pytest.fail(message)  # in CI a browser test that cannot run is a failure, not a skip
        pytest.skip(message)
    return Chromium(base, site) if kind == "chromium" else Firefox(base, site)


@pytest.fixture(scope="session", params=["chromium", "firefox"])
def browser(request: pytest.FixtureRequest, site: ScenarioSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = _launch(request.param, tmp_path_factory.mktemp(request.param), site)
    yield b
    b.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The quick tests first, then each browser's tests together, so that only one browser runs
    # at a time.
    def key(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "browser" not in callspec.params:
            return 0
        return 1 + ["chromium", "firefox"].index(callspec.params["browser"])

    items.sort(key=key)


@pytest.fixture(autouse=True)
def _clean_slate(request: pytest.FixtureRequest) -> None:
    """No grants and a fresh host (so no cool-down) left over from the tests before."""
    if "browser" in request.fixturenames:
        browser = request.getfixturevalue("browser")
        browser.revoke_all()
        browser.close_stray_windows()
        browser.restart_host()
