"""The permission store and the `permissions` CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from direct_sockets.trust.destinations import InvalidDestination, normalize_host, normalize_origin, parse_host_port
from direct_sockets.trust.permissions import Grant, PermissionStore, StoreDamaged
from tests.conftest import cli


def store(tmp_path: Path) -> PermissionStore:
    return PermissionStore(tmp_path / "d" / "permissions.json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("https://Example.COM", "https://example.com"), ("https://example.com:443/", "https://example.com"),
     ("http://127.0.0.1:8000", "http://127.0.0.1:8000"), ("http://[::1]:80", "http://[::1]")],
)
def test_origin_normal_form(text: str, expected: str) -> None:
    assert normalize_origin(text) == expected


@pytest.mark.parametrize("text", ["null", "file:///etc", "https://a.example/path", "example.com", "https://user@a.example", "ftp://a.example"])
def test_bad_origins(text: str) -> None:
    with pytest.raises(InvalidDestination):
        normalize_origin(text)


def test_host_and_port_forms() -> None:
    assert parse_host_port("Printer.Local.:631") == ("printer.local", 631)
    assert parse_host_port("[::0001]:*") == ("::1", "*")
    assert normalize_host("0:0:0:0:0:0:0:1") == "::1"
    for bad in ["::1:80", "host", "host:0", "host:65536", "*:80", "a b:1", "host:*x"]:
        with pytest.raises(InvalidDestination):
            parse_host_port(bad)


def test_grant_match_is_exact(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.grant(Grant("https://app.example", "tcp", "printer.local", 631))
    s.grant(Grant("https://app.example", "tcp", "127.0.0.1", "*"))
    assert s.allows("https://app.example", "tcp", "PRINTER.local", 631)
    assert not s.allows("https://app.example", "tcp", "printer.local", 632)
    assert not s.allows("https://other.example", "tcp", "printer.local", 631)
    assert not s.allows("http://app.example", "tcp", "printer.local", 631)
    assert not s.allows("https://app.example", "udp", "printer.local", 631)
    assert s.allows("https://app.example", "tcp", "127.0.0.1", 9)
    assert not s.allows("https://app.example", "tcp", "127.0.0.2", 9)
    assert not s.allows("null", "tcp", "127.0.0.1", 9)


def test_store_file_is_private_and_atomic(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.grant(Grant("https://app.example", "tcp", "h.example", 1))
    mode = stat.S_IMODE(s.path.stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in s.path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert json.loads(s.path.read_text())["grants"] == [{"origin": "https://app.example", "kind": "tcp", "host": "h.example", "port": 1}]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 2, "grants": []}', b'{"version": 1, "grants": [{"origin": "https://a.example", "kind": "tcp", "host": "*", "port": 1}]}',
     b'{"version": 1, "grants": [{"origin": "nope", "kind": "tcp", "host": "h", "port": 1}]}', b"\xff\xfe"],
    ids=["json", "array", "version", "wildcard-host", "bad-origin", "utf8"],
)
def test_damaged_store_fails_closed_and_is_kept_aside(tmp_path: Path, content: bytes) -> None:
    s = store(tmp_path)
    s.path.parent.mkdir(parents=True)
    s.path.write_bytes(content)
    with pytest.raises(StoreDamaged):
        s.load()
    assert not s.allows("https://a.example", "tcp", "h", 1)
    assert s.path.read_bytes() == content  # reading never touches it
    with pytest.raises(StoreDamaged):
        s.revoke("https://a.example")
    aside = s.grant(Grant("https://a.example", "tcp", "h.example", 1))
    assert aside is not None and aside.read_bytes() == content  # kept, not overwritten
    assert s.allows("https://a.example", "tcp", "h.example", 1)


def test_store_changes_are_seen_without_restart(tmp_path: Path) -> None:
    s = store(tmp_path)
    other = PermissionStore(s.path)
    assert not s.allows("https://a.example", "tcp", "h.example", 1)
    other.grant(Grant("https://a.example", "tcp", "h.example", 1))
    assert s.allows("https://a.example", "tcp", "h.example", 1)
    other.revoke("https://a.example", "tcp", "h.example", 1)
    assert not s.allows("https://a.example", "tcp", "h.example", 1)


def test_cli_grant_list_revoke(isolated_env: dict[str, str]) -> None:
    out = cli(isolated_env, "permissions", "grant", "--origin", "https://App.example/", "--tcp", "[::1]:*").stdout
    assert out.strip() == "granted https://app.example tcp [::1]:*"
    cli(isolated_env, "permissions", "grant", "--origin", "https://app.example", "--tcp", "db.example:5432")
    listed = json.loads(cli(isolated_env, "permissions", "list", "--json").stdout)
    assert listed == [{"origin": "https://app.example", "kind": "tcp", "host": "::1", "port": "*"},
                      {"origin": "https://app.example", "kind": "tcp", "host": "db.example", "port": 5432}]
    path = Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json"
    assert path.exists()
    cli(isolated_env, "permissions", "revoke", "--origin", "https://app.example", "--tcp", "db.example:5432")
    assert "db.example" not in cli(isolated_env, "permissions", "list").stdout
    cli(isolated_env, "permissions", "revoke", "--origin", "https://app.example")
    assert cli(isolated_env, "permissions", "list").stdout.strip() == "no grants"
    missing = cli(isolated_env, "permissions", "revoke", "--origin", "https://app.example", check=False)
    assert missing.returncode == 1


@pytest.mark.parametrize(
    "args",
    [["--origin", "https://a.example", "--tcp", "*:80"], ["--origin", "https://a.example", "--tcp", "h:0"],
     ["--origin", "null", "--tcp", "h:1"], ["--origin", "https://a.example"]],
    ids=["wildcard-host", "port-zero", "opaque-origin", "no-destination"],
)
def test_cli_refuses_bad_grants(isolated_env: dict[str, str], args: list[str]) -> None:
    result = cli(isolated_env, "permissions", "grant", *args, check=False)
    assert result.returncode == 2 and result.stderr.startswith("direct-sockets:")
    assert "Traceback" not in result.stderr


def test_cli_reports_damaged_store(isolated_env: dict[str, str]) -> None:
    path = Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json"
    path.parent.mkdir(parents=True)
    path.write_text("garbage")
    listed = cli(isolated_env, "permissions", "list", check=False)
    assert listed.returncode == 3 and "damaged" in listed.stderr
    granted = cli(isolated_env, "permissions", "grant", "--origin", "https://a.example", "--tcp", "h.example:1")
    assert "kept as" in granted.stderr
    assert [p.read_text() for p in path.parent.glob("permissions.json.damaged-*")] == ["garbage"]


def test_no_allow_everything_switch() -> None:
    """Deny by default has no way around it: no catch-all flag, no variable the host honours."""
    import re

    from direct_sockets.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["permissions"]  # type: ignore[union-attr]
    grant = sub._subparsers._group_actions[0].choices["grant"]  # type: ignore[union-attr]
    flags = sorted(opt for action in grant._actions for opt in action.option_strings)
    assert flags == sorted(["-h", "--help", "--origin", "--tcp", "--udp", "--udp-bind", "--tcp-listen", "--multicast"])
    sources = "".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "host").rglob("*.py"))
    read = set(re.findall(r"(?:environ|env)(?:\.get)?\(?\[?\s*\"([A-Z_]+)\"", sources))
    # Logging, the prompt's timeout, and where installs go (which browsers are found, and where
    # their Flatpak and Snap trees are): none of them widens what a page may reach.
    # XDG_CONFIG_DIRS only adds places to read a policy from: /etc/xdg is always read and the
    # strictest rule wins, and a grant there is no more than the user could store themselves.
    assert read == {
        "DIRECT_SOCKETS_LOG", "DIRECT_SOCKETS_PROMPT_TIMEOUT", "CHROME_CONFIG_HOME", "XDG_CONFIG_HOME", "PATH", "PROGRAMDATA",
        "DIRECT_SOCKETS_FLATPAK_ROOT", "DIRECT_SOCKETS_SNAP_ROOT", "XDG_CONFIG_DIRS",
    }, read


def test_options_page_messages_list_and_revoke(host, isolated_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    cli(isolated_env, "permissions", "grant", "--origin", "https://a.example", "--tcp", "h.example:1")
    cli(isolated_env, "permissions", "grant", "--origin", "https://a.example", "--udp", "h.example:2")
    cli(isolated_env, "permissions", "grant", "--origin", "https://b.example", "--multicast", "239.1.1.1")
    host.hello()
    host.send({"type": "grants_list", "req": 1})
    listed = host.expect("grants", req=1, damaged=False)["grants"]
    assert len(listed) == 3
    host.send({"type": "grants_revoke", "req": 2, "origin": "https://a.example", "kind": "udp", "host": "h.example", "port": 2})
    after = host.expect("grants", req=2)["grants"]
    assert [(g["origin"], g["kind"]) for g in after] == [("https://a.example", "tcp"), ("https://b.example", "multicast")]
    host.send({"type": "grants_revoke", "req": 3, "origin": "https://A.example/"})
    left = host.expect("grants", req=3)["grants"]
    assert left == [{"origin": "https://b.example", "kind": "multicast", "host": "239.1.1.1", "port": "*"}]
    path = Path(isolated_env["XDG_DATA_HOME"]) / "direct-sockets" / "permissions.json"
    path.write_text("damaged")
    host.send({"type": "grants_list", "req": 4})
    assert host.expect("grants", req=4) == {"type": "grants", "req": 4, "grants": [], "damaged": True}
