"""Fixed-width text tables: the one formatter of the tables the commands print (cnnlab cost,
gradcheck, bench, data profile, evaluate).

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
