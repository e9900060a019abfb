"""The user's remembered destinations: which origin may reach which destination.

One JSON file, validated against `schemas/permissions-store.json` every time it is read. A
file that is not valid grants nothing (fail closed); it is left where it is for the user to see
until a command that writes moves it aside under a `.damaged-*` name, and says so. Writes are
atomic (a temporary file, fsync, rename), the file is readable only by its owner, and writers
take a lock so that two commands cannot lose each other's changes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .destinations import normalize_host, normalize_origin
from ..files import sweep, write_atomically
from ..protocol.validation import DocumentInvalid, load_document

# What a grant can allow. Each names its destination as host and port:
#   tcp         connect to host:port
#   udp         a connected UDP socket to host:port, or a bound socket sending there
#   udp-bind    bind a UDP socket to local address:port (port "*" includes an OS-chosen one)
#   tcp-listen  listen on local address:port (likewise)
#   multicast   join the group at host (port is always "*")
#   certificate trust the TLS certificate whose key is `pin` when connecting to host:port (it
#               allows no connection by itself: a device's self-signed certificate)
# (protocol/schemas/permissions-store.json holds the list the store is checked against.)


@dataclass(frozen=True, order=True)
class Grant:
    origin: str
    kind: str
    host: str
    port: int | str  # an int, or "*" for any port
    # A name's grant: the most sensitive scope its addresses had when the user allowed it
    # ("internet" < "local" < "loopback"); it covers addresses no more sensitive than that
    # (decision.py). "": every address (an IP address's grant, or one made with the CLI).
    scope: str = ""
    pin: str = ""  # kind "certificate": base64 SHA-256 of the trusted SubjectPublicKeyInfo

    def covers(self, origin: str, kind: str, host: str, port: int) -> bool:
        """By name (or address) as the page asked; the session checks `scope` once resolved."""
        return (
            self.origin == origin
            and self.kind == kind
            and self.host == host
            and (self.port == "*" or self.port == port)
        )


    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin, "kind": self.kind, "host": self.host, "port": self.port,
            **({"scope": self.scope} if self.scope else {}), **({"pin": self.pin} if self.pin else {}),
        }


def _sort_key(grant: Grant) -> tuple[str, str, str, tuple[int, int], str, str]:
    """The store's order: a port is an int or "*", which do not compare, so "*" sorts after
    every number."""
    port = (1, 0) if grant.port == "*" else (0, int(grant.port))
    return (grant.origin, grant.kind, grant.host, port, grant.scope, grant.pin)


class StoreDamaged(Exception):
    """The store exists but cannot be trusted; it grants nothing."""


def _parse(raw: bytes) -> list[Grant]:
    try:
        data = load_document(raw, "permissions-store.json")
    except DocumentInvalid as exc:
        raise StoreDamaged(str(exc)) from exc
    grants = []
    for item in data["grants"]:
        try:
            grants.append(Grant(normalize_origin(item["origin"]), item["kind"], normalize_host(item["host"]), item["port"], item.get("scope", ""), item.get("pin", "")))
        except ValueError as exc:
            raise StoreDamaged(f"grant {item!r}: {exc}") from exc
    return grants


class PermissionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: list[Grant] = []

    def load(self) -> list[Grant]:
        """All grants; [] when there is no store. Raises StoreDamaged for a bad one."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != self._cache_key:
            grants = _parse(self.path.read_bytes())
            self._cache, self._cache_key = grants, key
        return list(self._cache)

    def allows(self, origin: str, kind: str, host: str, port: int) -> bool:
        """Fails closed: a damaged or unreadable store allows nothing."""
        return bool(self.matching(origin, kind, host, port))

    def matching(self, origin: str, kind: str, host: str, port: int) -> list[Grant]:
        """The grants that cover the destination by name; [] for a damaged or unreadable store."""
        try:
            grants = self.load()
        except (StoreDamaged, OSError):
            return []
        try:
            origin, host = normalize_origin(origin), normalize_host(host)
        except ValueError:
            return []
        return [g for g in grants if g.covers(origin, kind, host, port)]

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load_for_write(self) -> tuple[list[Grant], Path | None]:
        """The grants to build on, moving a damaged store aside (returned) rather than losing it."""
        try:
            return self.load(), None
        except StoreDamaged:
            stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
            os.replace(self.path, aside)
            return [], aside

    def _write(self, grants: list[Grant]) -> None:
        # Writers hold the lock while they write, so a temporary file seen here is what a
        # writer killed mid-write left: it never replaced the store, and goes now.
        sweep(self.path)
        items: list[dict[str, Any]] = [
            g.as_dict() for g in sorted(set(grants), key=_sort_key)
        ]
        raw = (json.dumps({"version": 1, "grants": items}, indent=2) + "\n").encode()
        _parse(raw)  # never write what we would refuse to read
        write_atomically(self.path, raw, 0o600)

    def grant(self, grant: Grant) -> Path | None:
        """Adds a grant; returns where a damaged store was moved, if it was."""
        with self._locked():
            grants, aside = self._load_for_write()
            if grant not in grants:
                grants.append(grant)
            self._write(grants)
            return aside

    def revoke(self, origin: str, kind: str | None = None, host: str | None = None, port: int | str | None = None) -> list[Grant]:
        """Removes the grants of `origin` that match the given fields; returns them.
        A damaged store raises StoreDamaged: there is nothing to revoke from it."""
        with self._locked():
            grants = self.load()
            removed = [
                g for g in grants
                if g.origin == origin
                and (kind is None or g.kind == kind)
                and (host is None or g.host == host)
                and (port is None or g.port == port)
            ]
            if removed:
                self._write([g for g in grants if g not in removed])
            return removed
