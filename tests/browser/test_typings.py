"""types/direct-sockets.d.ts against the extension's real shape in a page, in both browsers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser.harness import Browser
from tests.support.servers import TcpServer

pytestmark = pytest.mark.browser

TYPINGS = Path(__file__).resolve().parents[2] / "types" / "direct-sockets.d.ts"


def _bodies(kind: str) -> dict[str, str]:
    text = TYPINGS.read_text()
    # A declaration may be generic (`class TCPSocket<Secure extends ...> {`) and extend another.
    return {m.group(1): m.group(2) for m in re.finditer(rf"{kind} (\w+)(?:<[^\n{{]*>)?(?: extends [^\n{{]+)? \{{(.*?)\n\}}", text, re.S)}


def _members(body: str) -> dict[str, bool]:
    """Member name -> optional, for the lines of a declaration body."""
    found = {}
    for line in body.splitlines():
        m = re.match(r"\s+(?:readonly\s+|private\s+)?(\w+)(\?)?[(:]", line)
        if m and m.group(1) != "constructor":
            found[m.group(1)] = bool(m.group(2))
    return found


def test_declarations_match_the_real_interfaces(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    browser.grant("127.0.0.1:*", kind="udp-bind")
    browser.grant("127.0.0.1:*", kind="tcp-listen")
    real = browser.run("shape", port=echo_server.port)
    classes = _bodies("declare class")
    assert set(classes) == set(real["classes"])
    for name, members in real["classes"].items():
        assert sorted(_members(classes[name])) == members, name
    # Constructor arity: the number of required parameters, as `length` reports.
    for name, length in real["lengths"].items():
        signature = re.search(r"constructor\((.*?)\);", classes[name]).group(1)  # type: ignore[union-attr]
        required = [p for p in signature.split(",") if p.strip() and "?" not in p.split(":")[0]]
        assert len(required) == length, name
    interfaces = _bodies("interface")
    for info, keys in real["infos"].items():
        declared = _members(interfaces[info])
        assert {k for k, optional in declared.items() if not optional} <= set(keys) <= set(declared), info
