"""Canonical forms of origins, host names and ports, so that a grant matches exactly what the
user meant and nothing more."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import idna

DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidDestination(ValueError):
    pass


def normalize_origin(text: str) -> str:
    """`https://Example.COM:443/` -> `https://example.com`. Opaque origins are refused."""
    text = text.strip()
    if text == "null" or "://" not in text:
        raise InvalidDestination(f"not a tuple origin: {text!r}")
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
    except ValueError as exc:  # "http://[::1", an unclosed bracket
        raise InvalidDestination(f"not an origin: {text!r}") from exc
    if parts.scheme not in DEFAULT_PORTS or not hostname:
        raise InvalidDestination(f"origin must be http or https with a host: {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidDestination(f"an origin has no path, query or credentials: {text!r}")
    host = normalize_host(hostname)
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidDestination(f"bad port in origin {text!r}") from exc
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def canonical_ip(text: str) -> IPAddress:
    """The address a literal really names: an IPv4-mapped (`::ffff:127.0.0.1`, `::ffff:7f00:1`)
    or IPv4-compatible (`::7f00:1`) IPv6 address is the IPv4 address inside it, so that a rule
    or a grant written for one spelling holds for all. Raises ValueError for a non-address."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is None:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if 1 < int(address) < 2**32:
            return ipaddress.IPv4Address(int(address))
    return address


# IPv6 prefixes a translator on the network turns into IPv4 (RFC 6052's well-known NAT64
# prefix, RFC 6145's IPv4-translated addresses): the IPv4 address is the last 32 bits, and that
# is where the packet ends up. The local-use NAT64 prefix (RFC 8215) embeds it at a position its
# network chooses, and site-local addresses (deprecated) are whatever a site made of them.
TRANSLATED = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))
UNKNOWN_LOCAL = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


def translated_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 or SIIT translator sends a packet for `address` to, if any."""
    if isinstance(address, ipaddress.IPv6Address) and any(address in net for net in TRANSLATED):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def network_defined(address: IPAddress) -> bool:
    """Whether where `address` leads is up to the local network (local-use NAT64, site-local)."""
    return isinstance(address, ipaddress.IPv6Address) and any(address in net for net in UNKNOWN_LOCAL)


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


def normalize_host(text: str) -> str:
    """One spelling per destination, so that a grant, a policy rule and the prompt all mean the
    same host whatever way the page wrote it.

    IP literals come out in their canonical text form (an IPv4 address inside an IPv6 one
    comes out as the IPv4 address: `canonical_ip`). Names are mapped with UTS-46 (IDNA), as
    a browser's URL parser does: fullwidth letters, other case, ignorable characters (a
    zero-width space, a soft hyphen) and ideographic full stops all give the one name they
    resolve as; non-ASCII labels come out as A-labels (`xn--...`); a trailing dot goes. A name
    whose last label is a number is an IPv4 address in another spelling (`127.1`, `0x7f.1`:
    the resolver reads them so), and comes out as that address."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(canonical_ip(text))
    except ValueError:
        pass
    try:
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidDestination(f"not a host name or IP address: {text!r}") from exc
    mapped = mapped[:-1] if mapped.endswith(".") else mapped
    try:
        return str(canonical_ip(mapped))
    except ValueError:
        pass
    labels = mapped.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return socket.inet_ntoa(socket.inet_aton(mapped))
        except OSError as exc:
            raise InvalidDestination(f"not a host name or IP address: {text!r}") from exc
    try:
        ascii_labels = [label if label.isascii() else idna.alabel(label).decode("ascii") for label in labels]
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidDestination(f"not a host name or IP address: {text!r}") from exc
    name = ".".join(ascii_labels)
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in ascii_labels):
        raise InvalidDestination(f"not a host name or IP address: {text!r}")
    return name


def is_localhost_name(name: str) -> bool:
    """`localhost` and names under it always mean this device (RFC 6761), as browsers treat them."""
    return name == "localhost" or name.endswith(".localhost")


def parse_host_port(text: str, *, wildcard_port: bool = True) -> tuple[str, int | str]:
    """`HOST:PORT`, `[v6]:PORT`; the port may be `*` when allowed."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise InvalidDestination(f"expected [ADDRESS]:PORT, got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise InvalidDestination(f"expected HOST:PORT (IPv6 in brackets), got {text!r}")
    if port_text == "*" and wildcard_port:
        return normalize_host(host), "*"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidDestination(f"port must be 1-65535{' or *' if wildcard_port else ''}: {text!r}")
    return normalize_host(host), int(port_text)


def format_host_port(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
