"""What a report contains, whatever its format: a Document of Sections of blocks, and the cells of its tables.

    doc = Document("cnnlab run report: x", "model lenet5 · dataset mnist", sections=[
        Section("result", "Result", [KeyValues([("test accuracy", "98.10%")]), Note("no bench.json yet")]),
        Section("runs", "Runs", [Table([("run", "run", "text"), ("acc", "test acc %", "num")],
                                       [{"run": "x", "acc": pct(0.981)}])]),
    ], missing=[], source="runs/x")

The blocks are Note, Pre (preformatted text), KeyValues (two columns), Image (a matplotlib Figure
with a caption) and Table (columns of (key, title, "num" | "text"); rows of key -> Cell or plain
value). `cnnlab.workflows.report.html` and `.markdown` render a Document; nothing here knows
either format. The cell formatters (`pct`, `fixed`, `si`, `count`, `seconds`, `time_to_accuracy`)
turn a number (or None, NaN, a missing key) into the text shown and the value a column sorts by,
'-' when there is none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str
    sort: object = None  # the value a sortable column sorts by (None: sorts last)


@dataclass
class Table:
    columns: list  # (key, title, "num" | "text")
    rows: list  # dicts key -> Cell (or plain str)
    id: str | None = None
    sortable: bool = True
    foot: list = field(default_factory=list)  # rows that stay at the bottom (totals)
    row_ids: list | None = None  # a data-run attribute per row


@dataclass
class KeyValues:
    rows: list  # (key, value text)


@dataclass
class Image:
    name: str
    fig: object
    caption: str
    alt: str


@dataclass
class Note:
    text: str


@dataclass
class Pre:
    text: str


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list
    missing: list  # notes repeated at the top: what this report could not show
    source: str


# ---- cells ----------------------------------------------------------------------------------

def number(v):
    """v when it is a finite int or float (not a bool), else None."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def pct(v, digits=2) -> Cell:
    v = number(v)
    return Cell("-" if v is None else f"{100 * v:.{digits}f}", None if v is None else 100 * v)


def fixed(v, digits=4, unit="") -> Cell:
    v = number(v)
    return Cell("-" if v is None else f"{v:.{digits}f}{unit}", v)


def si(v) -> Cell:
    v = number(v)
    if v is None:
        return Cell("-", None)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return Cell(f"{v / div:.2f}{unit}", v)
    return Cell(f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}", v)


def count(v) -> Cell:
    v = number(v)
    return Cell("-" if v is None else f"{int(v):,}", v)


def seconds(v) -> Cell:
    v = number(v)
    return Cell("-" if v is None else f"{v:.1f}", v)


def time_to_accuracy(value) -> Cell:
    """summary.json's `time_to_accuracy` (seconds, or a mapping such as {target: seconds} or
    {"target": ..., "seconds": ...}); '-' when the run did not record one."""
    if value is None:
        return Cell("-", None)
    if number(value) is not None:
        return Cell(f"{value:.1f} s", value)
    if isinstance(value, dict):
        if number(value.get("seconds")) is not None:
            target = number(value.get("target") or value.get("accuracy"))
            at = f" to {100 * target if target <= 1 else target:g}%" if target is not None else ""
            return Cell(f"{value['seconds']:.1f} s{at}", value["seconds"])
        parts = []
        for k, v in value.items():
            if number(v) is not None:
                try:
                    kf = float(k)
                    k = f"{100 * kf:g}%" if kf <= 1 else f"{kf:g}%"
                except (TypeError, ValueError):
                    pass
                parts.append((k, v))
        if parts:
            return Cell(", ".join(f"{k}: {v:.1f} s" for k, v in parts), parts[0][1])
        return Cell("-" if not any(v is not None for v in value.values()) else "not reached", None)
    return Cell(str(value), None)


def with_unit(cell: Cell, unit: str) -> str:
    """The cell's text with a unit, or '-' alone."""
    return cell.text if cell.sort is None else f"{cell.text}{unit}"


def text(v) -> str:
    """Any value as a table shows it: '-' for None, 6 significant digits for a float, JSON for containers."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v) if v else ("{}" if isinstance(v, dict) else "[]")
    return str(v)


def as_cell(c) -> Cell:
    """A table row's value as a Cell (a plain value has no sort value)."""
    return c if isinstance(c, Cell) else Cell(text(c), None)
