"""The bulk WebSocket's control protocol (schemas/bulk/, PROTOCOL.md "The bulk path"): what the
page may send there is checked against its schema and anything else ends that socket with the
documented code, never the host; what the host sends there matches its schema."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from direct_sockets.protocol.bulk_control import MAX_CONTROL, decode_control
from direct_sockets.protocol.errors import Code, ProtocolError
from direct_sockets.protocol.validation import check_bulk_inbound, check_bulk_outbound, is_bulk_secret
from tests.support.hostproc import HostProcess
from tests.support.servers import TcpServer
from tests.test_bulk import attach, open_bulk

# What the page's API and the extension's bulk frame send (page-api.js `directPost`, bulk.js).
PAGE_SENDS = [
    {"type": "read", "bytes": 65536},
    {"type": "shutdown", "abort": False},
    {"type": "shutdown", "abort": True},
    {"type": "shutdown"},
    {"type": "cancel"},
]

# Text the page must not send, and the code each ends its socket with (as on native messaging).
BAD = [
    pytest.param(b'{"type": "read", "bytes": 1, "pad": "' + b"x" * MAX_CONTROL + b'"}', Code.FRAME_TOO_LARGE, id="oversized"),
    pytest.param(b"\xff\xfe", Code.INVALID_UTF8, id="not-utf8"),
    pytest.param(b"read 1024", Code.INVALID_JSON, id="not-json"),
    pytest.param(b"[" * 1000 + b"]" * 24, Code.INVALID_JSON, id="deeply-nested"),  # RecursionError, caught
    pytest.param(b'["read", 1024]', Code.NOT_AN_OBJECT, id="not-an-object"),
    pytest.param(b'{"type": "tcp_open", "remoteAddress": "127.0.0.1", "remotePort": 1}', Code.UNKNOWN_TYPE, id="native-only-type"),
    pytest.param(b'{"bytes": 1024}', Code.UNKNOWN_TYPE, id="no-type"),
    pytest.param(b'{"type": "read", "bytes": 0}', Code.SCHEMA_VIOLATION, id="read-zero"),
    pytest.param(b'{"type": "read", "bytes": "1024"}', Code.SCHEMA_VIOLATION, id="read-string"),
    pytest.param(b'{"type": "read", "bytes": 67108865}', Code.SCHEMA_VIOLATION, id="read-over-64MiB"),
    pytest.param(b'{"type": "read", "id": 2, "bytes": 1024}', Code.SCHEMA_VIOLATION, id="names-a-socket"),
    pytest.param(b'{"type": "shutdown", "abort": "yes"}', Code.SCHEMA_VIOLATION, id="abort-not-boolean"),
    pytest.param(b'{"type": "cancel", "now": true}', Code.SCHEMA_VIOLATION, id="cancel-extra"),
]


@pytest.mark.parametrize("message", PAGE_SENDS)
def test_what_the_page_sends_is_on_schema(message: dict[str, Any]) -> None:
    assert decode_control(json.dumps(message).encode()) == message


@pytest.mark.parametrize(("text", "code"), BAD)
def test_off_schema_text_gets_its_code(text: bytes, code: Code) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_control(text)
    assert raised.value.code == code, raised.value.detail
    assert raised.value.detail.startswith("bulk path: ")


def test_the_directions_do_not_mix() -> None:
    """Host messages are not page messages, and the other way round."""
    with pytest.raises(ProtocolError) as raised:
        check_bulk_inbound({"type": "ack", "bytes": 1})
    assert raised.value.code == Code.UNKNOWN_TYPE
    with pytest.raises(ProtocolError) as raised:
        check_bulk_outbound({"type": "read", "id": 1, "bytes": 1})
    assert raised.value.code == Code.UNKNOWN_TYPE
    # What the page may know of a failure, and not the reason or the code.
    check_bulk_outbound({"type": "error", "id": 1, "name": "NetworkError", "message": "Network error."})
    for extra in ({"detail": "connection reset"}, {"code": 201}):
        with pytest.raises(ProtocolError):
            check_bulk_outbound({"type": "error", "id": 1, "name": "NetworkError", "message": "Network error.", **extra})


def test_the_secret_has_one_form() -> None:
    token = secrets.token_urlsafe(32)
    assert is_bulk_secret(token)
    for wrong in (token[:-1], token + "A", token[:-1] + "=", token[:-1] + "é", token[:-1] + "/", "", '"' + token[:41] + '"'):
        assert not is_bulk_secret(wrong), wrong


@pytest.mark.parametrize(("text", "code"), BAD)
def test_off_schema_text_ends_only_its_socket(
    host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer, text: bytes, code: Code,
) -> None:
    """Through the real host: the socket ends with the code (the background's copy has it and
    the reason; the page's WebSocket only what a page may know), and the host goes on."""
    with attach(open_bulk(host, isolated_env, echo_server.port)) as ws:
        ws.send(text, text=True)
        error = json.loads(ws.recv(timeout=10))  # checked against bulk/out/error.json by `attach`
        assert error == {"type": "error", "id": 1, "name": "NetworkError", "message": "Network error."}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    told = host.expect("error", id=1)
    assert told["bulk"] is True and told["code"] == code and told["detail"].startswith("bulk path: "), told
    # The host still serves: another socket moves bytes on the bulk path.
    offer = open_bulk(host, isolated_env, echo_server.port, sid=2)
    offer["id"] = 2
    with attach(offer) as ws:
        ws.send(json.dumps({"type": "read", "bytes": 64}))
        ws.send(b"still here")
        seen = set()
        received = b""
        while received != b"still here":
            message = ws.recv(timeout=10)
            if isinstance(message, bytes):
                received += message
            else:
                seen.add(json.loads(message)["type"])
        assert seen <= {"ack"}


def test_every_control_message_the_host_sends_is_on_schema(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    """One socket's whole life on its WebSocket, each text message checked against
    schemas/bulk/out/ (by `attach`'s client), until every kind has been seen."""
    seen: list[str] = []
    with attach(open_bulk(host, isolated_env, echo_server.port)) as ws:
        seen.append("attached")  # `attach` checked it
        ws.send(json.dumps({"type": "read", "bytes": 1024}))
        ws.send(b"ping")
        ws.send(json.dumps({"type": "shutdown", "abort": False}))
        while "closed" not in seen:
            message = ws.recv(timeout=10)
            if isinstance(message, str):
                seen.append(json.loads(message)["type"])
    host.expect("closed", id=1)
    offer = open_bulk(host, isolated_env, echo_server.port, sid=2)
    offer["id"] = 2
    with attach(offer) as ws:
        ws.send(json.dumps({"type": "read", "bytes": 0}))  # a fault, for an `error`
        seen.append(json.loads(ws.recv(timeout=10))["type"])
    assert sorted(set(seen)) == ["ack", "attached", "closed", "eof", "error", "fin_sent"], seen


def test_an_empty_binary_message_is_the_pages_fault_not_an_internal_error(host: HostProcess, isolated_env: dict[str, str], echo_server: TcpServer) -> None:
    """A binary message is bytes to send, at least one (as `data` on native messaging): an empty
    one ends its socket with 111, even queued behind bytes still being written, where it once
    reached the state machine as a write of nothing and failed the socket as the host's own bug."""
    with attach(open_bulk(host, isolated_env, echo_server.port)) as ws:
        ws.send(bytes(1 << 20))
        ws.send(b"")
        told = host.recv(timeout=15)
        while told is not None and told["type"] == "stats":  # byte counts for the popup, about once a second
            told = host.recv(timeout=15)
    assert told is not None and told["type"] == "error" and told["code"] == Code.SCHEMA_VIOLATION and "empty binary message" in told["detail"], told
    assert "Traceback" not in host.stderr.decode(errors="replace")


def test_a_text_seen_before_is_answered_alike() -> None:
    """The page's frequent texts are checked once and remembered: a remembered answer is the
    same as a fresh one, and cannot be changed by whoever received it; errors are raised again."""
    read = b'{"type":"read","bytes":65536}'
    first = decode_control(read)
    first["bytes"] = 1
    assert decode_control(read) == {"type": "read", "bytes": 65536}
    for _ in range(2):
        with pytest.raises(ProtocolError) as raised:
            decode_control(b'{"type":"read","bytes":0}')
        assert raised.value.code == Code.SCHEMA_VIOLATION
