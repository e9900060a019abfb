"""The demo a newcomer runs (`direct-sockets demo`), driven in real Chromium: the TCP client,
UDP and the small server all work; and the screenshots kept under docs/ are taken here.

DIRECT_SOCKETS_UPDATE_SCREENSHOTS=1 writes them to docs/screenshots/; otherwise to a temporary
directory, so that a test run leaves the checkout as it was."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.browser.harness import Browser, Chromium
from tests.browser.test_popup import ExtensionPage
from tests.support.servers import free_port
from tests.test_demo_server import demo_lines, until_announced

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def demo(browser: Browser) -> Iterator[str]:
    assert isinstance(browser, Chromium)
    http_port, echo_port = free_port(), free_port()
    proc, lines = demo_lines(browser.env, "--grant", "--http-port", str(http_port), "--echo-port", str(echo_port))
    try:
        if not until_announced(lines):  # said once it listens
            pytest.fail(f"the demo ended (exit {proc.wait(10)}) without saying where it is")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run([sys.executable, "-m", "direct_sockets", "permissions", "revoke", "--origin", f"http://127.0.0.1:{http_port}"],
                       env=browser.env, capture_output=True)


def shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("DIRECT_SOCKETS_UPDATE_SCREENSHOTS") == "1" else tmp_path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)  # driven, and photographed, in Chromium
def test_the_demo_works_and_is_photographed(browser: Browser, demo: str, tmp_path: Path) -> None:
    assert isinstance(browser, Chromium)
    out = shots(tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page = browser.context.new_page()
    try:
        page.set_viewport_size({"width": 900, "height": 1000})
        page.goto(f"{demo}/")
        page.wait_for_selector("#status:has-text('The API is here')")
        # The telnet-style client, through the echo service.
        page.click("#tcp-open")
        page.wait_for_selector("#tcp-log:has-text('connected to 127.0.0.1')")
        page.fill("#tcp-line", "hello, demo")
        page.press("#tcp-line", "Enter")
        page.wait_for_selector("#tcp-log:has-text('< hello, demo')")
        # A datagram there and back.
        page.click("#udp-send-button")
        page.wait_for_selector("#udp-log:has-text('received 14 bytes back: hello over UDP')")
        # The page's own server, and a client of it.
        page.click("#server-start")
        page.wait_for_selector("#server-log:has-text('listening on 127.0.0.1:')")
        page.click("#server-try")
        page.wait_for_selector("#server-log:has-text('the client got: HELLO, SERVER')")
        page.screenshot(path=str(out / "demo.png"), full_page=True)

        # The popup, with the demo's TCP client still connected (and its bytes counted: the
        # host reports them about once a second).
        page.wait_for_timeout(1500)
        tab_id = browser.tab_id_of(page.url)
        popup = ExtensionPage(browser, f"popup.html?tab={tab_id}")
        try:
            popup.page.set_viewport_size({"width": 860, "height": 320})
            popup.page.screenshot(path=str(out / "popup.png"))
        finally:
            popup.close()

        # The consent window: the demo's grants revoked, the next connection asks.
        subprocess.run([sys.executable, "-m", "direct_sockets", "permissions", "revoke", "--origin", demo], env=browser.env, check=True,
                       capture_output=True)
        page.click("#tcp-close")
        page.wait_for_selector("#tcp-open:not([disabled])")
        page.click("#tcp-open")
        window = None
        for _ in range(200):
            window = next((p for p in browser.context.pages if "/consent.html" in p.url and not p.is_closed()), None)
            if window:
                break
            page.wait_for_timeout(50)
        assert window is not None, "no consent window"
        window.wait_for_selector("body[data-ready=true]")
        window.set_viewport_size({"width": 520, "height": 640})
        window.screenshot(path=str(out / "consent.png"))
        window.click("#deny")
        page.wait_for_selector("#tcp-log:has-text('NotAllowedError')")
    finally:
        page.close()
    for name in ("demo.png", "popup.png", "consent.png"):
        width, height = png_size(out / name)
        assert width >= 400 and height >= 300, (name, width, height)


RUNNABLE = ("## TCP", "## UDP, connected", "## UDP, bound", "## A TCP server")


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)
def test_the_api_guides_examples_run_against_the_demo(browser: Browser, demo: str) -> None:
    """docs/API.md's TCP, UDP and server examples, run as they are written (the echo port
    swapped for this demo's) in the demo's page. The multicast and TLS ones need a network and
    a device this machine does not have."""
    import re

    assert isinstance(browser, Chromium)
    guide = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text()
    echo_port = re.search(r"data-echo=\"(\d+)\"", __import__("urllib.request").request.urlopen(f"{demo}/").read().decode()).group(1)
    page = browser.context.new_page()
    try:
        page.goto(f"{demo}/")
        page.wait_for_selector("#status:has-text('The API is here')")
        logged: list[str] = []
        page.on("console", lambda message: logged.append(message.text))
        for heading in RUNNABLE:
            section = guide.split(heading, 1)[1]
            code = re.search(r"```js\n(.*?)```", section, re.S).group(1).replace("7777", echo_port)  # type: ignore[union-attr]
            page.evaluate(f"async () => {{ {code} }}")
        page.wait_for_timeout(200)
        assert "hello\n" in logged or "hello" in [line.strip() for line in logged], logged
        assert "ping" in logged and "echo me" in logged, logged
        assert any(line.endswith("to the echo") and line.startswith("127.0.0.1") for line in logged), logged
    finally:
        page.close()
