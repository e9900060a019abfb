"""TCPSocket through the real extension and the real host, in real headless Chromium and Firefox."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import Browser, ScenarioSite, wait_for
from tests.support.servers import TcpServer, hashing_sink, make_source, reset_after_greeting, slow_sink

pytestmark = pytest.mark.browser



def test_api_present_with_webidl_shape(browser: Browser) -> None:
    shape = browser.run("presence")
    assert shape == {
        "TCPSocket": "function", "isSecureContext": True, "length": 2,
        "tag": "[object TCPSocket]", "protoKeys": ["close", "closed", "opened", "startTls"],
    }


def test_absent_outside_secure_contexts(browser: Browser, site: ScenarioSite) -> None:
    # insecure.test resolves to 127.0.0.1 in both browsers (see harness), but is not trustworthy.
    shape = browser.run("presence", origin=f"http://insecure.test:{site.port}")
    assert shape["isSecureContext"] is False
    assert shape["TCPSocket"] == "undefined"


def test_echo(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("echo", port=echo_server.port, text="hello, direct sockets ✓")
    assert result.pop("ms") >= 0
    assert result == {
        "got": "hello, direct sockets ✓", "endDone": True,
        "remoteAddress": "127.0.0.1", "remotePort": echo_server.port,
        "localAddress": "127.0.0.1", "localPortValid": True,
        "readableIsStream": True, "writableIsStream": True,
    }


def test_remote_port_wraps_modulo_65536(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    assert browser.run("portWraps", port=echo_server.port) == {"remotePort": echo_server.port}


def test_8_mib_both_ways_sha256(browser: Browser) -> None:
    size = 8 * 1024 * 1024
    payload, handler = make_source(size, seed=3)
    server = TcpServer(handler)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        result = browser.run("bothWays", port=server.port, size=size, timeout=120)
        assert result["receivedBytes"] == size
        assert result["receivedSha"] == hashlib.sha256(payload).hexdigest()
        [uploaded] = server.wait_results(1)
        assert len(uploaded) == size
        assert hashlib.sha256(uploaded).hexdigest() == result["uploadSha"]
        assert result["maxChunk"] <= 1024 * 1024  # one message: 512 KiB on native messaging, 1 MiB on the bulk path
    finally:
        server.close()


def test_a_buffer_reused_after_write_arrives_as_written(browser: Browser) -> None:
    """Writes go from the page's own memory where they can (the bulk path's zero-copy send),
    so a page that overwrites its buffer right after write() must still send what it wrote."""
    server = TcpServer(hashing_sink)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        result = browser.run("reusedBuffer", port=server.port, rounds=6, timeout=120)
        [(length, digest)] = server.wait_results(1)
        assert length == result["bytes"] > 6 * 2_000_000
        assert digest == result["sha"]
    finally:
        server.close()


def test_writes_from_every_kind_of_task_keep_their_order(browser: Browser, echo_server: TcpServer) -> None:
    """The page's own WebSocket sends a task's first write at once and gathers the rest until
    the task ends; writes from tasks the API did not start are gathered too. Whatever the mix,
    the bytes leave in the order they were written."""
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("writesFromEveryTask", port=echo_server.port, count=4000, timeout=120)
    assert result == {"received": 4000, "outOfOrder": -1}


def test_half_close_peer_first(browser: Browser) -> None:
    payload, handler = make_source(100_000, seed=4)
    server = TcpServer(handler)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        assert browser.run("peerFinFirst", port=server.port) == {"received": 100_000}
        assert server.wait_results(1) == [b"after your FIN"]
    finally:
        server.close()


def test_half_close_page_first(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("pageFinFirst", port=echo_server.port)
    assert result["text"] == "half"
    assert result["writeAfterClose"]["ok"] is False and result["writeAfterClose"]["error"]["name"] == "TypeError"


def test_peer_reset_is_network_error(browser: Browser) -> None:
    server = TcpServer(reset_after_greeting)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        result = browser.run("peerReset", port=server.port)
        assert result["first"] == "hello"
        assert result["readError"] == {"name": "NetworkError", "message": "Network error.", "isDOMException": True}
        assert result["closed"] == {"ok": False, "error": result["readError"]}
        assert result["writeAfter"]["ok"] is False and result["writeAfter"]["error"]["name"] == "NetworkError"
    finally:
        server.close()


def test_ungranted_is_not_allowed_and_never_connects(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}", origin="https://someone-else.example")
    result, _ = browser.run_answering("notAllowed", ["deny", "deny"], port=echo_server.port)
    denied = {"ok": False, "error": {"name": "NotAllowedError", "message": "Permission denied.", "isDOMException": True}}
    assert result["opened"] == denied
    assert result["closed"] == denied
    assert result["closeCall"]["error"]["name"] == "InvalidStateError"
    assert result["unhandled"] == []  # closed's rejection is marked handled
    time.sleep(0.2)
    assert echo_server.accepted == 0


def test_ungranted_message_is_the_same_for_a_name_that_does_not_exist(browser: Browser) -> None:
    result, _ = browser.run_answering("notAllowed", ["deny", "deny"], port=1, address="no-such-host.invalid")
    assert result["opened"]["error"] == {"name": "NotAllowedError", "message": "Permission denied.", "isDOMException": True}


def test_close_rules(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    r = browser.run("closeRules", port=echo_server.port)
    assert r["beforeOpen"]["error"]["name"] == "InvalidStateError"
    assert r["whileReadLocked"]["error"]["name"] == "InvalidStateError"
    assert r["whileWriteLocked"]["error"]["name"] == "InvalidStateError"
    assert r["sameAsClosed"] is True
    assert r["result"] == {"ok": True}
    assert r["againSame"] is True
    assert r["readAfter"] == {"ok": True, "value": {"done": True}}
    assert r["writeAfter"]["ok"] is False and r["writeAfter"]["error"]["name"] == "AbortError"


def test_orderly_close(browser: Browser) -> None:
    server = TcpServer(hashing_sink)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        assert browser.run("orderlyClose", port=server.port) == {"closed": {"ok": True}}
        assert server.wait_results(1) == [(3, hashlib.sha256(b"bye").hexdigest())]
    finally:
        server.close()


def test_byob_reader(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("byob", port=echo_server.port)
    assert "".join(part["text"] for part in result["got"]) == "0123456789"
    assert all(part["length"] <= 4 and part["bufferLength"] == 4 for part in result["got"])
    assert result["endDone"] is True


def test_non_buffer_chunk_is_type_error(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    result = browser.run("badChunk", port=echo_server.port)
    assert result["bad"]["error"]["name"] == "TypeError"
    assert result["closed"]["error"]["name"] == "TypeError"


def test_constructor_validation(browser: Browser) -> None:
    assert browser.run("validation") == {
        "noArgs": "TypeError", "oneArg": "TypeError", "symbolAddress": "TypeError", "bigintPort": "TypeError",
        "optionsNotObject": "TypeError", "keepAliveLow": "TypeError", "keepAliveNegative": "TypeError",
        "keepAliveNaN": "TypeError", "sendBufferZero": "TypeError", "receiveBufferZero": "TypeError",
        "sendBufferTooLarge": "TypeError", "receiveBufferInfinity": "TypeError", "dnsBad": "TypeError",
        "callWithoutNew": "TypeError", "keepAliveOk": "ok", "sendBufferFraction": "ok", "portNaN": "ok",
        "nullOptions": "ok", "dnsOk": "ok", "illegalGetter": "TypeError",
    }


def test_third_party_frame_is_not_allowed(browser: Browser, site: ScenarioSite) -> None:
    frame_url = site.scenario_url("inFrame", {}, "frame-token", origin=f"http://localhost:{site.port}")
    result = browser.run("thirdPartyFrame", frameUrl=frame_url)
    assert result == {"typeofTCPSocket": "function", "outcome": "DOMException:NotAllowedError"}


def test_writer_backpressure_keeps_host_memory_bounded(browser: Browser) -> None:
    server = TcpServer(slow_sink(delay=0.004, chunk=64 * 1024))
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        inbox = browser.start("backpressure", port=server.port, megabytes=64)
        assert inbox.get(timeout=30) == {"ok": True, "value": "ready"}  # the first MiB went through
        [pid] = browser.host_pids()
        start_kib = _rss_kib(pid)
        browser.site.signal(browser.last_token)
        result = inbox.get(timeout=180)
        assert result["ok"], result
        peak_kib = _peak_kib(pid)
        assert server.wait_results(1, timeout=60) == [65 * 1024 * 1024]
        growth = (peak_kib - start_kib) / 1024
        assert growth < 16, f"host peak RSS grew {growth:.1f} MiB while the page wrote 64 MiB"
        assert result["value"]["desiredWhileWriting"] <= 0  # the writer reported backpressure
    finally:
        server.close()


def _rss_kib(pid: int) -> int:
    return _status_field(pid, "VmRSS:")


def _peak_kib(pid: int) -> int:
    return _status_field(pid, "VmHWM:")


def _status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for {pid}")


# -- lifetime ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["navigate", "reload", "close-tab", "remove-iframe"])
def test_sockets_close_when_their_frame_goes_away(browser: Browser, how: str) -> None:
    server = TcpServer(hashing_sink)  # its handler returns when the connection ends
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        # The host running and settled, its descriptors counted before the socket.
        assert browser.run("portWraps", port=server.port) == {"remotePort": server.port}
        [pid] = browser.host_pids()
        assert wait_for(lambda: server.accepted == 1 and len(server.results) == 1, timeout=10)
        time.sleep(0.3)
        fds_before = len(os.listdir(f"/proc/{pid}/fd"))
        if how == "close-tab":
            inbox = browser.start_in_new_tab("hold", port=server.port)
        elif how == "remove-iframe":
            inbox = browser.start("frameHolds", port=server.port)
        else:
            inbox = browser.start("hold", port=server.port)
        assert inbox.get(timeout=30) == {"ok": True, "value": "opened"}
        time.sleep(0.3)
        assert len(server.results) == 1 and server.accepted == 2
        fds_holding = len(os.listdir(f"/proc/{pid}/fd"))
        if how == "navigate":
            browser.navigate("about:blank")
        elif how == "reload":
            browser.reload()
        elif how == "close-tab":
            browser.close_tab()
        else:
            browser.site.signal(browser.last_token)
            assert inbox.get(timeout=10) == {"ok": True, "value": "removed"}
        assert len(server.wait_results(2, timeout=10)) == 2, f"the socket stayed open after {how}"
        expected = fds_before
        if how == "reload":  # the reloaded page runs the scenario again: one socket, as before
            while inbox.get(timeout=30) != {"ok": True, "value": "opened"}:
                pass  # (the old page may report its socket's end as it goes)
            expected = fds_holding
        # Nothing left behind in the host: the socket, and its WebSocket, are closed.
        assert wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) == expected, timeout=10), (
            f"host descriptors: {len(os.listdir(f'/proc/{pid}/fd'))} after {how}, {expected} expected"
        )
    finally:
        server.close()


def kill_host_and_wait(browser: Browser, inbox: "queue.Queue[Any]") -> tuple[int, dict]:
    """Kills the browser's host; returns its pid and the page's next report, which must come
    within a second (the page's sockets fail as soon as the host is gone)."""
    [pid] = browser.host_pids()
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    result = inbox.get(timeout=10)
    elapsed = time.monotonic() - killed_at
    assert elapsed < 1.0, f"the page learned of the dead host after {elapsed:.2f} s"
    return pid, result


def test_host_killed_mid_transfer_fails_every_socket_within_a_second(browser: Browser) -> None:
    def stream_forever(conn):  # type: ignore[no-untyped-def]
        block = bytes(256 * 1024)
        try:
            while True:
                conn.sendall(block)
        except OSError:
            return None

    server = TcpServer(stream_forever)
    try:
        browser.grant(f"127.0.0.1:{server.port}")
        inbox = browser.start("streamMany", port=server.port, count=4)
        assert inbox.get(timeout=60) == {"ok": True, "value": "streaming"}
        _, result = kill_host_and_wait(browser, inbox)
        assert result["value"] == {"ended": ["NetworkError"] * 4, "closed": ["NetworkError"] * 4}
    finally:
        server.close()


def test_host_death_fails_open_sockets_and_next_socket_gets_a_fresh_host(browser: Browser, echo_server: TcpServer) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    inbox = browser.start("hold", port=echo_server.port)
    assert inbox.get(timeout=30) == {"ok": True, "value": "opened"}
    pid, result = kill_host_and_wait(browser, inbox)
    assert result["value"]["closed"] == {"ok": False, "error": {"name": "NetworkError", "message": "Network error.", "isDOMException": True}}
    assert browser.run("afterHostDeath", port=echo_server.port) == {"echoed": "ping"}
    assert wait_for(lambda: browser.host_pids() and browser.host_pids() != [pid])


@pytest.mark.parametrize(
    ("policy", "expected"),
    # Thrown synchronously by the very first constructor.
    [("direct-sockets=()", {"opened": "DOMException:NotAllowedError", "second": "DOMException:NotAllowedError"}),
     ('camera=(), direct-sockets=("https://elsewhere.example")', {"opened": "DOMException:NotAllowedError", "second": "DOMException:NotAllowedError"}),
     ("direct-sockets=(self)", {"opened": "opened", "second": "constructed"}),
     ("camera=()", {"opened": "opened", "second": "constructed"})],
    ids=["none", "other-origin", "self", "unrelated"],
)
def test_permissions_policy_is_honoured(browser: Browser, echo_server: TcpServer, policy: str, expected: dict) -> None:
    browser.grant(f"127.0.0.1:{echo_server.port}")
    assert browser.run("policyBlocked", port=echo_server.port, permissionsPolicy=policy) == expected
    if expected["opened"] != "opened":
        assert echo_server.accepted == 0 and browser.host_pids() == []  # refused before the host heard of it
