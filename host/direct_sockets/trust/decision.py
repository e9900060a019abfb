"""Every security decision the host makes, in one place and without I/O (as h11 is for HTTP).

The session describes a request (who asks, for what, what the name resolved to if it was
looked up, what the user answered if they were asked) together with the administrator's policy
and the user's grants; `decide` answers with one of:

- `Refuse`: the page gets `NotAllowedError`; the reason is for the host's log only;
- `Ask`: show the user a prompt with this host, these addresses and this scope (the MOST
  sensitive of the addresses: this device > the local network > the internet);
- `Resolve`: the user (or a grant) allows the name: look it up now, then decide again with
  the addresses; no name is looked up before that (security-model.md: nothing is resolved
  before the user allows it, so a page learns nothing from a lookup it was not allowed);
- `Allow`: open, send or bind to exactly these addresses, which this module checked, and no
  others (the session never resolves again: a rebinding DNS server gets no second chance).

The rules, in order: the origin must be potentially trustworthy; the administrator's policy
(`policy.py`) refuses what it blocks by name, by address in any spelling (an IPv4-mapped
address is its IPv4 address, `0.0.0.0` and `::` are this device), and by every resolved
address; then each address must be covered by a policy grant, by a user grant whose scope
reaches it (a grant made while a name was on the internet does not follow it to the local
network or this device), or by the user's answer to this very request. An answer about a name
that was not looked up yet covers only the internet: if the name turns out to be on the local
network or this device, the user is asked again, seeing the addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence
from urllib.parse import urlsplit

from .destinations import InvalidDestination, canonical_ip, is_localhost_name, network_defined, translated_ipv4, normalize_host, normalize_origin
from .permissions import Grant
from .policy import Policy

Kind = Literal["tcp", "udp", "udp-send", "udp-bind", "tcp-listen", "multicast", "certificate", "start-tls"]
KINDS: tuple[str, ...] = ("tcp", "udp", "udp-send", "udp-bind", "tcp-listen", "multicast", "certificate", "start-tls")
REMOTE_KINDS = ("tcp", "udp", "udp-send")  # a destination the host resolves and reaches
LOCAL_KINDS = ("udp-bind", "tcp-listen", "multicast")  # an IP literal on this device (or a group)
BOUND_KINDS = ("udp-bind", "tcp-listen")  # a socket others reach: bound to an address of this device
# What a page does with a peer that reaches its bound socket: the kind a policy rule names for
# exchanging data with that address (the same rule that keeps the page from reaching it).
PEER_KINDS = {"tcp-listen": "tcp", "udp-bind": "udp"}
Scope = Literal["loopback", "local", "internet"]
# How sensitive a scope is: what a grant or an answer seen at one scope covers is that scope
# and every less sensitive one.
SENSITIVITY = {"internet": 0, "local": 1, "loopback": 2}
UNKNOWN = "unknown"  # a prompt's scope for a name not looked up yet
LOCALHOST_ADDRESSES = ("127.0.0.1", "::1")


def grant_kind(kind: str) -> str:
    """The kind a grant names and a policy rule matches: a bound socket's send is `udp`, the
    same destination a connected socket reaches; a certificate or STARTTLS is about a `tcp`
    connection."""
    return {"udp-send": "udp", "start-tls": "tcp"}.get(kind, kind)


def address_scope(text: str, kind: str = "") -> Scope:
    """'loopback' (this device, including `0.0.0.0` and `::` when connecting, which reaches
    it), 'internet' (globally routable unicast) or 'local' (anything else: private,
    link-local, unique-local, shared, documentation, multicast). Listening or binding on
    `0.0.0.0` or `::` (a `BOUND_KINDS` kind) is 'local': every interface, so whoever can reach
    this device on the network reaches the page's socket, and the prompt must say so."""
    address = canonical_ip(text.split("%")[0])
    if (inner := translated_ipv4(address)) is not None:
        return address_scope(str(inner), kind)  # judged as where a translator sends it
    if network_defined(address):
        return "local"
    if address.is_unspecified and kind in BOUND_KINDS:
        return "local"
    if address.is_loopback or address.is_unspecified:
        return "loopback"
    if address.is_global and not address.is_multicast:
        return "internet"
    return "local"


def most_sensitive(addresses: Iterable[str], kind: str = "") -> str:
    """The scope a prompt shows for these addresses, for a request of `kind`: the most
    sensitive of them (a name that answers with a public address and 127.0.0.1 is shown as
    this device); 'unknown' for none."""
    scopes = [address_scope(a, kind) for a in addresses]
    return max(scopes, key=SENSITIVITY.__getitem__) if scopes else UNKNOWN


def scope_covers(granted: str, scope: str) -> bool:
    """Whether what was allowed at `granted` covers an address at `scope`. '' (an IP literal's
    grant, or one the user made by hand) covers everything; 'unknown' (an answer about a name
    not looked up) only the internet."""
    if granted == "":
        return True
    return SENSITIVITY[scope] <= SENSITIVITY.get(granted, 0)


def trustworthy_origin(origin: str) -> str | None:
    """The normalized origin if it is potentially trustworthy (https, or http on this device:
    localhost, *.localhost, 127.0.0.0/8, [::1]); None otherwise (plain http elsewhere, file:,
    opaque origins). Whatever the extension says: it is checked here as well."""
    try:
        normalized = normalize_origin(origin)
    except InvalidDestination:
        return None
    parts = urlsplit(normalized)
    if parts.scheme == "https":
        return normalized
    host = parts.hostname or ""
    if is_localhost_name(host):
        return normalized
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return normalized if address.is_loopback else None


def peer_blocked(policy: Policy | None, origin: str, kind: str, address: str, port: int) -> bool:
    """Whether a peer that reached a page's socket of `kind` (an accepted connection for
    tcp-listen, a datagram's sender for udp-bind) from `address`:`port` must be kept from the
    page: the administrator's blocks for exchanging data with that address (`PEER_KINDS`: a
    rule for tcp, udp or every kind, in any spelling of the address, an IPv4-mapped peer as its
    IPv4 address) hold for peers coming in as they do for destinations going out. A damaged or
    disabling policy keeps every peer out; no policy, none."""
    if policy is None:
        return False
    literal = _literal(address)
    try:
        origin = normalize_origin(origin)
    except InvalidDestination:
        return True
    return literal is None or policy.blocks(origin, PEER_KINDS.get(kind, kind), literal, port)


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consent:
    """The user's "allow" for this very request, and what the prompt they answered showed."""

    scope: str  # the prompt's scope: 'unknown' for a name not looked up, or loopback/local/internet
    remember: Literal["", "always", "session"] = ""  # a grant to keep once this is allowed


@dataclass(frozen=True)
class Request:
    origin: str
    incognito: bool
    kind: Kind
    host: str  # as the page named it (or the user corrected it)
    port: int
    addresses: tuple[str, ...] | None = None  # what the name resolved to; None: not looked up
    consent: Consent | None = None
    pin: str = ""  # kind certificate: the key the server presented
    ip_version: int = 0  # 4 or 6 when only that version can be used (dnsQueryType, the socket's)
    # The names the lookup really answered for (the resolver's search domain completing a short
    # name, a CNAME's target): the administrator's name blocks apply to them too.
    canonical: tuple[str, ...] = ()


# -- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refuse:
    reason: str  # for the host's log; the page only ever hears "Permission denied."


@dataclass(frozen=True)
class Ask:
    host: str  # normalized
    addresses: tuple[str, ...]
    scope: str  # the most sensitive of `addresses`, or 'unknown' for a name not looked up


@dataclass(frozen=True)
class Resolve:
    host: str  # normalized: the name to look up, now that looking it up is allowed


@dataclass(frozen=True)
class Allow:
    addresses: tuple[str, ...]  # canonical addresses, checked: the only ones to use
    scope: str
    grant: Grant | None = None  # to remember (the user said always, or session in a private window)
    remember: str = ""
    pin: str = ""


Decision = Refuse | Ask | Resolve | Allow


@dataclass(frozen=True)
class Facts:
    """What the decision reads besides the request: the policy in force (None: no policy file)
    and the user's grants (stored ones, and the private window's when the request is from one)."""

    policy: Policy | None = None
    grants: Sequence[Grant] = field(default_factory=tuple)


def decide(request: Request, facts: Facts) -> Decision:
    origin = trustworthy_origin(request.origin)
    if origin is None:
        return Refuse(f"{request.origin!r} is not a potentially trustworthy origin")
    if request.kind not in KINDS:
        return Refuse(f"unknown kind {request.kind!r}")
    policy = facts.policy
    if policy is not None and policy.disabled:
        return Refuse("the administrator's policy turns the API off (or is damaged)")
    try:
        host = normalize_host(request.host)
    except InvalidDestination as exc:
        return Refuse(str(exc))
    kind = grant_kind(request.kind)
    port = request.port
    if policy is not None and policy.blocks(origin, kind, host, port):
        return Refuse(f"the administrator's policy blocks {kind} {host}:{port}")

    literal = _literal(host)
    if request.kind in LOCAL_KINDS and literal is None:
        return Refuse(f"{request.kind} needs an IP address, not {host!r}")
    if literal is not None:
        addresses: tuple[str, ...] | None = (literal,)
    elif is_localhost_name(host):
        addresses = request.addresses if request.addresses is not None else tuple(
            a for a in LOCALHOST_ADDRESSES if request.ip_version in (0, ipaddress.ip_address(a).version))
    else:
        addresses = request.addresses

    by_name = [g for g in facts.grants if g.covers(origin, kind, host, port)]
    policy_grants_name = policy is not None and policy.grants(origin, kind, host, port)

    if request.kind in ("certificate", "start-tls"):
        return _on_a_connection(request, origin, host, addresses, by_name, policy)

    if addresses is None:
        # A name nobody looked up yet: only consent (a grant, or the user's answer) lets the
        # host resolve it. Before that the page gets a prompt that names the name, whatever
        # the name would resolve to: no DNS oracle.
        if by_name or policy_grants_name or request.consent is not None:
            return Resolve(host)
        return Ask(host, (), UNKNOWN)
    checked = tuple(dict.fromkeys(str(canonical_ip(a.split("%")[0])) + _zone(a) for a in addresses))
    if not checked:
        return Refuse(f"{host} has no address")
    if policy is not None:
        blocked = [a for a in checked if policy.blocks(origin, kind, a, port)]
        if blocked:
            return Refuse(f"the administrator's policy blocks {kind} {', '.join(blocked)}:{port} (for {host})")
        for answered in request.canonical:
            try:
                name = normalize_host(answered)
            except InvalidDestination:
                continue
            if name != host and policy.blocks(origin, kind, name, port):
                return Refuse(f"the administrator's policy blocks {kind} {name}:{port} ({host} resolved as {name})")
    scope = most_sensitive(checked, request.kind)

    def covered(address: str) -> bool:
        at = address_scope(address, request.kind)
        if policy is not None and policy.grants(origin, kind, address, port):
            return True
        # The administrator's grant of a name follows it anywhere but onto this device: a
        # hostile DNS answer for a granted partner's name must not reach local programs unasked
        # (a grant of `localhost`, or of the address itself, still does).
        if policy_grants_name and (at != "loopback" or literal is not None or is_localhost_name(host)):
            return True
        if any(scope_covers(g.scope, at) for g in by_name):
            return True
        consent = request.consent
        return consent is not None and (literal is not None or scope_covers(consent.scope, at))

    if all(covered(a) for a in checked):
        return _allow(request, origin, kind, host, literal, checked, scope)
    # Some address is more sensitive than what was allowed (a rebinding answer, or a name that
    # turned out to be on this device): ask, showing every address and the most sensitive scope.
    return Ask(host, checked, scope)


def _on_a_connection(
    request: Request, origin: str, host: str, addresses: tuple[str, ...] | None, by_name: list[Grant], policy: Policy | None,
) -> Decision:
    """A TLS step on a connection already allowed: STARTTLS on the address it is connected
    to, or trusting a certificate its server presented. The policy (as it is now) still
    decides about that address; a certificate is trusted by a grant pinning its key, or by
    the user's answer, shown with the connection's own address."""
    if not addresses:
        return Refuse(f"{request.kind}: no connected address")
    checked = tuple(str(canonical_ip(a.split("%")[0])) for a in addresses)
    if policy is not None and any(policy.blocks(origin, "tcp", a, request.port) for a in checked):
        return Refuse(f"the administrator's policy blocks {', '.join(checked)}:{request.port}")
    scope = most_sensitive(checked)
    if request.kind == "start-tls":
        return Allow(checked, scope)
    if request.pin and any(g.pin == request.pin for g in by_name):
        return Allow(checked, scope, pin=request.pin)
    if request.consent is None:
        return Ask(host, checked, scope)
    remember = request.consent.remember
    grant = Grant(origin, "certificate", host, request.port, "", request.pin) if remember else None
    return Allow(checked, scope, grant, remember, request.pin)


def _allow(request: Request, origin: str, kind: str, host: str, literal: str | None, checked: tuple[str, ...], scope: str) -> Allow:
    consent = request.consent
    if consent is None or not consent.remember:
        return Allow(checked, scope)
    # Remembered with the scope seen: a name's grant covers what it resolved to now and
    # anything less sensitive, never a later answer closer to the user.
    port: int | str = "*" if kind == "multicast" else request.port
    grant = Grant(origin, kind, host, port, "" if literal is not None else scope)
    return Allow(checked, scope, grant, consent.remember)


def _literal(host: str) -> str | None:
    try:
        return str(canonical_ip(host.split("%")[0])) + _zone(host)
    except ValueError:
        return None


def _zone(text: str) -> str:
    return "%" + text.split("%", 1)[1] if "%" in text else ""
