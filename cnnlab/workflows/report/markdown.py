"""A report Document as Markdown, its figures written as PNG files beside it.

    text = render_markdown(doc, image_path)   # image_path(name, fig) writes one PNG, returns its relative path

Notes become quotes, key-value blocks and tables become pipe tables (numeric columns right-aligned),
images become links to the PNGs `image_path` wrote, each with its caption in italics below.
"""

from __future__ import annotations

from cnnlab import __version__
from cnnlab.workflows.report.document import Document, Image, KeyValues, Note, Pre, Table, as_cell


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _block(b, image_path) -> list:
    if isinstance(b, Note):
        return [f"> **Note:** {b.text}", ""]
    if isinstance(b, Pre):
        return ["```", b.text, "```", ""]
    if isinstance(b, KeyValues):
        return ["| | |", "|---|---|"] + [f"| **{_md_escape(k)}** | {_md_escape(v)} |" for k, v in b.rows] + [""]
    if isinstance(b, Image):
        return [f"![{b.alt}]({image_path(b.name, b.fig)})", "", f"*{b.caption}*", ""]
    if isinstance(b, Table):
        out = ["| " + " | ".join(_md_escape(t) for _, t, _ in b.columns) + " |",
               "|" + "|".join("---:" if typ == "num" else "---" for _, _, typ in b.columns) + "|"]
        for row in list(b.rows) + list(b.foot):
            out.append("| " + " | ".join(_md_escape(as_cell(row.get(k, "-")).text) for k, _, _ in b.columns) + " |")
        return out + [""]
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(doc: Document, image_path) -> str:
    """Markdown; `image_path(name, fig)` writes one PNG and returns its path relative to the file."""
    out = [f"# {doc.title}", "", doc.subtitle, ""]
    if doc.missing:
        out += ["> **Not in this report:**", ">"] + [f"> - {m}" for m in doc.missing] + [""]
    for s in doc.sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            out += _block(b, image_path)
    out += [f"*Written by cnnlab {__version__} from {doc.source}.*", ""]
    return "\n".join(out)
