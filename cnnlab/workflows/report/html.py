"""A report Document as one self-contained HTML page.

    text = render_html(doc)          # the whole file: <!DOCTYPE html> ... </html>
    cell = html_block(Table(...))    # one block, e.g. a notebook's table (`cnnlab.api.Comparison`)

The page needs nothing else to be read: images are inline `data:` PNGs, and the style and the
table-sorting script (assets/report.css and assets/report.js of this package, read with
importlib.resources) are written into it, so it asks for nothing over a network. Numeric cells
carry their sort value in `data-value`; a sortable table's headers are buttons with `aria-sort`.
"""

from __future__ import annotations

import base64
import html
from functools import lru_cache
from importlib.resources import files

from cnnlab import __version__
from cnnlab.workflows.report.document import Document, Image, KeyValues, Note, Pre, Table, as_cell
from cnnlab.workflows.report.figures import png_bytes


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of assets/<name> (report.css, report.js)."""
    return (files("cnnlab.workflows.report") / "assets" / name).read_text(encoding="utf-8")


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _table(b: Table) -> str:
    cls = ' class="sortable"' if b.sortable else ""
    tid = f' id="{_esc(b.id)}"' if b.id else ""
    head = []
    for key, title, typ in b.columns:
        num = ' class="num"' if typ == "num" else ""
        if b.sortable:
            head.append(f'<th scope="col" data-key="{_esc(key)}" data-type="{typ}" aria-sort="none"{num}>'
                        f'<button type="button">{_esc(title)}</button></th>')
        else:
            head.append(f'<th scope="col"{num}>{_esc(title)}</th>')
    body = []
    for i, row in enumerate(b.rows):
        attr = f' data-run="{_esc(b.row_ids[i])}"' if b.row_ids else ""
        tds = []
        for key, _, typ in b.columns:
            c = as_cell(row.get(key, "-"))
            num = ' class="num"' if typ == "num" else ""
            val = f' data-value="{c.sort!r}"' if typ == "num" and c.sort is not None else ""
            tds.append(f"<td{num}{val}>{_esc(c.text)}</td>")
        body.append(f"<tr{attr}>{''.join(tds)}</tr>")
    foot = ""
    if b.foot:
        foot = "<tfoot>" + "".join(
            "<tr>" + "".join(f'<td{" class=num" if typ == "num" else ""}>{_esc(as_cell(row.get(key, "")).text)}</td>'
                             for key, _, typ in b.columns) + "</tr>" for row in b.foot) + "</tfoot>"
    return (f'<div class="scroll"><table{cls}{tid}><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody>{foot}</table></div>')


def html_block(b) -> str:
    if isinstance(b, Note):
        return f'<p class="note">{_esc(b.text)}</p>'
    if isinstance(b, Pre):
        return f"<pre>{_esc(b.text)}</pre>"
    if isinstance(b, KeyValues):
        rows = "".join(f"<tr><th scope=\"row\">{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in b.rows)
        return f'<table class="kv"><tbody>{rows}</tbody></table>'
    if isinstance(b, Image):
        data = base64.b64encode(png_bytes(b.fig)).decode()
        w, h = (int(round(v * b.fig.dpi)) for v in b.fig.get_size_inches())
        return (f'<figure id="fig-{_esc(b.name)}"><img src="data:image/png;base64,{data}" width="{w}" height="{h}" '
                f'alt="{_esc(b.alt)}"><figcaption>{_esc(b.caption)}</figcaption></figure>')
    if isinstance(b, Table):
        return _table(b)
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(doc: Document) -> str:
    nav = "".join(f'<a href="#{_esc(s.id)}">{_esc(s.title)}</a>' for s in doc.sections)
    missing = ""
    if doc.missing:
        items = "".join(f"<li>{_esc(m)}</li>" for m in doc.missing)
        missing = f'<div class="note missing"><strong>Not in this report:</strong><ul>{items}</ul></div>'
    body = "".join(f'<section id="{_esc(s.id)}"><h2>{_esc(s.title)}</h2>{"".join(html_block(b) for b in s.blocks)}'
                   f"</section>" for s in doc.sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(doc.title)}</title><link rel=\"icon\" href=\"data:,\"><style>\n{asset('report.css')}</style>"
            "</head>\n"
            f"<body><header><h1>{_esc(doc.title)}</h1><p class=\"sub\">{_esc(doc.subtitle)}</p>"
            f"<nav>{nav}</nav>{missing}</header>\n<main>{body}</main>\n"
            f"<footer>Written by cnnlab {_esc(__version__)} from {_esc(doc.source)}.</footer>\n"
            f"<script>\n{asset('report.js')}</script></body></html>\n")
