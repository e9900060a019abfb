"""The `direct-sockets` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, cli_permissions, paths
from .install import browsers, installer as install
from .native import stdio
from .trust.destinations import normalize_origin, parse_host_port


_PROTOCOL_FDS: list[int] = []


def cmd_native_host(args: argparse.Namespace) -> int:
    from .native import host as native_host

    fd_in, fd_out = _PROTOCOL_FDS
    return native_host.run(fd_in, fd_out, args.browser_args, args.manifest)


def _context(args: argparse.Namespace) -> "install.Context":
    system = bool(getattr(args, "system", False))
    root = getattr(args, "root", None)
    if root is not None and not system:
        raise ValueError("--root is for --system installs")
    return install.Context(system=system, root=root.resolve() if root is not None else None)


def _chosen(args: argparse.Namespace, ctx: "install.Context") -> list[str]:
    """The browsers named, or else every one found here (sandboxed ones get their remedy)."""
    if args.browser:
        return list(dict.fromkeys(args.browser))
    chosen = []
    for browser, presence in install.found_browsers(ctx):
        for line in browsers.sandbox_remedy(browser, presence):
            print(f"{browser.name}: {line}", file=sys.stderr)
        if presence.native or (presence.snap and browser.snap_portal):
            chosen.append(browser.name)
    if not chosen:
        print("direct-sockets: no browser found here; name one with --browser", file=sys.stderr)
    return chosen


def cmd_install(args: argparse.Namespace) -> int:
    from .install import managed

    ctx = _context(args)
    if args.crx_key and not ctx.system:
        raise ValueError("--crx-key is for --system installs")
    chosen = _chosen(args, ctx)
    chrome_ids = list(args.extension_id or [])
    by_policy = ctx.system and ctx.platform == "linux"  # the extension too, by policy (managed.py)
    if by_policy and args.crx_key:
        chrome_ids.append(managed.key_extension_id(args.crx_key))
    for browser in chosen:
        try:
            where = install.install(browser, args.user_data_dir, ctx, chrome_ids or None)
        except PermissionError as exc:
            print(f"direct-sockets: {browser}: cannot write {exc.filename}: {exc.strerror}" + (" (--system needs root)" if ctx.system else ""),
                  file=sys.stderr)
            return 1
        extra = f" (registry {where.registry_root}\\{where.registry_key})" if where.registry_key else ""
        print(f"{browser}: wrote {where.manifest}{extra}")
    if by_policy:
        for line in managed.deploy_for_system(chosen, ctx.root, args.crx_key):
            print(line)
    return 0 if chosen else 1


def _user_files() -> list[tuple[str, list[Path]]]:
    """What the host keeps for this user besides its registration: what each is, and its paths."""
    store = paths.permissions_file()
    return [
        ("the permission store (your grants)", sorted(store.parent.glob(f"{store.name}*")) if store.parent.is_dir() else []),
        ("the per-site TLS server certificates", [paths.server_certificates_dir()]),
        ("the host's logs", [paths.log_dir()]),
    ]


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def cmd_managed(args: argparse.Namespace) -> int:
    from .install import managed

    if args.family == "firefox":
        policy_dir = args.policies_dir or managed.firefox_policy_dir(args.browser)
        if args.remove:
            removed = managed.remove_firefox(policy_dir, install.extension_ids().gecko)
            print("removed from " + ", ".join(map(str, removed)) if removed else f"nothing of ours in {policy_dir}")
            return 0
        done = managed.deploy_firefox(args.out, policy_dir, args.xpi, args.signed)
        print("\n".join(f"wrote {p}" for p in done.written))
        print(f"{args.browser} installs {done.extension_id} at its next start, and keeps it.")
        return 0
    policy_dir = args.policies_dir or managed.chromium_policy_dir(args.browser)
    if args.remove:
        removed = managed.remove_chromium(args.browser, policy_dir)
        print("removed " + ", ".join(map(str, removed)) if removed else f"nothing of ours in {policy_dir}")
        return 0
    if args.key is None:
        raise ValueError("name the signing key with --key KEY.pem (made there if it does not exist; keep it: it is the extension's ID)")
    done = managed.deploy_chromium(args.browser, args.key, args.out, policy_dir)
    print("\n".join(f"wrote {p}" for p in done.written))
    print(f"extension ID {done.extension_id}: let the host answer it with\n"
          f"  direct-sockets install --system --browser {args.browser} --extension-id {done.extension_id}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    ctx = _context(args)
    every = [b.name for b in browsers.BROWSERS if args.user_data_dir is None or b.family == "chromium"]
    for browser in args.browser or every:
        removed = install.uninstall(browser, args.user_data_dir, ctx)
        if removed or args.browser:
            print(f"{browser}: " + (", ".join(removed) if removed else "nothing installed"))
    if ctx.system and ctx.platform == "linux":  # what install --system forced by policy
        from .install import managed

        for path in managed.remove_for_system(list(args.browser or every), ctx.root, install.extension_ids().gecko):
            print(f"removed the policy install: {path}")

    # Each is named before anything goes; registrations of other browsers and their wrappers
    # are not touched.
    present = [(what, [p for p in found if p.exists()]) for what, found in _user_files()]
    present = [(what, found) for what, found in present if found]
    listed = "; ".join(f"{what}: {', '.join(str(p) for p in found)}" for what, found in present)
    if not args.purge:
        if present:
            print(f"kept (`uninstall --purge` removes them): {listed}")
        return 0
    if not present:
        print("--purge: this user has no grants, certificates or logs to remove")
        return 0
    print(f"--purge removes, for this user: {listed}", flush=True)
    for _, found in present:
        for path in found:
            _remove(path)
            print(f"removed {path}")
    for folder in (paths.wrappers_dir(), paths.data_dir()):  # gone too, if nothing else is left
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .install import doctor

    ctx = _context(args)
    chosen = _chosen(args, ctx)
    ok = bool(chosen)
    for browser in chosen:
        for line, good in doctor.check(browser, args.user_data_dir, ctx, args.extension_id):
            ok &= good
            print(f"[{'ok' if good else 'FAIL'}] {browser}: {line}")
    line, good = doctor.policy_report()
    ok &= good
    print(f"[{'ok' if good else 'FAIL'}] {line}")
    return 0 if ok else 1


def cmd_extension_path(args: argparse.Namespace) -> int:
    from . import resources

    print(resources.extension_dir())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import server as demo_server

    return demo_server.run(args.http_port, args.echo_port, args.grant, paths.permissions_file())


def cmd_pack(args: argparse.Namespace) -> int:
    from .install import pack

    for path in pack.pack(args.out, args.extension_dir):
        print(f"wrote {path}")
    return 0


def _port(text: str) -> int:
    """An argparse type: a TCP/UDP port number a socket can take."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {port}")
    return port


def _chrome_id(text: str) -> str:
    """An argparse type: a Chromium extension ID."""
    try:
        return install.checked_chrome_ids([text])[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tls_fetch(destination: str, server_name: str | None, as_json: bool) -> int:
    """The chain as the server sends it, unverified, with the fingerprints to compare and the
    pins a page can put in `pinnedCertificates`."""
    from .sockets import tls

    host, port = parse_host_port(destination)
    if port == "*":
        raise ValueError("tls fetch needs a port")
    try:
        chain = tls.fetch_chain(host, port, server_name)
    except (OSError, tls.TlsFailed) as exc:
        print(f"direct-sockets: {destination}: {exc}", file=sys.stderr)
        return 1
    described = [tls.describe(der) for der in chain]
    if as_json:
        print(json.dumps({"destination": destination, "chain": described}, indent=2))
        return 0
    print(f"{destination}: {len(chain)} certificate(s), as sent (not verified)")
    for index, item in enumerate(described):
        print(f"[{index}] subject: {item['subject']}")
        print(f"    issuer: {item['issuer']}")
        print(f"    valid: {item['notBefore']} to {item['notAfter']}")
        print(f"    sha256 fingerprint: {item['sha256Fingerprint']}")
        print(f"    pin (pinnedCertificates): {item['spkiSha256']}")
    return 0


def cmd_tls(args: argparse.Namespace) -> int:
    from .sockets.server_certs import ServerCertificates

    if args.action == "fetch":
        return _tls_fetch(args.destination, args.server_name, args.json)
    certificates = ServerCertificates(paths.server_certificates_dir())
    if args.rotate:
        certificates.rotate(normalize_origin(args.rotate))
    if args.remove:
        if not certificates.remove(normalize_origin(args.remove)):
            print(f"direct-sockets: no server certificate for {args.remove}", file=sys.stderr)
            return 1
    rows = [{"origin": c.origin, **c.details} for c in certificates.list()]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no server certificates")
    for row in rows if not args.json else []:
        print(f"{row['origin']}\n  sha256 {row['sha256Fingerprint']}\n  key    {row['spkiSha256']}\n  valid  {row['notBefore']} to {row['notAfter']}")
    return 0


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
        p.add_argument("--browser", action="append", choices=install.BROWSERS,
                       help="repeatable; default: every browser found here (uninstall: every browser)")
        p.add_argument("--user-data-dir", type=Path, help="a Chromium-family profile directory (NativeMessagingHosts/ inside it)")
        p.add_argument("--system", action="store_true", help="for every user of this machine (needs root)")
        p.add_argument("--root", type=Path, help="with --system: take the system's folders under this one (tests, staging)")
        if name == "uninstall":
            p.add_argument("--purge", action="store_true",
                           help="also remove this user's grants, TLS server certificates and logs (it says which first)")
        if name in ("install", "doctor"):
            p.add_argument("--extension-id", action="append", type=_chrome_id, metavar="ID",
                           help="repeatable: the Chromium-family extension ID(s) the host answers (a store's, or a "
                                "managed CRX's); default: the unpacked extension's own")
        if name == "install":
            p.add_argument("--crx-key", type=Path, metavar="KEY.pem",
                           help="with --system: also force the extension on Chromium-family browsers, as a CRX signed "
                                "with this key (made if missing); the host answers its ID")
        p.set_defaults(func=func)

    ext = sub.add_parser("extension-path", help="print the folder to load as an unpacked extension")
    ext.set_defaults(func=cmd_extension_path)

    managed_parser = sub.add_parser("managed", help="install the extension by the browser's policy: it stays, with no store and no developer mode")
    msub = managed_parser.add_subparsers(dest="family", required=True)
    m_firefox = msub.add_parser("firefox", help="policies.json forcing the xpi (Firefox ESR, Developer Edition, Nightly; a signed xpi elsewhere)")
    m_firefox.add_argument("--browser", default="firefox", choices=["firefox", "librewolf", "waterfox"])
    m_firefox.add_argument("--xpi", type=Path, help="the xpi to force (default: the one `pack` makes)")
    m_firefox.add_argument("--signed", action="store_true", help="the xpi is signed by addons.mozilla.org: leave the signature check on")
    m_chromium = msub.add_parser("chromium", help="a CRX3 signed with your key, its update manifest, and ExtensionInstallForcelist")
    m_chromium.add_argument("--browser", default="chromium", choices=[b.name for b in browsers.BROWSERS if b.family == "chromium"])
    m_chromium.add_argument("--key", type=Path, metavar="KEY.pem", help="your RSA signing key, PKCS#8 PEM (made if missing)")
    for p in (m_firefox, m_chromium):
        p.add_argument("--out", type=Path, default=Path("/usr/local/lib/direct-sockets/extension"),
                       help="where the package goes: a folder every user can read and only root can change (default: %(default)s)")
        p.add_argument("--policies-dir", type=Path, help="the policy folder (default: the browser's own on Linux)")
        p.add_argument("--remove", action="store_true", help="take our entry out of the policy instead")
        p.set_defaults(func=cmd_managed)

    demo = sub.add_parser("demo", help="serve the demo page and its echo services on 127.0.0.1")
    demo.add_argument("--http-port", type=_port, default=8000)
    demo.add_argument("--echo-port", type=_port, default=7777)
    demo.add_argument("--grant", action="store_true", help="allow the demo's destinations ahead, rather than be asked")
    demo.set_defaults(func=cmd_demo)

    pack_parser = sub.add_parser("pack", help="build the Chrome zip and the Firefox xpi of the extension")
    pack_parser.add_argument("--out", type=Path, default=Path("dist"), help="where to write them (default: dist/)")
    pack_parser.add_argument("--extension-dir", type=Path, help="pack this folder (default: the extension installed with the package)")
    pack_parser.set_defaults(func=cmd_pack)

    cli_permissions.add_parser(sub)

    tls_parser = sub.add_parser("tls", help="TLS: look at a server's certificates; list and rotate the per-site server certificates")
    tsub = tls_parser.add_subparsers(dest="action", required=True)
    t_fetch = tsub.add_parser("fetch", help="print a server's certificate chain and the pins for pinnedCertificates")
    t_fetch.add_argument("destination", metavar="HOST:PORT")
    t_fetch.add_argument("--server-name", help="the name to send (SNI); default: HOST")
    t_fetch.add_argument("--json", action="store_true")
    t_certs = tsub.add_parser("certs", help="list the certificates TLS server sockets serve, per site")
    t_certs.add_argument("--rotate", metavar="ORIGIN", help="replace this site's key and certificate")
    t_certs.add_argument("--remove", metavar="ORIGIN", help="delete this site's key and certificate")
    t_certs.add_argument("--json", action="store_true")
    tls_parser.set_defaults(func=cmd_tls)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["native-host"]:
        # Before anything else can print: from here on only the protocol reaches the browser.
        _PROTOCOL_FDS.extend(stdio.reserve())
    args = build_parser().parse_args(argv)
    from .resources import ResourceMissing

    try:
        return args.func(args)
    except (ValueError, ResourceMissing) as exc:
        print(f"direct-sockets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
