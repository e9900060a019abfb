"""The decision core (`decision.py`) in-process: every path, table-driven, and a `hypothesis`
state machine whose invariant is the security model itself.

No I/O here: the core gets the policy, the grants and the DNS answers as values. The host-level
tests of the same promises are in test_trust.py.
"""

from __future__ import annotations

import ipaddress
import json
import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from direct_sockets.trust.decision import (
    UNKNOWN, Allow, Ask, Consent, Facts, Refuse, Request, Resolve, address_scope, decide, most_sensitive, peer_blocked, trustworthy_origin,
)
from direct_sockets.trust.destinations import InvalidDestination, normalize_host
from direct_sockets.trust.permissions import Grant
from direct_sockets.trust.policy import Policy, parse

O = "https://app.example"


def policy(**document: object) -> Policy:
    return parse(json.dumps({"version": 1, **document}).encode())


LOOPBACK_BLOCKED = policy(block=[{"host": "127.0.0.0/8"}, {"host": "::1/128"}])


def req(kind: str = "tcp", host: str = "127.0.0.1", port: int = 7, **fields: object) -> Request:
    return Request(fields.pop("origin", O), fields.pop("incognito", False), kind, host, port, **fields)  # type: ignore[arg-type]


# -- who may ask at all -------------------------------------------------------------------------


@pytest.mark.parametrize("origin, trusted", [
    ("https://app.example", True), ("https://app.example:8443", True), ("http://localhost:8000", True),
    ("http://printer.localhost", True), ("http://127.0.0.1:8000", True), ("http://127.9.9.9", True), ("http://[::1]:80", True),
    ("http://app.example", False), ("http://192.168.1.5", False), ("http://[::ffff:10.0.0.1]", False), ("file:///etc/passwd", False),
    ("null", False), ("", False), ("ftp://app.example", False), ("https://", False), ("data:text/html,x", False),
    ("http://localhost.evil.example", False),
])
def test_only_potentially_trustworthy_origins_are_served(origin: str, trusted: bool) -> None:
    assert (trustworthy_origin(origin) is not None) is trusted
    grant = Grant(trustworthy_origin(origin) or "https://x.example", "tcp", "127.0.0.1", 7)
    decision = decide(req(origin=origin), Facts(None, (grant,)))
    assert isinstance(decision, Allow) is trusted  # granted, yet refused when not trustworthy
    if not trusted:
        assert isinstance(decision, Refuse)


# -- every decision path, table-driven ------------------------------------------------------------

LITERAL_GRANT = Grant(O, "tcp", "127.0.0.1", 7)
NAME_INTERNET = Grant(O, "tcp", "far.test", 7, "internet")
NAME_LOCAL = Grant(O, "tcp", "far.test", 7, "local")
NAME_ANY = Grant(O, "tcp", "far.test", 7)
PUBLIC, PRIVATE, DOC = "93.184.216.34", "192.168.1.20", "192.0.2.1"

CASES = [
    # (id, request, facts, expected decision)
    ("literal, no grant: ask with its scope at once", req(), Facts(), Ask("127.0.0.1", ("127.0.0.1",), "loopback")),
    ("literal, granted", req(), Facts(None, (LITERAL_GRANT,)), Allow(("127.0.0.1",), "loopback")),
    ("literal, other port not covered", req(port=8), Facts(None, (LITERAL_GRANT,)), Ask("127.0.0.1", ("127.0.0.1",), "loopback")),
    ("mapped spelling is its IPv4 address", req(host="::ffff:7f00:1"), Facts(None, (LITERAL_GRANT,)), Allow(("127.0.0.1",), "loopback")),
    ("0.0.0.0 is this device", req(host="0.0.0.0"), Facts(), Ask("0.0.0.0", ("0.0.0.0",), "loopback")),
    (":: is this device", req(host="::"), Facts(), Ask("::", ("::",), "loopback")),
    ("literal, answered", req(consent=Consent("loopback")), Facts(), Allow(("127.0.0.1",), "loopback")),
    ("name, not looked up, no grant: ask before any lookup", req(host="far.test"), Facts(), Ask("far.test", (), UNKNOWN)),
    ("name, granted: look it up", req(host="far.test"), Facts(None, (NAME_INTERNET,)), Resolve("far.test")),
    ("name, answered: look it up", req(host="far.test", consent=Consent(UNKNOWN)), Facts(), Resolve("far.test")),
    ("name, policy grant: look it up", req(host="far.test"), Facts(policy(grant=[{"origin": O, "kind": "tcp", "host": "far.test", "port": 7}])), Resolve("far.test")),
    ("name granted on the internet, still there", req(host="far.test", addresses=(PUBLIC,)), Facts(None, (NAME_INTERNET,)), Allow((PUBLIC,), "internet")),
    ("name granted on the internet, rebound inward", req(host="far.test", addresses=("127.0.0.1",)), Facts(None, (NAME_INTERNET,)), Ask("far.test", ("127.0.0.1",), "loopback")),
    ("mixed answer: the most sensitive scope is shown", req(host="far.test", addresses=(PUBLIC, "127.0.0.1")), Facts(None, (NAME_INTERNET,)), Ask("far.test", (PUBLIC, "127.0.0.1"), "loopback")),
    ("mixed answer, local grant", req(host="far.test", addresses=(PRIVATE, "::ffff:127.0.0.1")), Facts(None, (NAME_LOCAL,)), Ask("far.test", (PRIVATE, "127.0.0.1"), "loopback")),
    ("local grant covers the internet too", req(host="far.test", addresses=(PRIVATE, PUBLIC)), Facts(None, (NAME_LOCAL,)), Allow((PRIVATE, PUBLIC), "local")),
    ("unscoped name grant follows the name", req(host="far.test", addresses=("127.0.0.1",)), Facts(None, (NAME_ANY,)), Allow(("127.0.0.1",), "loopback")),
    ("answer about an unresolved name covers the internet", req(host="far.test", addresses=(PUBLIC,), consent=Consent(UNKNOWN)), Facts(), Allow((PUBLIC,), "internet")),
    ("...and asks again for this device", req(host="far.test", addresses=(PUBLIC, "127.0.0.1"), consent=Consent(UNKNOWN)), Facts(), Ask("far.test", (PUBLIC, "127.0.0.1"), "loopback")),
    ("answer seen at loopback covers it", req(host="far.test", addresses=(PUBLIC, "127.0.0.1"), consent=Consent("loopback")), Facts(), Allow((PUBLIC, "127.0.0.1"), "loopback")),
    ("answer seen at local does not cover loopback", req(host="far.test", addresses=(PRIVATE, "127.0.0.1"), consent=Consent("local")), Facts(), Ask("far.test", (PRIVATE, "127.0.0.1"), "loopback")),
    ("localhost is this device without a lookup", req(host="LOCALHOST."), Facts(), Ask("localhost", ("127.0.0.1", "::1"), "loopback")),
    ("localhost, IPv4 only", req(host="a.localhost", ip_version=4), Facts(), Ask("a.localhost", ("127.0.0.1",), "loopback")),
    ("documentation address is not the internet", req(host=DOC), Facts(), Ask(DOC, (DOC,), "local")),
    ("policy blocks a literal in every spelling", req(host="::ffff:127.0.0.1"), Facts(LOOPBACK_BLOCKED, (LITERAL_GRANT,)), Refuse),
    ("policy blocks 0.0.0.0", req(host="0.0.0.0", consent=Consent("loopback")), Facts(LOOPBACK_BLOCKED), Refuse),
    ("policy blocks ::", req(host="::", consent=Consent("loopback")), Facts(LOOPBACK_BLOCKED), Refuse),
    ("policy blocks ::7f00:1 (compatible)", req(host="::7f00:1", consent=Consent("loopback")), Facts(LOOPBACK_BLOCKED), Refuse),
    ("policy blocks an address of a granted name", req(host="far.test", addresses=(PUBLIC, "127.0.0.1")), Facts(LOOPBACK_BLOCKED, (NAME_ANY,)), Refuse),
    ("policy blocks a name in another spelling", req(host="ＦＡＲ.test\u200b."), Facts(policy(block=[{"host": "far.test"}]), (NAME_ANY,)), Refuse),
    ("policy name block: refused before any lookup", req(host="far.test"), Facts(policy(block=[{"host": "far.test"}])), Refuse),
    ("policy off", req(), Facts(policy(disabled=True), (LITERAL_GRANT,)), Refuse),
    ("policy grant by name does not follow it onto this device", req(host="partner.test", addresses=("127.0.0.1",)), Facts(policy(grant=[{"origin": O, "kind": "tcp", "host": "partner.test", "port": 7}])), Ask("partner.test", ("127.0.0.1",), "loopback")),
    ("policy grant by name follows it on the network", req(host="partner.test", addresses=(PRIVATE, PUBLIC)), Facts(policy(grant=[{"origin": O, "kind": "tcp", "host": "partner.test", "port": 7}])), Allow((PRIVATE, PUBLIC), "local")),
    ("policy grant of localhost covers this device", req(host="localhost", addresses=("127.0.0.1",)), Facts(policy(grant=[{"origin": O, "kind": "tcp", "host": "localhost", "port": 7}])), Allow(("127.0.0.1",), "loopback")),
    ("policy grant by address", req(host="far.test", addresses=("127.0.0.1",)), Facts(policy(grant=[{"origin": O, "kind": "tcp", "host": "127.0.0.1", "port": 7}]), (NAME_INTERNET,)), Allow(("127.0.0.1",), "loopback")),
    ("a host that is no host", req(host="a b"), Facts(), Refuse),
    ("bound send uses udp grants", req("udp-send", "127.0.0.1"), Facts(None, (Grant(O, "udp", "127.0.0.1", 7),)), Allow(("127.0.0.1",), "loopback")),
    ("bound send: tcp grant is not enough", req("udp-send", "127.0.0.1"), Facts(None, (LITERAL_GRANT,)), Ask("127.0.0.1", ("127.0.0.1",), "loopback")),
    ("bound send: policy on udp", req("udp-send", "::ffff:127.0.0.1"), Facts(LOOPBACK_BLOCKED, (Grant(O, "udp", "127.0.0.1", 7),)), Refuse),
    ("bind needs an address", req("udp-bind", "localhost", 0), Facts(), Refuse),
    ("bind 0.0.0.0 with loopback blocked", req("udp-bind", "0.0.0.0", 0, consent=Consent("loopback")), Facts(LOOPBACK_BLOCKED), Refuse),
    ("listen on mapped loopback with loopback blocked", req("tcp-listen", "::ffff:127.0.0.1", 40000, consent=Consent("loopback")), Facts(LOOPBACK_BLOCKED), Refuse),
    ("bind, granted *", req("udp-bind", "0.0.0.0", 0), Facts(None, (Grant(O, "udp-bind", "0.0.0.0", "*"),)), Allow(("0.0.0.0",), "local")),
    ("multicast, ask", req("multicast", "239.1.1.1", 0), Facts(), Ask("239.1.1.1", ("239.1.1.1",), "local")),
    ("multicast, granted", req("multicast", "239.1.1.1", 0), Facts(None, (Grant(O, "multicast", "239.1.1.1", "*"),)), Allow(("239.1.1.1",), "local")),
    ("start-tls on the checked address", req("start-tls", "far.test", addresses=(PUBLIC,)), Facts(), Allow((PUBLIC,), "internet")),
    ("start-tls, policy now blocks it", req("start-tls", "far.test", addresses=("127.0.0.1",)), Facts(LOOPBACK_BLOCKED), Refuse),
    ("start-tls without a connection", req("start-tls", "far.test"), Facts(), Refuse),
    ("certificate, pinned by a grant", req("certificate", "dev.test", addresses=(PRIVATE,), pin="P"), Facts(None, (Grant(O, "certificate", "dev.test", 7, "", "P"),)), Allow((PRIVATE,), "local", pin="P")),
    ("certificate, another key", req("certificate", "dev.test", addresses=(PRIVATE,), pin="Q"), Facts(None, (Grant(O, "certificate", "dev.test", 7, "", "P"),)), Ask("dev.test", (PRIVATE,), "local")),
    ("certificate, answered always", req("certificate", "dev.test", addresses=(PRIVATE,), pin="Q", consent=Consent("local", "always")), Facts(),
     Allow((PRIVATE,), "local", Grant(O, "certificate", "dev.test", 7, "", "Q"), "always", "Q")),
    ("always for a name keeps the scope seen", req(host="far.test", addresses=(PUBLIC,), consent=Consent(UNKNOWN, "always")), Facts(),
     Allow((PUBLIC,), "internet", Grant(O, "tcp", "far.test", 7, "internet"), "always")),
    ("always for a literal has no scope", req(consent=Consent("loopback", "always")), Facts(), Allow(("127.0.0.1",), "loopback", Grant(O, "tcp", "127.0.0.1", 7), "always")),
    ("session in a private window", req(incognito=True, consent=Consent("loopback", "session")), Facts(), Allow(("127.0.0.1",), "loopback", Grant(O, "tcp", "127.0.0.1", 7), "session")),
    ("a policy grant for 127.0.0.1 is not one for 0.0.0.0", req(host="0.0.0.0"), Facts(policy(grant=[{"origin": O, "kind": "tcp", "host": "127.0.0.1", "port": 7}])), Ask("0.0.0.0", ("0.0.0.0",), "loopback")),
    ("a user grant for 127.0.0.1 is not one for 0.0.0.0", req(host="0.0.0.0"), Facts(None, (LITERAL_GRANT,)), Ask("0.0.0.0", ("0.0.0.0",), "loopback")),
    ("another origin's grant covers nothing", req(), Facts(None, (Grant("https://b.example", "tcp", "127.0.0.1", 7),)), Ask("127.0.0.1", ("127.0.0.1",), "loopback")),
    ("no address at all", req(host="far.test", addresses=()), Facts(None, (NAME_ANY,)), Refuse),
]


@pytest.mark.parametrize("request_, facts, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_decision_path(request_: Request, facts: Facts, expected: object) -> None:
    decision = decide(request_, facts)
    if expected is Refuse:
        assert isinstance(decision, Refuse), decision
    else:
        assert decision == expected


# -- the pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["ｂｌｏｃｋｅｄ.test", "blocked.test\u200b", "BLOCKED.TEST.", "Blocked.Test", "blocked\u3002test", "b\u00adlocked.test"])
def test_other_spellings_of_a_name_are_that_name(spelling: str) -> None:
    assert normalize_host(spelling) == "blocked.test"  # finding 11


@pytest.mark.parametrize("spelling, address", [
    ("::ffff:127.0.0.1", "127.0.0.1"), ("::ffff:7f00:1", "127.0.0.1"), ("[::ffff:127.0.0.1]", "127.0.0.1"), ("::7f00:1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("１２７.０.０.１", "127.0.0.1"), ("::", "::"), ("::1", "::1"),
])
def test_other_spellings_of_an_address_are_that_address(spelling: str, address: str) -> None:
    assert normalize_host(spelling) == address  # finding 3


@pytest.mark.parametrize("bad", ["", "a..b", "a b", "-a.test", "x" * 64 + ".test", "999.1", "a/b", "a@b", "*"])
def test_what_is_no_host(bad: str) -> None:
    with pytest.raises(InvalidDestination):
        normalize_host(bad)


@pytest.mark.parametrize("spelling", ["127.0.0.1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::7f00:1", "0.0.0.0", "::", "::1"])
def test_a_policy_rule_sees_every_spelling_of_an_address(spelling: str) -> None:
    # The rule itself, given a spelling nothing normalized: the policy must not rely on its callers.
    rules = LOOPBACK_BLOCKED.block
    assert any(r.matches(O, "tcp", spelling, 7) for r in rules)
    assert LOOPBACK_BLOCKED.blocks(O, "udp-bind", spelling, 0)
    assert not any(r.matches(O, "tcp", a, 7) for r in rules for a in ("10.0.0.1", "::ffff:10.0.0.1", "fe80::1"))


def test_scopes() -> None:
    assert [address_scope(a) for a in ("127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1")] == ["loopback"] * 5
    assert [address_scope(a) for a in ("10.0.0.1", "fe80::1%lo", "fd00::1", "239.1.1.1", "192.0.2.1", "100.64.0.1")] == ["local"] * 6
    assert address_scope(PUBLIC) == "internet" and address_scope("2606:2800:220:1::1") == "internet"
    assert most_sensitive([PUBLIC, PRIVATE]) == "local" and most_sensitive([PRIVATE, PUBLIC, "::1"]) == "loopback"
    assert most_sensitive([]) == UNKNOWN
    # Listening or binding on every interface is reachable from the network; connecting there is this device.
    assert [address_scope(a, k) for a in ("0.0.0.0", "::", "::ffff:0.0.0.0") for k in ("tcp-listen", "udp-bind")] == ["local"] * 6
    assert [address_scope(a, k) for a in ("0.0.0.0", "::") for k in ("tcp", "udp", "udp-send")] == ["loopback"] * 6
    assert address_scope("127.0.0.1", "tcp-listen") == "loopback"
    # Translated IPv6 (NAT64, SIIT) is judged as the IPv4 address a translator sends it to;
    # local-use NAT64 and site-local as the local network (Python calls all of them global).
    assert [address_scope(a) for a in ("64:ff9b::c0a8:101", "::ffff:0:c0a8:101", "64:ff9b:1::c0a8:101", "fec0::1")] == ["local"] * 4
    assert address_scope("64:ff9b::7f00:1") == "loopback" and address_scope("64:ff9b::5db8:d822") == "internet"


def test_a_block_on_an_ipv4_network_holds_for_its_translated_spellings() -> None:
    blocks = policy(block=[{"host": "192.168.0.0/16"}])
    assert blocks.blocks(O, "tcp", "64:ff9b::c0a8:101", 7) and blocks.blocks(O, "tcp", "::ffff:0:c0a8:101", 7)
    assert not blocks.blocks(O, "tcp", "64:ff9b::a00:1", 7)
    granted = decide(req(host="far.test", addresses=("64:ff9b::c0a8:101",)), Facts(None, (NAME_INTERNET,)))
    assert isinstance(granted, Ask) and granted.scope == "local"  # an internet grant does not follow it there


def test_peers_coming_in_meet_the_blocks_for_exchanging_data_with_them() -> None:
    blocks = policy(block=[{"host": "10.0.0.0/8"}, {"kind": "udp", "host": "192.168.0.0/16"}, {"kind": "tcp", "host": "fd00::/8"}])
    assert peer_blocked(blocks, O, "tcp-listen", "10.1.2.3", 5000) and peer_blocked(blocks, O, "udp-bind", "::ffff:10.1.2.3", 5000)
    assert peer_blocked(blocks, O, "udp-bind", "192.168.1.1", 53) and not peer_blocked(blocks, O, "tcp-listen", "192.168.1.1", 53)
    assert peer_blocked(blocks, O, "tcp-listen", "fd00::1%lo", 1) and not peer_blocked(blocks, O, "udp-bind", "fd00::1", 1)
    assert not peer_blocked(blocks, O, "tcp-listen", "127.0.0.1", 1) and not peer_blocked(None, O, "udp-bind", "10.1.2.3", 1)
    assert peer_blocked(policy(disabled=True), O, "tcp-listen", "127.0.0.1", 1)  # a disabling or damaged policy keeps everyone out


# -- the state machine ---------------------------------------------------------------------------
#
# The invariant, written from the security model and not from the code: whatever happens, the
# core allows an address only if the origin is potentially trustworthy, no block rule reaches
# that address (in any form it takes on the wire), and a policy grant, a user grant whose scope
# reaches it, or the user's answer to a prompt that showed a scope at least as sensitive
# covers it; every Allow names only addresses the DNS (or the literal) gave; every prompt for
# resolved addresses shows the most sensitive of them.

ORIGINS = ["https://a.example", "http://127.0.0.1:8000", "http://b.example", "null"]
NAMES = ["far.test", "printer.test", "localhost"]
LITERALS = ["127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "10.0.0.5", PUBLIC, "192.0.2.9", "fe80::1", "239.1.1.1"]
ADDRESSES = ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.5", "192.168.1.20", PUBLIC, "8.8.8.8", "2606:2800:220:1::1", "0.0.0.0"]
NETWORKS = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "93.184.216.0/24", "0.0.0.0/32", "::ffff:0:0/96"]
KINDS = ["tcp", "udp", "udp-send", "udp-bind", "tcp-listen", "multicast"]
PORTS = [7, 7, 7, 0, 8]  # mostly the one port, so that grants and requests meet


def on_the_wire(address: str, reach: bool = True) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Where a packet to `address` can end up, by the RFCs rather than by our code (with
    `reach` False: only the other spellings of the address itself, as a rule names it)."""
    a = ipaddress.ip_address(address.split("%")[0])
    out: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = {a}
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        out.add(a.ipv4_mapped)
    if isinstance(a, ipaddress.IPv6Address) and 1 < int(a) < 2**32:
        out.add(ipaddress.IPv4Address(int(a)))
    if a.is_unspecified and reach:
        out |= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    return out


SENS = {"internet": 0, "local": 1, "loopback": 2}


def true_scope(address: str, kind: str = "") -> str:
    if kind in ("udp-bind", "tcp-listen") and ipaddress.ip_address(address.split("%")[0]).is_unspecified:
        return "local"  # listening there: every interface, so whoever reaches this device on the network
    forms = on_the_wire(address)
    if any(f.is_loopback for f in forms):
        return "loopback"
    if all(f.is_global and not f.is_multicast for f in forms):
        return "internet"
    return "local"


class DecisionMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.block: list[dict[str, object]] = []
        self.policy_grants: list[dict[str, object]] = []
        self.disabled = False
        self.grants: list[Grant] = []
        self.private: list[Grant] = []
        self.dns: dict[str, tuple[str, ...]] = {n: (PUBLIC,) for n in NAMES}
        self.allowed = 0

    def facts(self, incognito: bool) -> Facts:
        document = {"version": 1, "disabled": self.disabled, "block": self.block, "grant": self.policy_grants}
        return Facts(parse(json.dumps(document).encode()), tuple(self.grants + (self.private if incognito else [])))

    @rule(host=st.sampled_from(NAMES + LITERALS), kind=st.sampled_from(["*", "tcp", "udp", "udp-bind", "tcp-listen", "multicast"]), port=st.sampled_from(["*", 7]))
    def block_host(self, host: str, kind: str, port: object) -> None:
        self.block.append({"host": host, "kind": kind, "port": port})

    @rule(network=st.sampled_from(NETWORKS))
    def block_network(self, network: str) -> None:
        self.block.append({"host": network})

    @rule(origin=st.sampled_from(ORIGINS[:3]), host=st.sampled_from(NAMES + LITERALS), kind=st.sampled_from(KINDS[:2] + KINDS[3:]), port=st.sampled_from([7, "*"]))
    def policy_grant(self, origin: str, host: str, kind: str, port: object) -> None:
        self.policy_grants.append({"origin": origin, "kind": kind, "host": host, "port": port})

    @rule()
    def change_policy(self) -> None:
        if self.block:
            self.block.pop(0)
        self.disabled = not self.disabled and len(self.block) % 3 == 0

    @rule(origin=st.sampled_from(ORIGINS[:2]), host=st.sampled_from(NAMES + LITERALS), kind=st.sampled_from(["tcp", "udp", "udp-bind", "tcp-listen", "multicast"]),
          port=st.sampled_from([7, "*"]), scope=st.sampled_from(["", "internet", "local", "loopback"]), private=st.booleans())
    def user_grants(self, origin: str, host: str, kind: str, port: object, scope: str, private: bool) -> None:
        grant = Grant(origin, kind, normalize_host(host), port, scope if not _is_literal(host) else "")  # type: ignore[arg-type]
        (self.private if private else self.grants).append(grant)

    @precondition(lambda self: bool(self.grants))
    @rule(data=st.data())
    def user_revokes(self, data: st.DataObject) -> None:
        self.grants.remove(data.draw(st.sampled_from(self.grants)))

    @rule(name=st.sampled_from(NAMES[:2]), answer=st.lists(st.sampled_from(ADDRESSES), min_size=0, max_size=3))
    def dns_answers(self, name: str, answer: list[str]) -> None:
        self.dns[name] = tuple(answer)

    @rule(origin=st.sampled_from(ORIGINS[:2] * 3 + ORIGINS), incognito=st.booleans(), kind=st.sampled_from(KINDS), host=st.sampled_from(NAMES + LITERALS),
          port=st.sampled_from(PORTS), answers=st.lists(st.sampled_from(["deny", "once", "always"]), max_size=3))
    def page_asks(self, origin: str, incognito: bool, kind: str, host: str, port: int, answers: list[str]) -> None:
        request = Request(origin, incognito, kind, host, port)  # type: ignore[arg-type]
        consents: list[tuple[str, str]] = []  # (scope shown, what the user said)
        asked_for_lookup = False
        for _ in range(6):
            decision = decide(request, self.facts(incognito))
            if isinstance(decision, Refuse):
                return
            if isinstance(decision, Resolve):
                assert not asked_for_lookup, "the core asks for one lookup per answer"
                assert request.consent is not None or self.covered_by_name(request, incognito), "a name looked up without consent (finding 9)"
                asked_for_lookup = True
                request = Request(origin, incognito, kind, host, port, self.dns[decision.host], request.consent)  # type: ignore[arg-type]
                continue
            if isinstance(decision, Ask):
                if decision.addresses:
                    assert decision.scope == max((true_scope(a, kind) for a in decision.addresses), key=SENS.__getitem__)  # finding 2
                else:
                    assert decision.scope == UNKNOWN and request.addresses is None
                if not answers or answers[0] == "deny":
                    return
                said = answers.pop(0)
                consents.append((decision.scope, said))
                remember = "" if said == "once" else ("session" if incognito else "always")
                addresses = decision.addresses or None
                request = Request(origin, incognito, kind, host, port, addresses, Consent(decision.scope, remember))  # type: ignore[arg-type]
                asked_for_lookup = False
                continue
            assert isinstance(decision, Allow)
            self.check_allowed(request, decision, consents, incognito)
            if decision.grant is not None:
                (self.grants if decision.remember == "always" else self.private).append(decision.grant)
            return

    def covered_by_name(self, request: Request, incognito: bool) -> bool:
        name = normalize_host(request.host)
        kind = {"udp-send": "udp"}.get(request.kind, request.kind)
        facts = self.facts(incognito)
        return any(g.covers(_origin(request.origin), kind, name, request.port) for g in facts.grants) or any(
            g["origin"] == _origin(request.origin) and g["kind"] == kind and normalize_host(str(g["host"])) == name and g["port"] in ("*", request.port)
            for g in self.policy_grants
        )

    def check_allowed(self, request: Request, decision: Allow, consents: list[tuple[str, str]], incognito: bool) -> None:
        self.allowed += 1
        origin = _origin(request.origin)
        assert origin is not None and not origin.startswith("http://b."), f"{request.origin} is not potentially trustworthy"
        assert not self.disabled
        kind = {"udp-send": "udp"}.get(request.kind, request.kind)
        name = normalize_host(request.host)
        literal = _is_literal(request.host)
        given = (name,) if literal else ("127.0.0.1", "::1") if name == "localhost" and request.addresses is None else request.addresses or ()
        assert decision.addresses, "an Allow names addresses"
        for address in decision.addresses:
            assert on_the_wire(address) & set().union(*(on_the_wire(a) for a in given)), f"{address} is not what {request.host} gave"
            for rule_ in self.block:
                if rule_.get("kind", "*") not in ("*", kind) or rule_.get("port", "*") not in ("*", request.port):
                    continue
                host = str(rule_["host"])
                if "/" in host:
                    net = ipaddress.ip_network(host)
                    assert not any(f in net for f in on_the_wire(address) if f.version == net.version), f"{address} is blocked by {host}"
                elif _is_literal(host):
                    assert not on_the_wire(address) & on_the_wire(normalize_host(host), reach=False), f"{address} is blocked by {host}"
                else:
                    assert normalize_host(host) != name, f"{name} is blocked"
            scope = true_scope(address, kind)
            by_policy = any(
                g["origin"] == origin and g["kind"] == kind and g["port"] in ("*", request.port)
                and (normalize_host(str(g["host"])) == name or (_is_literal(str(g["host"])) and on_the_wire(address, reach=False) & on_the_wire(normalize_host(str(g["host"])), reach=False)))
                for g in self.policy_grants
            )
            by_user = any(
                g.origin == origin and g.kind == kind and g.host == name and g.port in ("*", request.port)
                and (g.scope == "" or SENS[scope] <= SENS[g.scope])
                for g in self.grants + (self.private if incognito else [])
            )
            by_answer = any(literal or (shown != UNKNOWN and SENS[scope] <= SENS[shown]) or (shown == UNKNOWN and scope == "internet") for shown, _ in consents)
            assert by_policy or by_user or by_answer, f"{address} ({scope}) for {request} is covered by nothing"

    @invariant()
    def remembered_names_keep_the_scope_they_were_seen_at(self) -> None:
        # Grants the core asked to keep (and those made above by hand) name a scope only for
        # names: an address's grant is for that address, whatever its scope.
        for g in self.grants + self.private:
            assert g.scope == "" or not _is_literal(g.host)


def _origin(origin: str) -> str | None:
    return trustworthy_origin(origin)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(normalize_host(host).split("%")[0])
        return True
    except (ValueError, InvalidDestination):
        return False


DecisionMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DIRECT_SOCKETS_FUZZ_EXAMPLES", "150")), stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_no_sequence_allows_what_nothing_covers = DecisionMachine.TestCase
