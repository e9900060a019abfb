"""`direct-sockets permissions`: list, grant and revoke the destinations each site may reach,
in the same store (and with the same limits) the host uses."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from . import paths
from .trust.destinations import InvalidDestination, format_host_port, is_ip, normalize_host, normalize_origin, parse_host_port
from .trust.permissions import Grant, PermissionStore, StoreDamaged


def _store() -> PermissionStore:
    return PermissionStore(paths.permissions_file())


# CLI flag -> grant kind. Each takes HOST:PORT (PORT may be *), except --multicast: GROUP.
KIND_FLAGS = {"tcp": "tcp", "udp": "udp", "udp_bind": "udp-bind", "tcp_listen": "tcp-listen", "multicast": "multicast"}


def _destination(args: argparse.Namespace) -> tuple[str, str, int | str] | None:
    """The one destination named on the command line, or None; more than one is an error."""
    given = [(attr, getattr(args, attr)) for attr in KIND_FLAGS if getattr(args, attr, None) is not None]
    if len(given) > 1:
        raise InvalidDestination("name one destination at a time")
    if not given:
        return None
    attr, text = given[0]
    kind = KIND_FLAGS[attr]
    if kind == "multicast":
        group = normalize_host(text)
        if not _is_multicast(group):
            raise InvalidDestination(f"not a multicast group address: {text!r}")
        return kind, group, "*"
    host, port = parse_host_port(text)
    if kind in ("udp-bind", "tcp-listen") and not is_ip(host):
        raise InvalidDestination(f"--{attr.replace('_', '-')} takes a local IP address, not a name: {text!r}")
    return kind, host, port


def _always_refused(kind: str, port: int | str) -> str | None:
    """Why the host would refuse every use of this grant, or None. The limits are the host's
    own (session/opening.py), so the two cannot drift apart."""
    from .session.opening import BOUND_UDP_MIN_PORT, LISTEN_MIN_PORT

    if port == "*" or port == 0:
        return None
    if kind == "udp-bind" and int(port) < BOUND_UDP_MIN_PORT:
        return f"the host never binds UDP below port {BOUND_UDP_MIN_PORT} (the draft's rule); use port 0, * or {BOUND_UDP_MIN_PORT} and above"
    if kind == "tcp-listen" and int(port) < LISTEN_MIN_PORT:
        return f"the host never listens for TCP below port {LISTEN_MIN_PORT} (the draft's rule); use port 0, * or {LISTEN_MIN_PORT} and above"
    return None


def describe(grant: Grant) -> str:
    return grant.host if grant.kind == "multicast" else format_host_port(grant.host, grant.port)


def _is_multicast(text: str) -> bool:
    return is_ip(text) and ipaddress.ip_address(text).is_multicast


def cmd_permissions(args: argparse.Namespace) -> int:
    store = _store()
    try:
        if args.action == "list":
            grants = store.load()
            origin = normalize_origin(args.origin) if args.origin else None
            rows = [g for g in grants if origin is None or g.origin == origin]
            if args.json:
                print(json.dumps([g.as_dict() for g in rows], indent=2))
            elif not rows:
                print("no grants")
            for g in rows if not args.json else []:
                print(f"{g.origin}\t{g.kind}\t{describe(g)}" + (f"\tkey {g.pin}" if g.pin else ""))
            return 0
        origin = normalize_origin(args.origin)
        destination = _destination(args)
        if args.action == "grant":
            if destination is None:
                print("direct-sockets: grant needs a destination (--tcp, --udp, --udp-bind, --tcp-listen or --multicast)", file=sys.stderr)
                return 2
            kind, host, port = destination
            refusal = _always_refused(kind, port)
            if refusal:
                print(f"direct-sockets: not granted: {refusal}", file=sys.stderr)
                return 2
            aside = store.grant(Grant(origin, kind, host, port))
            if aside is not None:
                print(f"warning: the permission store was damaged; it was kept as {aside} and a new one started", file=sys.stderr)
            print(f"granted {origin} {kind} {describe(Grant(origin, kind, host, port))}")
            return 0
        kind, host, port = destination if destination is not None else (None, None, None)
        removed = store.revoke(origin, kind, host, port)
        for g in removed:
            print(f"revoked {g.origin} {g.kind} {describe(g)}")
        if not removed:
            print("no matching grant", file=sys.stderr)
            return 1
        return 0
    except InvalidDestination as exc:
        print(f"direct-sockets: {exc}", file=sys.stderr)
        return 2
    except StoreDamaged as exc:
        print(f"direct-sockets: the permission store {store.path} is damaged and grants nothing: {exc}", file=sys.stderr)
        return 3


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    perms = sub.add_parser("permissions", help="list, grant and revoke destinations per site")
    psub = perms.add_subparsers(dest="action", required=True)
    p_list = psub.add_parser("list", help="list grants")
    p_list.add_argument("--origin")
    p_list.add_argument("--json", action="store_true")
    p_grant = psub.add_parser("grant", help="allow an origin to reach a destination")
    p_grant.add_argument("--origin", required=True, help="e.g. https://app.example")
    p_revoke = psub.add_parser("revoke", help="remove grants of an origin (all of them unless a destination is given)")
    p_revoke.add_argument("--origin", required=True)
    for p in (p_grant, p_revoke):
        p.add_argument("--tcp", metavar="HOST:PORT", help="connect over TCP; PORT may be *")
        p.add_argument("--udp", metavar="HOST:PORT", help="UDP to HOST:PORT (connected, or sent from a bound socket)")
        p.add_argument("--udp-bind", metavar="ADDR:PORT", help="bind UDP on a local address; * includes an OS-chosen port")
        p.add_argument("--tcp-listen", metavar="ADDR:PORT", help="listen for TCP on a local address; * includes an OS-chosen port")
        p.add_argument("--multicast", metavar="GROUP", help="join a multicast group")
    perms.set_defaults(func=cmd_permissions)
