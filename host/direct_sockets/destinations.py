"""Canonical forms of origins, host names and ports, so that a grant matches exactly what the
user meant and nothing more."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidDestination(ValueError):
    pass


def normalize_origin(text: str) -> str:
    """`https://Example.COM:443/` -> `https://example.com`. Opaque origins are refused."""
    text = text.strip()
    if text == "null" or "://" not in text:
        raise InvalidDestination(f"not a tuple origin: {text!r}")
    parts = urlsplit(text)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidDestination(f"origin must be http or https with a host: {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidDestination(f"an origin has no path, query or credentials: {text!r}")
    host = normalize_host(parts.hostname)
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


def normalize_host(text: str) -> str:
    """IP literals in their canonical text form, names lower-cased without a trailing dot."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not name or len(name) > 253 or any(c.isspace() or c in "/*@[]" for c in name):
        raise InvalidDestination(f"not a host name or IP address: {text!r}")
    return name


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
