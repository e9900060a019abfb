"""A native host that is the real one with other limits: it starts the real host's wrapper and
copies every byte both ways, except the host's hello, whose `limits` it changes as told.

For the browser tests of what the extension does with the limits a host announces (a host that
sends none, or odd ones): the browser, the extension and the host are all real; only the one
message is rewritten on its way. Usage (as a native-messaging wrapper runs it):
    python hello_shim.py CHANGE REAL_WRAPPER [browser arguments...]
CHANGE is JSON: {"drop": true} removes `limits`; {"set": {name: value}} changes some of them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

HEADER = struct.Struct("=I")  # native byte order, as the browsers write it


def rewrite(message: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    if message.get("type") != "hello":
        return message
    if change.get("drop"):
        message.pop("limits", None)
    else:
        message["limits"] = {**message.get("limits", {}), **change.get("set", {})}
    return message


def read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main() -> None:
    change = json.loads(sys.argv[1])
    host = subprocess.Popen([sys.argv[2], *sys.argv[3:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert host.stdin is not None and host.stdout is not None
    host_in, host_out = host.stdin, host.stdout

    def to_host() -> None:  # the browser's bytes, as they come
        try:
            while chunk := os.read(0, 65536):
                host_in.write(chunk)
                host_in.flush()
        finally:
            host_in.close()

    threading.Thread(target=to_host, daemon=True).start()
    out = sys.stdout.buffer
    while (header := read_exactly(host_out, HEADER.size)) is not None:
        body = read_exactly(host_out, HEADER.unpack(header)[0])
        if body is None:
            break
        message = json.loads(body)
        if message.get("type") == "hello":
            body = json.dumps(rewrite(message, change)).encode()
        out.write(HEADER.pack(len(body)) + body)
        out.flush()
    host.wait()


if __name__ == "__main__":
    main()
