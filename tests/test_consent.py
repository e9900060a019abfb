"""Asking the user: the consent broker on its own, and the host's prompts over real pipes."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import pytest

from direct_sockets.trust.consent import ConsentBroker, service_name
from direct_sockets.trust.decision import most_sensitive as scope_of
from direct_sockets.protocol.errors import Code
from tests.conftest import cli, user_files, written_since
from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer, free_port

ORIGIN = "http://127.0.0.1:8000"


# -- the broker, with a clock the test moves --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_prompt_per_tab_and_the_queue() -> None:
    broker = ConsentBroker(clock=Clock())
    assert broker.request("tab1", 1) == "show"
    assert broker.request("tab1", 2) == "wait"
    assert broker.request("tab2", 3) == "show"  # another tab is not held up
    assert broker.request("tab1", 4) == "wait"
    assert broker.finished("tab1", 4) is None  # a waiting one gave up
    assert broker.finished("tab1", 1) == 2
    assert broker.finished("tab1", 2) is None
    assert broker.request("tab1", 5) == "show"


def test_queue_is_bounded() -> None:
    broker = ConsentBroker(clock=Clock())
    broker.request("t", 0)
    answers = [broker.request("t", i) for i in range(1, 20)]
    assert answers.count("wait") == 8 and answers[8:] == ["refuse"] * 11


def test_cooldown_after_repeated_refusals_and_its_end() -> None:
    clock = Clock()
    broker = ConsentBroker(clock=clock, denials_before_cooldown=3, cooldown_seconds=300)
    broker.answered(("https://a.example", False), False)
    broker.answered(("https://a.example", False), False)
    broker.answered(("https://a.example", False), True)  # an allow resets the count
    broker.answered(("https://a.example", False), False)
    broker.answered(("https://a.example", False), False)
    assert not broker.in_cooldown(("https://a.example", False))
    broker.answered(("https://a.example", False), False)
    assert broker.in_cooldown(("https://a.example", False)) and not broker.in_cooldown(("https://b.example", False))
    clock.now += 299
    assert broker.in_cooldown(("https://a.example", False))
    clock.now += 2
    assert not broker.in_cooldown(("https://a.example", False))


def test_withdrawn_prompts_count_toward_the_origin_budget() -> None:
    clock = Clock()
    broker = ConsentBroker(clock=clock, prompts_per_origin=6, budget_seconds=60)
    for _ in range(5):
        broker.answered(("https://a.example", False), None)  # raised, then withdrawn by the page
        clock.now += 1
    assert not broker.in_cooldown(("https://a.example", False))
    broker.answered(("https://a.example", False), True)  # answered ones count too
    assert broker.in_cooldown(("https://a.example", False)) and not broker.in_cooldown(("https://b.example", False))
    clock.now += 55
    assert not broker.in_cooldown(("https://a.example", False))  # the first ended more than a minute ago


def test_private_windows_count_apart_and_are_forgotten_with_them() -> None:
    broker = ConsentBroker(clock=Clock(), prompts_per_origin=2)
    for _ in range(2):
        broker.answered(("https://a.example", True), None)
        broker.answered(("https://a.example", False), None)
    assert broker.in_cooldown(("https://a.example", True)) and broker.in_cooldown(("https://a.example", False))
    broker.forget_private()  # the last private window closed
    assert not broker.in_cooldown(("https://a.example", True)) and broker.in_cooldown(("https://a.example", False))


def test_a_tab_gets_its_budget_of_prompts_per_minute() -> None:
    clock = Clock()
    broker = ConsentBroker(clock=clock, prompts_per_tab=10, budget_seconds=60)
    for sid in range(10):
        assert broker.request("tab", sid) == "show"
        assert broker.finished("tab", sid) is None  # withdrawn at once
        clock.now += 0.1
    assert broker.request("tab", 10) == "refuse"
    assert broker.request("other tab", 11) == "show"
    clock.now += 60
    assert broker.request("tab", 12) == "show"


def test_rate_limit_per_origin() -> None:
    from direct_sockets.trust.consent import RateLimiter

    clock = Clock()
    limiter = RateLimiter(clock=clock, burst=5, per_second=2)
    assert [limiter.allow(("https://a.example", False)) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow(("https://b.example", False))  # each origin has its own bucket
    assert limiter.allow(("https://a.example", True))  # and its private windows another (2.14)
    clock.now += 1.0
    assert [limiter.allow(("https://a.example", False)) for _ in range(3)] == [True, True, False]
    clock.now += 100
    assert sum(limiter.allow(("https://a.example", False)) for _ in range(10)) == 5  # refills to the burst, no more


def test_what_the_prompt_says_about_a_destination() -> None:
    assert service_name(22) == "SSH" and service_name(631) == "IPP printing" and service_name(1883) == "MQTT"
    assert service_name(40000) is None
    assert scope_of(["127.0.0.1", "::1"]) == "loopback"
    assert scope_of(["192.168.1.20"]) == "local" and scope_of(["fe80::1%eth0"]) == "local" and scope_of(["fd00::5"]) == "local"
    assert scope_of(["93.184.216.34", "127.0.0.1"]) == "loopback"  # the most sensitive wins (finding 2)
    assert scope_of(["93.184.216.34", "192.168.1.20"]) == "local" and scope_of(["93.184.216.34"]) == "internet"
    assert scope_of(["0.0.0.0"]) == scope_of(["::"]) == scope_of(["::ffff:127.0.0.1"]) == "loopback"  # finding 3
    assert scope_of(["100.64.0.1"]) == "local" and scope_of(["203.0.113.9"]) == "local"  # not globally routable
    assert scope_of(["::ffff:10.0.0.1"]) == "local"
    assert scope_of([]) == "unknown"


# -- the host ----------------------------------------------------------------------------------


def tcp_open(host: HostProcess, sid: int, port: int, address: str = "127.0.0.1", origin: str = ORIGIN, tab: int = 1, incognito: bool = False) -> None:
    host.send({"type": "tcp_open", "id": sid, "origin": origin, "tabId": tab, "frameId": 0, "incognito": incognito,
               "remoteAddress": address, "remotePort": port, "options": {}})


def grants(env: dict[str, str]) -> list[dict]:
    return json.loads(cli(env, "permissions", "list", "--json").stdout)



def test_prompt_describes_the_request(host: HostProcess, echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port, address="LocalHost.", tab=7)
    prompt = host.expect("prompt", id=1)
    assert prompt["origin"] == ORIGIN and prompt["tabId"] == 7 and prompt["kind"] == "tcp"
    assert prompt["host"] == "localhost" and prompt["port"] == echo_server.port  # as the core normalized it
    # localhost is this device whatever a resolver says (RFC 6761): no lookup, the scope at once.
    assert prompt["addresses"] == ["127.0.0.1", "::1"] and prompt["scope"] == "loopback"
    assert prompt["plaintext"] is False and prompt["offerAlways"] is True and prompt["timeoutSeconds"] == 60
    assert echo_server.accepted == 0  # nothing reached the destination while asking
    tcp_open(host, 2, 22, origin="https://app.example", tab=8)
    ssh = host.expect("prompt", id=2)
    assert ssh["service"] == "SSH" and ssh["plaintext"] is True


def test_allow_once_is_not_remembered(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port)
    host.expect("prompt", id=1)
    host.send({"type": "consent", "id": 1, "decision": "once"})
    host.expect("opened", id=1)
    assert grants(isolated_env) == []
    tcp_open(host, 2, echo_server.port)
    host.expect("prompt", id=2)


def test_always_is_remembered(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port)
    host.expect("prompt", id=1)
    host.send({"type": "consent", "id": 1, "decision": "always"})
    host.expect("opened", id=1)
    assert grants(isolated_env) == [{"origin": ORIGIN, "kind": "tcp", "host": "127.0.0.1", "port": echo_server.port}]
    tcp_open(host, 2, echo_server.port)
    host.expect("opened", id=2)  # no prompt the second time


def test_the_user_corrects_the_address(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port, address="printer.invalid")
    host.expect("prompt", id=1, host="printer.invalid")
    host.send({"type": "consent", "id": 1, "decision": "always", "host": "127.0.0.1"})
    host.expect("opened", id=1, remoteAddress="127.0.0.1")
    deadline = time.monotonic() + 5
    while echo_server.accepted < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo_server.accepted == 1
    assert grants(isolated_env)[0]["host"] == "127.0.0.1"  # what the user chose is remembered


def test_deny_and_timeout_refuse_alike(isolated_env: dict[str, str], chromium_manifest: Path, echo_server: TcpServer) -> None:
    from direct_sockets.install.installer import extension_ids

    env = {**isolated_env, "DIRECT_SOCKETS_PROMPT_TIMEOUT": "1"}
    host = HostProcess(chromium_manifest, f"chrome-extension://{extension_ids().chrome}/", env)
    try:
        host.hello()
        tcp_open(host, 1, echo_server.port)
        assert host.expect("prompt", id=1)["timeoutSeconds"] == 1
        host.expect("prompt_closed", id=1, timeout=5)  # nobody answered: the window must close
        timed_out = host.expect("error", id=1, code=Code.NOT_ALLOWED)
        tcp_open(host, 2, echo_server.port)
        host.expect("prompt", id=2)
        host.send({"type": "consent", "id": 2, "decision": "deny"})
        denied = host.expect("error", id=2, code=Code.NOT_ALLOWED)
        assert timed_out["message"] == denied["message"] == "Permission denied."
        host.send({"type": "consent", "id": 1, "decision": "once"})  # too late: dropped quietly
        host.send({"type": "ping", "seq": 1})
        host.expect("pong", seq=1)
        assert echo_server.accepted == 0
    finally:
        host.kill()


def test_one_prompt_per_tab(host: HostProcess, echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port, tab=1)
    tcp_open(host, 2, echo_server.port, tab=1)
    tcp_open(host, 3, echo_server.port, tab=2)
    assert {host.expect("prompt")["id"], host.expect("prompt")["id"]} == {1, 3}
    with pytest.raises(queue.Empty):
        host.recv(timeout=0.3)  # the second prompt of tab 1 waits
    host.send({"type": "consent", "id": 1, "decision": "once"})
    following = {(m["type"], m["id"]) for m in (host.recv(), host.recv())}
    assert following == {("opened", 1), ("prompt", 2)}  # in either order: connecting is not instant


def test_refused_three_times_then_refused_without_asking(host: HostProcess, echo_server: TcpServer) -> None:
    host.hello()
    for sid in (1, 2, 3):
        tcp_open(host, sid, echo_server.port)
        host.expect("prompt", id=sid)
        host.send({"type": "consent", "id": sid, "decision": "deny"})
        host.expect("error", id=sid, name="NotAllowedError")
    tcp_open(host, 4, echo_server.port)
    host.expect("error", id=4, name="NotAllowedError")  # no prompt: the site is cooling down
    tcp_open(host, 5, echo_server.port, origin="https://other.example")
    host.expect("prompt", id=5)  # other sites are still asked


def test_requests_waiting_in_the_tab_are_refused_once_the_site_cools_down(host: HostProcess, echo_server: TcpServer) -> None:
    host.hello()
    for sid in range(1, 6):
        tcp_open(host, sid, echo_server.port)
    for sid in (1, 2, 3):
        host.expect("prompt", id=sid)
        host.send({"type": "consent", "id": sid, "decision": "deny"})
        host.expect("error", id=sid, name="NotAllowedError")
    assert {host.expect("error")["id"], host.expect("error")["id"]} == {4, 5}  # never shown
    with pytest.raises(queue.Empty):
        host.recv(timeout=0.3)


def test_prompts_raised_and_withdrawn_run_out(host: HostProcess, echo_server: TcpServer) -> None:
    """A page that asks and withdraws at once (40 times, in a few tabs) gets the origin's budget
    of prompts in a minute, then refusals without a prompt."""
    host.hello()
    prompts = 0
    for sid in range(1, 41):
        tcp_open(host, sid, echo_server.port, tab=sid % 4)
        reply = host.recv()
        if reply["type"] == "prompt":
            prompts += 1
            host.send({"type": "release", "id": sid})
            host.expect("prompt_closed", id=sid)
        else:
            assert reply["type"] == "error" and reply["name"] == "NotAllowedError", reply
    assert prompts == 6
    tcp_open(host, 41, echo_server.port, origin="https://other.example", tab=9)
    host.expect("prompt", id=41)  # another site is still asked


def test_release_while_asking_closes_the_prompt(host: HostProcess, echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port)
    tcp_open(host, 2, echo_server.port)
    host.expect("prompt", id=1)
    host.send({"type": "send", "id": 1, "data": "AAAA"})
    host.expect("error", code=Code.OUT_OF_ORDER)  # nothing but release while asking
    host.send({"type": "release", "id": 1})
    host.expect("prompt_closed", id=1)
    host.expect("prompt", id=2)  # the tab's next request is shown
    host.send({"type": "consent", "id": 1, "decision": "once"})  # the answer crossed the release
    host.send({"type": "ping", "seq": 3})
    host.expect("pong", seq=3)


def test_private_window_grants_stay_in_memory(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    host.hello()
    before = user_files(isolated_env)
    tcp_open(host, 1, echo_server.port, incognito=True)
    assert host.expect("prompt", id=1)["offerAlways"] is False
    host.send({"type": "consent", "id": 1, "decision": "always"})
    host.expect("error", code=Code.SCHEMA_VIOLATION)  # "always" is not offered there
    host.send({"type": "consent", "id": 1, "decision": "session"})
    host.expect("opened", id=1)
    tcp_open(host, 2, echo_server.port, incognito=True)
    host.expect("opened", id=2)  # remembered for the private session...
    tcp_open(host, 3, echo_server.port, incognito=False)
    host.expect("prompt", id=3)  # ...but not for normal windows
    assert grants(isolated_env) == []
    store = Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json"
    assert not store.exists()  # nothing was written
    # Nor anywhere else: no file under home, data, config, state or cache is new or changed.
    # The host log records what the host did; it holds no grant in the store's form.
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)
    assert written_since(before, isolated_env) == {}
    log = (Path(isolated_env["XDG_STATE_HOME"]) / "direct-sockets" / "log" / "host.log").read_text()
    assert '"grants"' not in log and '"kind"' not in log


def test_a_private_windows_sites_and_destinations_stay_out_of_the_log(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer, dns) -> None:  # type: ignore[no-untyped-def]
    # Questionnaire 2.14: a private window records nothing, and a log line naming the site and
    # what it reached is as telling as a stored grant.
    dns.records["private-destination.test"] = ["127.0.0.1"]
    dns.records["normal-destination.test"] = ["127.0.0.1"]
    secret_origin = "https://private-site.example"
    host.hello()
    host.send({"type": "tcp_open", "id": 1, "origin": secret_origin, "tabId": 7, "frameId": 0, "incognito": True,
               "remoteAddress": "private-destination.test", "remotePort": echo_server.port, "options": {}})
    host.expect("prompt", id=1)
    host.send({"type": "consent", "id": 1, "decision": "session"})
    host.expect("prompt", id=1)  # the name turned out to be this device: asked again, seeing it
    host.send({"type": "consent", "id": 1, "decision": "session"})
    host.expect("opened", id=1)
    # A socket that fails logs its reason: still without the site or the destination.
    host.send({"type": "tcp_open", "id": 2, "origin": secret_origin, "tabId": 7, "frameId": 0, "incognito": True,
               "remoteAddress": "private-destination.test", "remotePort": free_port(), "options": {}})
    host.expect("prompt", id=2)
    host.send({"type": "consent", "id": 2, "decision": "once"})
    host.expect("prompt", id=2)  # again: the name is on this device
    host.send({"type": "consent", "id": 2, "decision": "once"})
    host.expect("error", id=2, name="NetworkError")
    # The same from a normal window is logged as before, so the log is not simply silent.
    host.send({"type": "tcp_open", "id": 3, "origin": "https://normal-site.example", "tabId": 8, "frameId": 0, "incognito": False,
               "remoteAddress": "normal-destination.test", "remotePort": echo_server.port, "options": {}})
    host.expect("prompt", id=3)
    # The private windows close: the socket still open ends, and its end is logged alike.
    host.send({"type": "private_ended"})
    host.expect("error", id=1, name="NotAllowedError")
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)
    log = (Path(isolated_env["XDG_STATE_HOME"]) / "direct-sockets" / "log" / "host.log").read_text()
    assert "the private windows closed" in log
    assert "normal-site.example" in log and "normal-destination.test" in log
    assert "[private window]" in log  # the private socket's lines are there, without their values
    assert "private-site" not in log and "private-destination" not in log
    stderr = host.stderr.decode(errors="replace")
    assert "private-site" not in stderr and "private-destination" not in stderr


def test_consent_for_a_socket_that_is_not_asking(host: HostProcess) -> None:
    host.hello()
    host.send({"type": "consent", "id": 99, "decision": "once"})
    host.expect("error", code=Code.UNKNOWN_SOCKET)


def test_listening_and_bound_prompts_take_only_ip_corrections(host: HostProcess) -> None:
    host.hello()
    host.send({"type": "tcp_listen", "id": 1, "origin": ORIGIN, "tabId": 1, "frameId": 0, "incognito": False, "localAddress": "127.0.0.1"})
    host.expect("prompt", id=1, kind="tcp-listen", port=0)
    host.send({"type": "consent", "id": 1, "decision": "once", "host": "localhost"})
    host.expect("error", code=Code.SCHEMA_VIOLATION)
    host.send({"type": "consent", "id": 1, "decision": "once", "host": "::1"})
    host.expect("opened", id=1, localAddress="::1")


# -- DNS rebinding, with a resolver the test controls -------------------------------------------


def write_grants(env: dict[str, str], grants: list[dict]) -> None:
    path = Path(env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "grants": grants}))


def test_a_name_granted_for_the_internet_does_not_follow_it_inward(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer, dns) -> None:  # type: ignore[no-untyped-def]
    # Granted "always" while rebind.test resolved to public addresses (as the prompt recorded)...
    write_grants(isolated_env, [{"origin": ORIGIN, "kind": "tcp", "host": "rebind.test", "port": echo_server.port, "scope": "internet"}])
    # ...the name now points at this machine.
    dns.records["rebind.test"] = ["127.0.0.1"]
    host.hello()
    tcp_open(host, 1, echo_server.port, address="rebind.test")
    prompt = host.expect("prompt", id=1)
    assert prompt["addresses"] == ["127.0.0.1"] and prompt["scope"] == "loopback"
    host.send({"type": "consent", "id": 1, "decision": "deny"})
    host.expect("error", id=1, name="NotAllowedError")
    assert echo_server.accepted == 0
    # Allowed now, once: the host connects to the address it showed and checked.
    tcp_open(host, 2, echo_server.port, address="rebind.test")
    host.expect("prompt", id=2)
    dns.records["rebind.test"] = ["127.0.0.2"]  # changes again between the prompt and the answer
    host.send({"type": "consent", "id": 2, "decision": "once"})
    assert host.expect("opened", id=2)["remoteAddress"] == "127.0.0.1"


def test_an_unscoped_grant_for_a_name_follows_it(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer, dns) -> None:  # type: ignore[no-untyped-def]
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp", f"printer.test:{echo_server.port}")  # the user's explicit choice
    dns.records["printer.test"] = ["127.0.0.1"]
    host.hello()
    tcp_open(host, 1, echo_server.port, address="printer.test")
    host.expect("opened", id=1, remoteAddress="127.0.0.1")


# "Always" for a public name is stored with its scope: tests/test_trust.py
# (`test_always_for_a_public_name_is_stored_with_its_scope`, in-process, since the name's
# public address would otherwise be dialled).


def test_consent_scope_is_recorded(tmp_path: Path) -> None:
    from direct_sockets.trust.permissions import Grant, PermissionStore

    store = PermissionStore(tmp_path / "permissions.json")
    store.grant(Grant("https://a.example", "tcp", "far.test", 443, "internet"))
    assert store.matching("https://a.example", "tcp", "far.test", 443)[0].scope == "internet"
    assert json.loads(store.path.read_text())["grants"][0]["scope"] == "internet"


def test_a_burst_of_connection_attempts_is_cut_off(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp", "127.0.0.1:*")
    host.hello()
    for sid in range(1, 201):
        tcp_open(host, sid, echo_server.port)
    outcomes = {"opened": 0, "error": 0}
    for _ in range(200):
        outcomes[host.recv(10)["type"]] += 1
    # 64 at once, then 16 a second: a sweep of 200 ports is cut short.
    assert 64 <= outcomes["opened"] < 100 and outcomes["opened"] + outcomes["error"] == 200


def test_private_grants_end_with_the_private_windows(host: HostProcess, echo_server: TcpServer) -> None:
    """"Allow until private windows close": once the extension says the last one closed, the
    grant is gone (the next private window is asked) and what was open from them is closed."""
    host.hello()
    tcp_open(host, 1, echo_server.port, incognito=True)
    host.expect("prompt", id=1)
    host.send({"type": "consent", "id": 1, "decision": "session"})
    host.expect("opened", id=1)
    tcp_open(host, 2, echo_server.port, incognito=True)
    host.expect("opened", id=2)  # the grant holds while private windows are open
    host.send({"type": "private_ended"})
    ended = [host.recv(timeout=10) for _ in range(2)]
    assert {(m["type"], m["id"], m["name"]) for m in ended} == {("error", 1, "NotAllowedError"), ("error", 2, "NotAllowedError")}
    tcp_open(host, 3, echo_server.port, incognito=True)
    assert host.expect("prompt", id=3)["incognito"] is True  # asked again
    host.send({"type": "private_ended", "extra": 1})
    host.expect("error", code=Code.SCHEMA_VIOLATION)  # a malformed one changes nothing...
    host.send({"type": "ping", "seq": 1})
    host.expect("pong", seq=1)  # ...and the prompt is still there, unanswered


def test_normal_and_private_windows_keep_separate_prompt_budgets(host: HostProcess) -> None:
    """A site spending its prompt budget in a normal window (ask, withdraw, six times) must not
    get its private window refused unasked: a timing bit linking the two (questionnaire 2.14)."""
    host.hello()

    def ask(sid: int, origin: str, incognito: bool, tab: int) -> None:  # never dialled: asked or refused only
        host.send({"type": "tcp_open", "id": sid, "origin": origin, "tabId": tab, "frameId": 0, "incognito": incognito,
                   "remoteAddress": "192.0.2.1", "remotePort": 9, "options": {}})

    # Each way round: the normal window spends, the private one is still asked; and back.
    for base, origin, spender in ((0, "https://tracker.test", False), (100, "https://other.test", True)):
        for sid in range(base + 1, base + 7):
            ask(sid, origin, spender, base + 1)
            host.expect("prompt", id=sid)
            host.send({"type": "release", "id": sid})
            host.expect("prompt_closed", id=sid)
        ask(base + 7, origin, spender, base + 1)
        host.expect("error", id=base + 7, name="NotAllowedError")  # the spender is out of prompts
        ask(base + 8, origin, not spender, base + 2)
        assert host.expect("prompt", id=base + 8)["incognito"] is (not spender)  # the other window is not
