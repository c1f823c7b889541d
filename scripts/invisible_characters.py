#!/usr/bin/env python3
"""Print the table of characters the server never writes raw to a terminal.

The table is generated once, from the Unicode data of the Python that runs
this script, and pasted into ocpp_mock_server.py (``_INVISIBLE_RANGES``), so
that the server escapes the same characters on every Python it runs on
(``unicodedata`` at run time would follow each Python's own Unicode
version).  It holds:

- the Bidi_Control set (Unicode's PropList.txt: 12 characters);
- every format character (general category Cf) but U+200D ZERO WIDTH JOINER,
  which joins emoji and is kept;
- the line and paragraph separators (Zl, Zp: U+2028, U+2029).

C0, DEL, C1 and lone surrogates are escaped by the server on their own.
Run with the newest Python at hand, and paste.  ``--check`` exits 1 when the
module's table lacks a character this Python's Unicode data puts in it (or,
with the same Unicode version, when the two differ); the test suite runs it.
"""

import ast
import re
import sys
import unicodedata
from pathlib import Path

# PropList.txt, Bidi_Control: not exposed by unicodedata.
BIDI_CONTROL = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
KEPT = {0x200D}  # ZERO WIDTH JOINER: emoji sequences need it
MODULE = Path(__file__).resolve().parent.parent / "ocpp_mock_server.py"


def invisible_code_points() -> list:
    """Every code point of the table, sorted."""
    points = set(BIDI_CONTROL)
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in ("Cf", "Zl", "Zp"):
            points.add(code)
    return sorted(points - KEPT - set(range(0xD800, 0xE000)))


def ranges(points: list) -> list:
    """Consecutive code points as (first, last) pairs."""
    result: list = []
    for code in points:
        if result and result[-1][1] == code - 1:
            result[-1] = (result[-1][0], code)
        else:
            result.append((code, code))
    return result


def table_text() -> str:
    """The Python source of the table, as it stands in the module."""
    pairs = ["(0x{:04X}, 0x{:04X})".format(*pair) for pair in ranges(invisible_code_points())]
    lines, line = [], "   "
    for pair in pairs:
        if len(line) + len(pair) + 2 > 100:
            lines.append(line)
            line = "   "
        line += " " + pair + ","
    lines.append(line)
    return "_INVISIBLE_RANGES = (  # Unicode {}: scripts/invisible_characters.py\n{}\n)".format(
        unicodedata.unidata_version,
        "\n".join(lines),
    )


def module_table() -> str:
    match = re.search(
        r"^_INVISIBLE_RANGES = \(.*?^\)",
        MODULE.read_text(encoding="utf-8"),
        re.MULTILINE | re.DOTALL,
    )
    return match.group(0) if match else ""


def check() -> int:
    """0 when the module's table holds every code point of this Python's table (the same table
    when its Unicode version is the module's), else 1 with what to paste."""
    text = module_table()
    pairs = ast.literal_eval(text.split("=", 1)[1].strip()) if text else ()
    in_module = {code for first, last in pairs for code in range(first, last + 1)}
    missing = [code for code in invisible_code_points() if code not in in_module]
    same_version = f"Unicode {unicodedata.unidata_version}:" in text
    if missing or (same_version and text != table_text()):
        print(
            "the module's _INVISIBLE_RANGES lacks {}; paste:\n{}".format(
                ", ".join(f"U+{code:04X}" for code in missing[:20]) or "nothing", table_text()
            )
        )
        return 1
    return 0


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    print(table_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
