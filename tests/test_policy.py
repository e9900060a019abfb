"""The administrator's policy: it wins over the user, and a damaged one turns the API off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from direct_sockets.trust.policy import PolicyDamaged, PolicyFile, parse
from tests.conftest import cli
from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer

ORIGIN = "http://127.0.0.1:8000"


def write_policy(env: dict[str, str], policy: object | str) -> Path:
    path = Path(env["XDG_CONFIG_DIRS"]) / "direct-sockets" / "policy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy))
    return path


def verdict(policy: PolicyFile, origin: str, kind: str, host: str, port: int) -> str | None:
    """What the files in force say of a destination ('block', 'grant', or None: the user
    decides); `origin` and `host` as written here are already normalized."""
    current = policy.current()
    if current is None:
        return None
    if current.blocks(origin, kind, host, port):
        return "block"
    return "grant" if current.grants(origin, kind, host, port) else None


def tcp_open(host: HostProcess, sid: int, port: int, address: str = "127.0.0.1", origin: str = ORIGIN) -> None:
    host.send({"type": "tcp_open", "id": sid, "origin": origin, "tabId": 1, "frameId": 0, "incognito": False,
               "remoteAddress": address, "remotePort": port, "options": {}})



def test_rules_match_as_written() -> None:
    policy = parse(json.dumps({"version": 1, "block": [{"host": "10.0.0.0/8"}, {"origin": "https://bad.example"}, {"kind": "tcp-listen", "port": 40000}],
                               "grant": [{"origin": "https://ok.example", "kind": "tcp", "host": "Printer.Local", "port": 631}]}).encode())
    block = policy.block
    assert block[0].matches("https://a.example", "tcp", "10.1.2.3", 1) and not block[0].matches("https://a.example", "tcp", "11.0.0.1", 1)
    assert not block[0].matches("https://a.example", "tcp", "ten.example", 1)  # networks match addresses only
    assert block[1].matches("https://bad.example", "udp", "x.example", 9)
    assert block[2].matches("https://a.example", "tcp-listen", "127.0.0.1", 40000) and not block[2].matches("https://a.example", "tcp", "127.0.0.1", 40000)
    assert policy.grant[0].matches("https://ok.example", "tcp", "printer.local", 631)


@pytest.mark.parametrize(
    "text",
    ["{", "[]", '{"version": 2}', '{"version": 1, "grant": [{"origin": "https://a.example", "kind": "tcp", "host": "*", "port": 1}]}',
     '{"version": 1, "block": [{"host": "h", "extra": 1}]}', '{"version": 1, "grant": [{"origin": "nope", "kind": "tcp", "host": "h", "port": 1}]}'],
    ids=["json", "array", "version", "wildcard-grant", "unknown-field", "bad-origin"],
)
def test_damaged_policy_is_refused(text: str) -> None:
    with pytest.raises(PolicyDamaged):
        parse(text.encode())


def test_damaged_policy_file_turns_the_api_off(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    policy = PolicyFile(path)
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) is None  # no file: the user decides
    path.write_text("{ not json")
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) == "block"
    path.write_text(json.dumps({"version": 1}))
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) is None  # fixed: back to normal


def test_disabled_refuses_even_what_the_user_granted(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp", f"127.0.0.1:{echo_server.port}")
    write_policy(isolated_env, {"version": 1, "disabled": True})
    host.hello()
    tcp_open(host, 1, echo_server.port)
    host.expect("error", id=1, name="NotAllowedError")  # no prompt either
    assert echo_server.accepted == 0


def test_block_wins_over_a_user_grant_and_is_never_asked(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp", "127.0.0.1:*")
    write_policy(isolated_env, {"version": 1, "block": [{"host": "127.0.0.0/8", "port": echo_server.port}]})
    host.hello()
    tcp_open(host, 1, echo_server.port)
    host.expect("error", id=1, name="NotAllowedError")
    tcp_open(host, 2, echo_server.port, address="localhost")  # a name is judged by what it resolves to
    host.expect("error", id=2, name="NotAllowedError")
    assert echo_server.accepted == 0


def test_policy_grant_allows_without_asking(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    write_policy(isolated_env, {"version": 1, "grant": [{"origin": ORIGIN, "kind": "tcp", "host": "127.0.0.1", "port": echo_server.port}]})
    host.hello()
    tcp_open(host, 1, echo_server.port)
    host.expect("opened", id=1)
    assert json.loads(cli(isolated_env, "permissions", "list", "--json").stdout) == []  # nothing written for the user


def test_damaged_policy_refuses_everything_until_fixed(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    cli(isolated_env, "permissions", "grant", "--origin", ORIGIN, "--tcp", "127.0.0.1:*")
    path = write_policy(isolated_env, '{"version": 1, "block": [{"host": "10.0.0.0/8",}]}')  # a stray comma
    host.hello()
    tcp_open(host, 1, echo_server.port)
    host.expect("error", id=1, name="NotAllowedError")
    assert b"damaged" in host.stderr
    path.write_text(json.dumps({"version": 1}))
    tcp_open(host, 2, echo_server.port)
    host.expect("opened", id=2)


def test_opaque_origins_are_never_asked(host: HostProcess, echo_server: TcpServer) -> None:
    host.hello()
    tcp_open(host, 1, echo_server.port, origin="null")
    host.expect("error", id=1, name="NotAllowedError")


def test_every_config_dir_is_read_the_policy_in_the_second_is_not_ignored(isolated_env: dict[str, str], chromium_manifest: Path,
                                                                        echo_server: TcpServer, tmp_path: Path) -> None:
    """Ubuntu puts /etc/xdg/xdg-ubuntu first in XDG_CONFIG_DIRS: a policy in the next folder
    must still be in force (the real host process, its environment as a session gives it)."""
    from direct_sockets.install.installer import extension_ids

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    env = {**isolated_env, "XDG_CONFIG_DIRS": f"{first}:{second}"}
    cli(env, "permissions", "grant", "--origin", ORIGIN, "--tcp", f"127.0.0.1:{echo_server.port}")
    (second / "direct-sockets").mkdir(parents=True)
    (second / "direct-sockets" / "policy.json").write_text(json.dumps({"version": 1, "block": [{"host": "127.0.0.0/8"}]}))
    host = HostProcess(chromium_manifest, f"chrome-extension://{extension_ids().chrome}/", env)
    try:
        host.hello()
        tcp_open(host, 1, echo_server.port)
        host.expect("error", id=1, name="NotAllowedError")
        assert echo_server.accepted == 0
    finally:
        host.kill()


def test_several_policy_files_merge_strictest_first(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    policy = PolicyFile([first, second])
    first.write_text(json.dumps({"version": 1, "grant": [{"origin": ORIGIN, "kind": "tcp", "host": "h.example", "port": 1}]}))
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) == "grant"
    second.write_text(json.dumps({"version": 1, "block": [{"host": "h.example"}]}))
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) == "block"  # a block anywhere beats a grant anywhere
    second.write_text(json.dumps({"version": 1, "disabled": True}))
    assert verdict(policy, ORIGIN, "tcp", "other.example", 2) == "block"
    second.write_text("{ damaged")
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) == "block"  # a damaged one turns the API off
    assert policy.existing() == [first, second]
    second.unlink()
    assert verdict(policy, ORIGIN, "tcp", "h.example", 1) == "grant"
