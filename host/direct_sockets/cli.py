"""The `direct-sockets` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, install, paths, stdio
from .destinations import InvalidDestination, format_host_port, normalize_origin, parse_host_port
from .permissions import Grant, PermissionStore, StoreDamaged


def _store() -> PermissionStore:
    return PermissionStore(paths.permissions_file())


_PROTOCOL_FDS: list[int] = []


def cmd_native_host(args: argparse.Namespace) -> int:
    from . import native_host

    fd_in, fd_out = _PROTOCOL_FDS
    return native_host.run(fd_in, fd_out, args.browser_args, args.manifest)


def cmd_install(args: argparse.Namespace) -> int:
    for browser in args.browser:
        manifest = install.install(browser, args.user_data_dir)
        print(f"{browser}: wrote {manifest}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    for browser in args.browser:
        removed = install.uninstall(browser, args.user_data_dir)
        print(f"{browser}: " + (", ".join(map(str, removed)) if removed else "nothing installed"))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    ok = True
    for browser in args.browser:
        for line, good in doctor.check(browser, args.user_data_dir):
            ok &= good
            print(f"[{'ok' if good else 'FAIL'}] {browser}: {line}")
    return 0 if ok else 1


def _grant_from(args: argparse.Namespace) -> tuple[str, str | None, int | str | None]:
    if args.tcp is None:
        return "tcp", None, None
    host, port = parse_host_port(args.tcp)
    return "tcp", host, port


def cmd_permissions(args: argparse.Namespace) -> int:
    store = _store()
    try:
        if args.action == "list":
            grants = store.load()
            origin = normalize_origin(args.origin) if args.origin else None
            rows = [g for g in grants if origin is None or g.origin == origin]
            if args.json:
                print(json.dumps([{"origin": g.origin, "kind": g.kind, "host": g.host, "port": g.port} for g in rows], indent=2))
            elif not rows:
                print("no grants")
            for g in rows if not args.json else []:
                print(f"{g.origin}\t{g.kind}\t{format_host_port(g.host, g.port)}")
            return 0
        origin = normalize_origin(args.origin)
        if args.action == "grant":
            kind, host, port = _grant_from(args)
            if host is None or port is None:
                print("direct-sockets: grant needs a destination (--tcp HOST:PORT)", file=sys.stderr)
                return 2
            aside = store.grant(Grant(origin, kind, host, port))
            if aside is not None:
                print(f"warning: the permission store was damaged; it was kept as {aside} and a new one started", file=sys.stderr)
            print(f"granted {origin} {kind} {format_host_port(host, port)}")
            return 0
        kind, host, port = _grant_from(args)
        removed = store.revoke(origin, None if args.tcp is None and not args.all_kinds else kind, host, port)
        for g in removed:
            print(f"revoked {g.origin} {g.kind} {format_host_port(g.host, g.port)}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="direct-sockets", description="Direct Sockets for web pages: native host and tools.")
    parser.add_argument("--version", action="version", version=f"direct-sockets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    host = sub.add_parser("native-host", help="run as the native messaging host (the browser starts this)")
    host.add_argument("--manifest", type=Path, help="the host manifest this wrapper was installed for")
    host.add_argument("browser_args", nargs=argparse.REMAINDER, help="what the browser passes")
    host.set_defaults(func=cmd_native_host)

    for name, func, text in (
        ("install", cmd_install, "register the native host with browsers"),
        ("uninstall", cmd_uninstall, "remove what install wrote"),
        ("doctor", cmd_doctor, "check the installation and talk to the host"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--browser", action="append", choices=install.BROWSERS, help="repeatable; default: all")
        p.add_argument("--user-data-dir", type=Path, help="a Chromium profile directory (NativeMessagingHosts/ inside it)")
        p.set_defaults(func=func)

    perms = sub.add_parser("permissions", help="list, grant and revoke destinations per site")
    psub = perms.add_subparsers(dest="action", required=True)
    p_list = psub.add_parser("list", help="list grants")
    p_list.add_argument("--origin")
    p_list.add_argument("--json", action="store_true")
    p_grant = psub.add_parser("grant", help="allow an origin to reach a destination")
    p_grant.add_argument("--origin", required=True, help="e.g. https://app.example")
    p_grant.add_argument("--tcp", metavar="HOST:PORT", help="a TCP destination; PORT may be *")
    p_revoke = psub.add_parser("revoke", help="remove grants of an origin (all of them unless a destination is given)")
    p_revoke.add_argument("--origin", required=True)
    p_revoke.add_argument("--tcp", metavar="HOST:PORT")
    p_revoke.set_defaults(all_kinds=False)
    perms.set_defaults(func=cmd_permissions)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["native-host"]:
        # Before anything else can print: from here on only the protocol reaches the browser.
        _PROTOCOL_FDS.extend(stdio.reserve())
    args = build_parser().parse_args(argv)
    if getattr(args, "browser", None) is None and args.command in ("install", "uninstall", "doctor"):
        args.browser = list(install.BROWSERS)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"direct-sockets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
