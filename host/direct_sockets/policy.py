"""The administrator's policy: a JSON file in the system configuration directory that wins over
whatever the user allowed.

It can turn the API off, block destinations (by origin, kind, host or IP network, and port, each
possibly `*`) and grant destinations to origins. A policy file that exists but cannot be read or
does not match its schema turns the API off (fail closed) until it is fixed: an administrator
who meant to block something must never find it open because of a typo.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .destinations import InvalidDestination, normalize_host, normalize_origin
from .validation import DocumentInvalid, load_document

log = logging.getLogger(__name__)

Verdict = Literal["block", "grant"] | None


@dataclass(frozen=True)
class Rule:
    origin: str  # normalized, or "*"
    kind: str  # or "*"
    host: str  # normalized name or address, "*", or a network in text form
    port: int | str  # or "*"

    def matches(self, origin: str, kind: str, host: str, port: int) -> bool:
        if self.origin != "*" and self.origin != origin:
            return False
        if self.kind != "*" and self.kind != kind:
            return False
        if self.port != "*" and self.port != port:
            return False
        if self.host in ("*", host):
            return True
        if "/" in self.host:
            try:
                return ipaddress.ip_address(host) in ipaddress.ip_network(self.host, strict=False)
            except ValueError:
                return False  # a name: networks match addresses only
        return False


@dataclass(frozen=True)
class Policy:
    disabled: bool
    block: tuple[Rule, ...]
    grant: tuple[Rule, ...]


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


class PolicyFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._policy: Policy | None = None
        self._damage: str | None = None

    def current(self) -> Policy | None:
        """The policy in force; None when there is no file. A damaged file disables the API."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._damaged(f"cannot read: {exc}", None)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != self._key:
            try:
                self._policy, self._damage = parse(self.path.read_bytes()), None
            except (PolicyDamaged, OSError) as exc:
                return self._damaged(str(exc), key)
            self._key = key
        return self._policy if self._damage is None else Policy(True, (), ())

    def _damaged(self, reason: str, key: tuple[int, int, int] | None) -> Policy:
        if reason != self._damage:
            log.error("the administrator's policy %s is damaged (%s): every request is refused until it is fixed", self.path, reason)
        self._key, self._damage = key, reason
        return Policy(True, (), ())

    def blocks_address(self, origin: str, kind: str, address: str, port: int) -> bool:
        """Whether a block rule covers an address a name resolved to (networks apply to names
        through their addresses)."""
        return self.verdict(origin, kind, address, port) == "block"

    def verdict(self, origin: str, kind: str, host: str, port: int) -> Verdict:
        """'block' (refuse, unasked), 'grant' (allow, unasked) or None (the user decides)."""
        policy = self.current()
        if policy is None:
            return None
        if policy.disabled:
            return "block"
        try:
            origin, host = normalize_origin(origin), normalize_host(host)
        except InvalidDestination:
            return "block"
        if any(rule.matches(origin, kind, host, port) for rule in policy.block):
            return "block"
        if any(rule.matches(origin, kind, host, port) for rule in policy.grant):
            return "grant"
        return None
