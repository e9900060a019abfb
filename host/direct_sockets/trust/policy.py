"""The administrator's policy: a JSON file in the system configuration directory that wins over
whatever the user allowed.

It can turn the API off, block destinations (by origin, kind, host or IP network, and port, each
possibly `*`) and grant destinations to origins. A policy file that exists but cannot be read or
does not match its schema turns the API off (fail closed) until it is fixed: an administrator
who meant to block something must never find it open because of a typo.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .destinations import IPAddress, InvalidDestination, canonical_ip, normalize_host, normalize_origin, translated_ipv4
from ..protocol.validation import DocumentInvalid, load_document

log = logging.getLogger(__name__)



def address_forms(host: str, reach: bool = True) -> frozenset[IPAddress] | None:
    """Every address a rule must see for an IP literal (None for a name): the address itself,
    the IPv4 address inside an IPv4-mapped or -compatible one (and the mapped form of an IPv4
    address, for rules written as IPv6 networks), and, with `reach` (for blocks), for the
    unspecified addresses `0.0.0.0` and `::` this device's loopback addresses too: connecting
    there reaches this device, and binding there listens on loopback among the rest. Grants
    take no such widening: a grant for 127.0.0.1 is not one for 0.0.0.0."""
    try:
        address = canonical_ip(host.split("%")[0])
    except ValueError:
        return None
    forms: set[IPAddress] = {address}
    if reach and (inner := translated_ipv4(address)) is not None:
        forms.add(inner)  # a block on the IPv4 network holds for its NAT64/SIIT spelling
    if address.is_unspecified and reach:
        forms |= {ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::"), ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")}
    forms |= {ipaddress.IPv6Address(f"::ffff:{a}") for a in forms if isinstance(a, ipaddress.IPv4Address)}
    return frozenset(forms)


@dataclass(frozen=True)
class Rule:
    origin: str  # normalized, or "*"
    kind: str  # or "*"
    host: str  # normalized name or address, "*", or a network in text form
    port: int | str  # or "*"

    @functools.cached_property
    def _network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if "/" in self.host:
            return ipaddress.ip_network(self.host, strict=False)
        try:
            return ipaddress.ip_network(canonical_ip(self.host.split("%")[0]))
        except ValueError:
            return None  # a name

    def matches(self, origin: str, kind: str, host: str, port: int, reach: bool = True) -> bool:
        """Whether the rule covers a request; `origin` and `host` normalized. A name rule
        matches that name; an address or network rule matches IP literals in any spelling
        (`address_forms`), and names only through what they resolve to (the caller asks
        again for each resolved address)."""
        if self.origin != "*" and self.origin != origin:
            return False
        if self.kind != "*" and self.kind != kind:
            return False
        if self.port != "*" and self.port != port:
            return False
        if self.host == "*":
            return True
        network = self._network
        if network is None:  # a name rule
            return self.host == host
        forms = address_forms(host, reach)
        return forms is not None and any(a in network for a in forms if a.version == network.version)


@dataclass(frozen=True)
class Policy:
    disabled: bool
    block: tuple[Rule, ...]
    grant: tuple[Rule, ...]

    def blocks(self, origin: str, kind: str, host: str, port: int) -> bool:
        """`origin` and `host` normalized."""
        return self.disabled or any(rule.matches(origin, kind, host, port) for rule in self.block)

    def grants(self, origin: str, kind: str, host: str, port: int) -> bool:
        return not self.disabled and any(rule.matches(origin, kind, host, port, reach=False) for rule in self.grant)


class PolicyDamaged(Exception):
    pass


def _rule(item: dict[str, Any], wildcards: bool) -> Rule:
    origin = item.get("origin", "*")
    host = item.get("host", "*")
    if origin != "*" or not wildcards:
        origin = normalize_origin(origin)
    if "/" in host and wildcards:
        host = str(ipaddress.ip_network(host, strict=False))
    elif host != "*" or not wildcards:
        host = normalize_host(host)
    return Rule(origin, item.get("kind", "*"), host, item.get("port", "*"))


def parse(raw: bytes) -> Policy:
    try:
        data = load_document(raw, "policy.json")
    except DocumentInvalid as exc:
        raise PolicyDamaged(str(exc)) from exc
    try:
        block = tuple(_rule(item, wildcards=True) for item in data.get("block", []))
        grant = tuple(_rule(item, wildcards=False) for item in data.get("grant", []))
    except (InvalidDestination, ValueError) as exc:
        raise PolicyDamaged(str(exc)) from exc
    return Policy(bool(data.get("disabled", False)), block, grant)


class _Source:
    """One policy file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._policy: Policy | None = None
        self.damage: str | None = None

    def current(self) -> Policy | None:
        """Its policy; None when there is no file. A damaged file disables the API."""
        try:
            stat = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._key, self.damage = None, None
            return None
        except OSError as exc:
            return self._damaged(f"cannot read: {exc}", None)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != self._key:
            try:
                self._policy, self.damage = parse(self.path.read_bytes()), None
            except (PolicyDamaged, OSError) as exc:
                return self._damaged(str(exc), key)
            self._key = key
        return self._policy if self.damage is None else Policy(True, (), ())

    def _damaged(self, reason: str, key: tuple[int, int, int] | None) -> Policy:
        if reason != self.damage:
            log.error("the administrator's policy %s is damaged (%s): every request is refused until it is fixed", self.path, reason)
        self._key, self.damage = key, reason
        return Policy(True, (), ())


class PolicyFile:
    """The administrator's policy, from one file or several (paths.policy_files). Every file
    that exists is read, and they merge strictest-first: the API is off if any file turns it
    off or is damaged, every file's blocks apply, and a grant applies unless some block
    covers the destination. So adding a folder in front (XDG_CONFIG_DIRS) can never hide a
    policy; a grant from any of them only spares the user a prompt."""

    def __init__(self, paths: Path | Sequence[Path]) -> None:
        self.paths = [paths] if isinstance(paths, Path) else list(paths)
        self._sources = [_Source(path) for path in self.paths]

    @property
    def path(self) -> Path:
        """The first file in force (for messages), else the first place looked."""
        return (self.existing() or self.paths)[0]

    def existing(self) -> list[Path]:
        return [source.path for source in self._sources if source.current() is not None]

    def damage(self) -> str | None:
        """'PATH: reason' for the first damaged file, or None."""
        for source in self._sources:
            source.current()
            if source.damage is not None:
                return f"{source.path} is damaged ({source.damage})"
        return None

    def current(self) -> Policy | None:
        """The policy in force; None when there is no file."""
        policies = [p for p in (source.current() for source in self._sources) if p is not None]
        if not policies:
            return None
        if len(policies) == 1:
            return policies[0]
        return Policy(
            any(p.disabled for p in policies),
            tuple(rule for p in policies for rule in p.block),
            tuple(rule for p in policies for rule in p.grant),
        )
