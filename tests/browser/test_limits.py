"""The page's API takes every size and window from the host's hello (`limits`), through the
background, and refuses to work rather than guess when they are missing or make no sense.

A real host behind a shim that rewrites its hello (tests/support/hello_shim.py) plays a host
with other limits; the browser, the extension and the host are otherwise the ones under test."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.browser.harness import Browser
from tests.support.servers import TcpServer, echo

pytestmark = pytest.mark.browser

SHIM = Path(__file__).resolve().parents[1] / "support" / "hello_shim.py"


@pytest.fixture
def hello_changed(browser: Browser) -> Iterator[Any]:
    """Makes the browser's host announce other limits (until the test ends): call it with the
    change (see hello_shim.py). The next socket starts a host that says them."""
    wrapper = Path(json.loads(Path(browser.manifest).read_text())["path"])
    original = wrapper.read_text()
    real = wrapper.with_name(wrapper.name + ".real")
    real.write_text(original)
    real.chmod(0o755)

    def change(how: dict[str, Any]) -> None:
        wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(SHIM))} "
                           f"{shlex.quote(json.dumps(how))} {shlex.quote(str(real))} \"$@\"\n")
        browser.restart_host()

    try:
        yield change
    finally:
        wrapper.write_text(original)
        real.unlink(missing_ok=True)
        browser.restart_host()


def test_the_hosts_datagram_limit_holds_in_the_page(browser: Browser, hello_changed: Any) -> None:
    hello_changed({"set": {"maxDatagram": 1000}})
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="udp")
    r = browser.run("datagramLimit", size=1000)
    assert r["fits"] is True and r["received"] == 1000
    assert r["over"]["name"] == "TypeError" and "1000 bytes" in r["over"]["message"]


@pytest.mark.parametrize("how", [
    {"drop": True},
    {"set": {"acceptWindow": 0}},  # out of its range
    {"set": {"maxChunk": "524288"}},  # not a number
], ids=["missing", "out-of-range", "not-a-number"])
def test_without_sane_limits_no_socket_opens(browser: Browser, hello_changed: Any, how: dict[str, Any]) -> None:
    hello_changed(how)
    browser.grant("127.0.0.1:*")
    browser.grant("127.0.0.1:*", kind="udp")
    browser.grant("127.0.0.1:*", kind="tcp-listen")
    server = TcpServer(echo)
    try:
        r = browser.run("withoutLimits", port=server.port)
    finally:
        server.close()
    refused = {"opened": "NetworkError", "closed": "NetworkError"}
    assert r == {"tcp": refused, "udp": refused, "server": refused}
