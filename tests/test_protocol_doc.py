"""docs/PROTOCOL.md tells the truth about the error codes.

The extension and anyone writing another client read the codes from the document, the host
sends them from `errors.Code`: the two must be one list. The table is read from the Markdown,
the codes the host sends are found in its source (every `Code.X` it names), so a code added,
renumbered or sent without a line in the document fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from direct_sockets.protocol.errors import Code

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PROTOCOL.md"
HOST = ROOT / "host" / "direct_sockets"

# A row of an error-code table: | 133 | `WINDOW_EXCEEDED` | meaning |
ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([A-Z_0-9]+)`\s*\|")
# A code named in prose: "error 121", "error 200", "code 200", "`write_failed` 201".
PROSE = re.compile(r"\b(?:error|code|`write_failed`)\s+(\d{3})\b")
# A code named with its name in prose: "error 133 (`WINDOW_EXCEEDED`)", "200 `NotAllowedError`".
NAMED = re.compile(r"\b(\d{3})\)?[ (]*`(\w+)`")
# The DOMException each socket outcome carries (errors.py, PAGE_MESSAGE's codes).
DOM_EXCEPTION = {"NotAllowedError": Code.NOT_ALLOWED, "NetworkError": Code.NETWORK_ERROR}


def documented() -> dict[int, str]:
    """Every row of the document's error-code table(s), number to name; a number twice fails."""
    table: dict[int, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            number, name = int(match[1]), match[2]
            assert number not in table, f"PROTOCOL.md lists {number} twice"
            table[number] = name
    assert table, "no error-code table found in PROTOCOL.md"
    return table


def sent_by_host() -> dict[str, list[str]]:
    """Every `Code.X` the host's modules name (a code it can send), with where."""
    used: dict[str, list[str]] = {}
    for path in sorted(HOST.rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "protocol":
            continue  # the definitions themselves
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Code":
                used.setdefault(node.attr, []).append(f"{path.relative_to(HOST)}:{node.lineno}")
    return used


def test_every_documented_code_is_the_hosts() -> None:
    for number, name in documented().items():
        assert name in Code.__members__, f"PROTOCOL.md documents {number} `{name}`, which errors.Code does not have"
        assert Code[name] == number, f"PROTOCOL.md documents `{name}` as {number}, errors.Code says {int(Code[name])}"


def test_every_code_is_documented() -> None:
    table = documented()
    missing = [f"{int(code)} {code.name}" for code in Code if table.get(int(code)) != code.name]
    assert not missing, f"errors.Code members missing from PROTOCOL.md's table: {missing}"


def test_every_code_the_host_sends_is_documented() -> None:
    table = documented()
    used = sent_by_host()
    assert len(used) >= 10, f"the scan found too few codes to be looking at the host: {sorted(used)}"
    for name, where in used.items():
        assert name in Code.__members__, f"{where}: Code.{name} does not exist"
        assert table.get(int(Code[name])) == name, f"{where}: sends Code.{name} ({int(Code[name])}), which PROTOCOL.md does not document"


def test_codes_named_in_prose_exist() -> None:
    """A number in the text ("error 121") names a code of the table (it cannot say whether the
    text picked the right one: that is for the tests of each message)."""
    text = DOC.read_text(encoding="utf-8")
    named = {int(n) for n in PROSE.findall(text)}
    assert named, "found no codes in the prose: the pattern is broken"
    unknown = sorted(named - {int(c) for c in Code})
    assert not unknown, f"PROTOCOL.md names codes errors.Code does not have: {unknown}"


def test_codes_named_with_a_name_in_prose_match() -> None:
    """Where the text gives a number and a name together, they are the same code."""
    pairs = NAMED.findall(DOC.read_text(encoding="utf-8"))
    checked = 0
    for number, name in pairs:
        expected = Code[name] if name in Code.__members__ else DOM_EXCEPTION.get(name)
        if expected is not None:
            assert int(number) == expected, f"PROTOCOL.md says {number} `{name}`, errors.Code says {int(expected)}"
            checked += 1
    assert checked >= 3, f"found too few number-and-name pairs: {pairs}"
