"""Fixed-width text tables: the one formatter of the tables the commands print (cnnlab cost,
gradcheck, bench, data profile, evaluate); and sizes as people write them.

    parse_bytes("1MB") -> 1_000_000; parse_bytes("512KiB") -> 524_288   (the one reader of a size)

    format_table(header, rows, align=None, rules=()) -> str

`header` names the columns and `rows` holds one sequence of cells per row (each cell printed with
`str`). Every column is as wide as its widest cell, columns are two spaces apart, a dashed rule
sits under the header and before each row index in `rules` (e.g. a totals row), and trailing
spaces are dropped. `align` is one letter per column, "l" or "r"; without it a cell that reads as
a number (an optional trailing %) is right-aligned and any other cell left-aligned.

    >>> print(format_table(["class", "accuracy"], [["cat", "91.2%"], ["dog", "88.0%"]]))
    class  accuracy
    -----  --------
    cat       91.2%
    dog       88.0%
"""

from __future__ import annotations

import re

from cnnlab.errors import CnnlabError

GAP = "  "


def is_number(text: str) -> bool:
    """Whether a cell reads as a number: '12', '-3.5e-4', '91.2%'."""
    try:
        float(text.rstrip("%"))
        return True
    except ValueError:
        return False


def format_table(header, rows, align: str | None = None, rules=()) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    n = len(cells[0])
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(n)]

    def cell(text, i):
        right = align[i] == "r" if align else is_number(text)
        return text.rjust(widths[i]) if right else text.ljust(widths[i])

    def line(r):
        return GAP.join(cell(c, i) for i, c in enumerate(r[:n])).rstrip()

    rule = GAP.join("-" * w for w in widths)
    out = [line(cells[0]), rule]
    for i, r in enumerate(cells[1:]):
        if i in rules:
            out.append(rule)
        out.append(line(r))
    return "\n".join(out)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$", re.I)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """'1MB' -> 1,000,000; '1MiB' -> 1,048,576; '250000' -> 250,000 bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise CnnlabError(f"bad size '{text}': write a number of bytes with an optional unit, e.g. 1MB, 512KiB, 250000")
    size = int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
    if size < 1:
        raise CnnlabError(f"bad size '{text}': it must be at least 1 byte, e.g. 1MB")
    return size
