"""The API in dedicated workers, through the real extension and host, in real headless Chromium
and Firefox: classic, module, blob-URL and nested workers; their sockets are the page's, and
close when the worker goes; the worker keeps its own semantics; and its bytes keep moving while
the page's main thread is busy."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.browser.harness import Browser, ScenarioSite, wait_for
from tests.support.servers import TcpServer, hashing_sink, make_source

pytestmark = pytest.mark.browser

API = {"TCPSocket": "function", "UDPSocket": "function", "TCPServerSocket": "function", "MulticastController": "function"}


@pytest.mark.parametrize("kind", ["classic", "module", "blob", "nested"])
def test_echo_from_a_worker(browser: Browser, echo_server: TcpServer, kind: str) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("workerEcho", kind=kind, port=echo_server.port, text=f"from a {kind} worker ✓")
    assert result["got"] == f"from a {kind} worker ✓" and result["endDone"] is True
    if kind != "nested":
        assert result["presence"] == API


def test_a_worker_keeps_its_own_semantics(browser: Browser, site: ScenarioSite) -> None:
    """self.location, relative importScripts, import and fetch, nested workers, onerror, a
    script that cannot be loaded, terminate(): as on a page the extension does not touch (an
    insecure origin, where the API is absent and Worker is the browser's own)."""
    ours = browser.run("workerSemantics")
    plain = browser.run("workerSemantics", origin=f"http://insecure.test:{site.port}")
    assert ours.pop("api") == {"classic": "function", "module": "function", "nested": "function"}
    assert plain.pop("api") == {"classic": "undefined", "module": "undefined", "nested": "undefined"}
    assert ours == plain
    assert ours["classic"]["hrefIsScript"] and ours["module"]["hrefIsScript"] and ours["thrown"]["filename"]
