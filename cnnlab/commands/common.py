"""Small helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys


def add_json_flag(parser):
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")


def print_json(data):
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def format_table(header, rows) -> str:
    """A plain fixed-width table: right-aligned numbers, left-aligned text."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _numeric(s):
    try:
        float(s.rstrip("%"))
        return True
    except ValueError:
        return False


def parse_shape(text: str):
    """'3x32x32' -> (3, 32, 32); the one parser of every command's --input."""
    from cnnlab.errors import CnnlabError

    try:
        shape = tuple(int(v) for v in str(text).lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CnnlabError(f"bad input shape '{text}': write it as CxHxW, e.g. 3x32x32")
    return shape
