"""The extension's trust boundary, attacked from the page's world: what a page cannot do
whatever it redefines or posts, because the bridge (isolated world) and the background (from
what the browser says about the sender) check it again (docs/SECURITY.md, "Threat model:
extension boundary")."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from tests.browser.harness import Browser, Chromium, ScenarioSite, cli
from tests.support.servers import TcpServer

pytestmark = pytest.mark.browser

INSECURE = "http://insecure.test:{port}"  # resolved to 127.0.0.1 by the harness, not a secure context


def _grant_if_the_host_takes_it(browser: Browser, origin: str, port: int) -> None:
    """Grants the destination to `origin`, so that only the extension's refusal stands between
    the page and the socket (a host that refuses such origins outright is fine too)."""
    cli(browser.env, "permissions", "grant", "--origin", origin, "--tcp", f"127.0.0.1:{port}", check=False)


def _framed(browser: Browser, site: ScenarioSite, scenario: str, frame_origin: str, timeout: float = 30, **params: object) -> object:
    """Runs `scenario` in an iframe of `frame_origin` inside a secure top-level page; returns its value."""
    token = uuid.uuid4().hex
    inbox = site.inbox(token)
    frame_url = site.scenario_url(scenario, params, token, origin=frame_origin)
    browser.start("embed", frameUrl=frame_url)
    result = inbox.get(timeout=timeout)
    assert result["ok"], result
    return result["value"]


def _nothing_reached(browser: Browser, server: TcpServer) -> None:
    time.sleep(0.5)
    assert browser.host_pids() == [], "the host was started for a refused frame"
    assert server.accepted == 0


def test_an_insecure_page_cannot_hand_the_bridge_a_channel(browser: Browser, site: ScenarioSite, echo_server: TcpServer) -> None:
    origin = INSECURE.format(port=site.port)
    _grant_if_the_host_takes_it(browser, origin, echo_server.port)
    result = browser.run("forgeOpen", origin=origin, port=echo_server.port)
    assert result["secure"] is False and result["typeofTCPSocket"] == "undefined"
    _nothing_reached(browser, echo_server)  # the background's refusal (checked first: it stands alone)
    assert result["heard"] == [] and result["taken"] is False  # the bridge's


def test_an_insecure_frame_in_a_secure_page_cannot_either(browser: Browser, site: ScenarioSite, echo_server: TcpServer) -> None:
    origin = INSECURE.format(port=site.port)
    _grant_if_the_host_takes_it(browser, origin, echo_server.port)
    result = _framed(browser, site, "forgeOpen", origin, port=echo_server.port)
    assert result["secure"] is False
    _nothing_reached(browser, echo_server)
    assert result["heard"] == [] and result["taken"] is False


def test_no_page_observable_value_names_the_extension(browser: Browser, echo_server: TcpServer) -> None:
    """Firefox's moz-extension UUID is made per install: seen by a page, it would follow the user
    from site to site (questionnaire 2.6). The page hooks what it can before the API talks to
    the extension, uses a socket on the bulk path (under a CSP that sends it through the
    extension's frame where there is one), and reports every extension URL it saw."""
    # Chromium uses its bulk frame on a public page (Local Network Access), Firefox would under a CSP.
    origin = browser.site.public_origin if isinstance(browser, Chromium) else browser.site.origin
    browser.grant(f"127.0.0.1:{echo_server.port}", origin=origin)
    result = browser.run("scanForExtensionUrls", origin=origin, port=echo_server.port, contentSecurityPolicy="connect-src 'self'")
    assert result["opened"] is True
    if isinstance(browser, Chromium):
        # Chromium's extension ID is the same for every install (the manifest's key), so it names
        # the extension and nothing about the user; its bulk frame, which public pages need, is
        # the one place it shows. Nowhere else: our stacks carry a sourceURL of their own.
        public_id = f"chrome-extension://{browser.extension_id}/bulk.html"
        frame_kinds = ("added <iframe>", "iframe in the DOM", "document", "setAttribute src", "attribute src")
        stray = [s for s in result["seen"] if s.split(": ", 1)[0] not in frame_kinds or s.count("extension://") != s.count(public_id)]
        assert stray == []
    else:
        # Firefox's frame is the host's, on a loopback port of this page's alone: no extension
        # URL anywhere.
        assert result["seen"] == []
        assert len(result["frameSources"]) == 1 and re.fullmatch(r"http://localhost:\d+/frame", result["frameSources"][0]), result


# -- the direct-sockets policy-controlled feature: header and `allow`, at every level -----------


def _nested(browser: Browser, site: ScenarioSite, port: int, chain: list[dict[str, object]], **top: object) -> object:
    """Runs frameOpens in the innermost of nested same-origin frames. `chain`: for each frame,
    from the outermost, what its container says (`allow`, `dropAllow`) and the page's own
    header (`permissionsPolicy`); `top`: the top-level page's parameters."""
    token = uuid.uuid4().hex
    inbox = site.inbox(token)

    def container(level: int) -> dict[str, object]:
        return {k: v for k, v in chain[level].items() if k not in ("page", "origin")}

    def page(level: int) -> dict[str, object]:
        return dict(chain[level].get("page", {}))  # type: ignore[call-overload]

    def origin(level: int) -> str | None:
        return chain[level].get("origin", "").format(port=site.port) or None  # type: ignore[union-attr]

    url = site.scenario_url("frameOpens", {"port": port, "delay": 300, **page(-1)}, token, origin=origin(-1))
    for level in range(len(chain) - 1, 0, -1):  # frame level-1 embeds frame level
        url = site.scenario_url("embed", {"frameUrl": url, **container(level), **page(level - 1)}, uuid.uuid4().hex, origin=origin(level - 1))
    browser.start("embed", frameUrl=url, **container(0), **top)
    result = inbox.get(timeout=30)
    assert result["ok"], result
    return result["value"]


@pytest.mark.parametrize(
    ("chain", "top", "expected"),
    [
        ([{"allow": "direct-sockets 'none'"}], {}, "NotAllowedError"),
        ([{"allow": "camera; direct-sockets 'none'"}], {}, "NotAllowedError"),
        ([{"allow": "direct-sockets 'none'", "dropAllow": True}], {}, "NotAllowedError"),  # fixed when it navigated
        ([{"allow": "direct-sockets 'none'"}, {}], {}, "NotAllowedError"),  # nested inside a refused frame
        ([{}, {"page": {"permissionsPolicy": "direct-sockets=()"}}, {}], {}, "NotAllowedError"),  # a middle frame's header
        ([{}], {"permissionsPolicy": "direct-sockets=()"}, "NotAllowedError"),  # the top's header
        ([{"allow": "direct-sockets"}], {}, "opened"),
        ([{"allow": "direct-sockets 'src'"}, {"allow": "direct-sockets *"}], {}, "opened"),
        ([{"allow": "camera 'none'"}, {}], {}, "opened"),
        # The top level's origin, inside a third-party frame (localhost is another origin than 127.0.0.1).
        ([{"origin": "http://localhost:{port}", "allow": "direct-sockets *"}, {"allow": "direct-sockets *"}], {}, "NotAllowedError"),
    ],
    ids=["none", "none-among-others", "none-then-dropped", "nested-in-none", "middle-header", "top-header", "allowed", "nested-allowed", "unrelated", "inside-third-party"],
)
def test_the_frame_policy_is_honoured_at_every_level(browser: Browser, site: ScenarioSite, echo_server: TcpServer, chain: list, top: dict, expected: str) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    outcome = _nested(browser, site, echo_server.port, chain, **top)
    assert outcome in ((expected,) if expected == "opened" else (expected, f"thrown {expected}"))
    if expected != "opened":
        _nothing_reached(browser, echo_server)


# -- the consent window: a budget of windows, and buttons that wait for the user ---------------


def test_a_click_as_the_window_opens_does_not_allow(browser: Browser, echo_server: TcpServer) -> None:
    inbox = browser.start("echo", port=echo_server.port, text="allowed by the user")
    shown = browser.answer_prompt("once", early_click=True)
    assert shown["open_after_early_click"] is True  # the early click landed on a button not yet armed
    assert inbox.get(timeout=30)["value"]["got"] == "allowed by the user"  # the click after the delay allows


def test_frames_that_ask_and_go_get_the_budget_of_windows(browser: Browser, echo_server: TcpServer) -> None:
    """Same-origin frames made again and again, each asking and removed while it asks: every
    prompt they raise and withdraw counts, so the user sees at most the budget (6 a minute)."""
    before = browser.windows_opened()
    inbox = browser.start("askAndWithdraw", port=echo_server.port, count=20, holdMs=700)  # each window has time to open
    assert inbox.get(timeout=120) == {"ok": True, "value": "done"}
    time.sleep(1)
    opened = browser.windows_opened() - before
    assert 1 <= opened <= 6
    assert echo_server.accepted == 0
