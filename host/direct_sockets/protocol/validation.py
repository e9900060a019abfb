"""Checks messages against the JSON Schemas in `schemas/`, the single source of truth.

`schemas/in/<type>.json` describes what the extension may send, `schemas/out/<type>.json` what
the host sends back (the tests check every outgoing message against it); `schemas/bulk/` the
same for the text messages on a socket's bulk WebSocket, and the secret that opens one.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from .errors import Code, ProtocolError

SCHEMA_BASE = "https://direct-sockets.invalid/schemas/"


def _schema_files() -> dict[str, dict[str, Any]]:
    root = resources.files(__package__) / "schemas"
    found: dict[str, dict[str, Any]] = {}
    for entry in [root, root / "in", root / "out", root / "bulk", root / "bulk" / "in", root / "bulk" / "out"]:
        for item in entry.iterdir():
            if item.name.endswith(".json"):
                schema = json.loads(item.read_text("utf-8"))
                found[schema["$id"]] = schema
    return found


@cache
def _validators() -> dict[str, dict[str, jsonschema.protocols.Validator]]:
    schemas = _schema_files()
    registry: Registry = Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in schemas.items()
    )
    result: dict[str, dict[str, jsonschema.protocols.Validator]] = {"in": {}, "out": {}, "bulk/in": {}, "bulk/out": {}}
    for uri, schema in schemas.items():
        relative = uri.removeprefix(SCHEMA_BASE)
        direction, _, name = relative.rpartition("/")
        if direction in result:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            result[direction][name.removesuffix(".json")] = cls(schema, registry=registry)
    return result


def inbound_types() -> frozenset[str]:
    return frozenset(_validators()["in"])


MAX_SOCKET_ID = 2**53 - 1


def _socket_id_of(message: dict[str, Any]) -> int | None:
    """The id to name in an error reply: only one that is a valid socket id (an error must be a
    valid message itself, whatever was wrong with what it answers)."""
    value = message.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SOCKET_ID:
        return value
    return None


def _check(direction: str, message: dict[str, Any]) -> str:
    kind = message.get("type")
    validators = _validators()[direction]
    if not isinstance(kind, str) or kind not in validators:
        raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown message type {kind!r}", _socket_id_of(message))
    error = jsonschema.exceptions.best_match(validators[kind].iter_errors(message))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(message)"
        raise ProtocolError(Code.SCHEMA_VIOLATION, f"{kind}: {where}: {error.message}", _socket_id_of(message))
    return kind


def check_inbound(message: dict[str, Any]) -> str:
    """Returns the message type, or raises ProtocolError (UNKNOWN_TYPE or SCHEMA_VIOLATION)."""
    return _check("in", message)


def check_outbound(message: dict[str, Any]) -> str:
    return _check("out", message)


def check_bulk_inbound(message: dict[str, Any]) -> str:
    """A text message the page sent on its socket's bulk WebSocket; as `check_inbound`."""
    return _check("bulk/in", message)


def check_bulk_outbound(message: dict[str, Any]) -> str:
    return _check("bulk/out", message)


def is_bulk_secret(text: str) -> bool:
    """Whether the first message on a bulk WebSocket has the form of a secret (bulk/secret.json)."""
    return _document_validator("bulk/secret.json").is_valid(text)


def is_frame_claim(value: Any) -> bool:
    """Whether the first message from the host's own bulk frame has its form (bulk/frame_claim.json)."""
    return _document_validator("bulk/frame_claim.json").is_valid(value)


class DocumentInvalid(ValueError):
    """A file (the permission store, the administrator's policy) that is not what its schema says."""


@cache
def _document_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((resources.files(__package__) / "schemas" / name).read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


def load_document(raw: bytes, schema_name: str) -> Any:
    """Decodes a JSON file and checks it against `schemas/<schema_name>`; DocumentInvalid says
    what is wrong and where."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DocumentInvalid(f"not JSON: {exc}") from exc
    error = jsonschema.exceptions.best_match(_document_validator(schema_name).iter_errors(data))
    if error is not None:
        raise DocumentInvalid(f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}")
    return data
