"""Reports: one self-contained document for a run, or a comparison of several runs or studies.

    rep = report(["runs/lenet5"])                       # runs/lenet5/report.html
    rep = report(["runs/a", "runs/b", "runs/study-x"])  # ./comparison.html: a sortable table, curves
    rep = report(["runs/lenet5"], fmt="md")             # runs/lenet5/report.md, PNGs in runs/lenet5/plots/

One run: its result on the test split, curves, the first layer's filters, the confusion matrix
and per-class accuracy, the most confident mistakes, the per-layer cost table (params, MACs,
activation bytes, accelerator cycles and energy), score.json and bench.json when present, the
configuration and the machine it trained on. Several runs (a study directory counts as all of
its runs): one sortable table (model, engine, device, best validation accuracy, test accuracy and
loss, training time, time to accuracy, latency, parameters, MACs, score), a mean ± std table per
experiment for studies, the machines used, bench results per device, and overlaid curves.

The HTML file needs nothing else to be read: images are inline `data:` PNGs, the style and the
small table-sorting script are written into it, and it asks for nothing over a network. Whatever
a run directory lacks (no metrics yet, a crashed run, no convolution layer, no test data at hand)
becomes a note in the place where it would have been, and the rest of the report is written.
The Markdown form (`fmt="md"`) has the same content, with the PNGs written beside it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab import __version__
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text
from cnnlab.dirs import PLOT_FILES, RunDir
from cnnlab.workflows.plots import RunFiles, compare_figures, png_bytes, read_run, run_figures, save_png

FORMATS = ("html", "md")
COMPARISON_STEM = "comparison"  # the default file of a comparison: ./comparison.html or .md


# ---- a small document model, rendered as HTML or Markdown ---------------------------------------

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


@dataclass
class Report:
    """What `report` wrote: the file, its kind, the runs it covers, its notes and its figures."""

    path: Path
    format: str
    kind: str  # "run" or "comparison"
    runs: list  # labels
    notes: list
    figures: dict
    files: list  # every file written (the report, and for Markdown its PNGs)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "kind": self.kind, "runs": self.runs,
                "notes": self.notes, "files": [str(f) for f in self.files]}

    def _repr_html_(self):  # a notebook shows where the report is and what it lacks
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<p>{self.kind} report of {len(self.runs)} run(s): <a href=\"{html.escape(str(self.path))}\" "
                f"target=\"_blank\">{html.escape(str(self.path))}</a></p>" + (f"<ul>{notes}</ul>" if notes else ""))


# ---- formatting ------------------------------------------------------------------------------

def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def pct(v, digits=2) -> Cell:
    v = _num(v)
    return Cell("-" if v is None else f"{100 * v:.{digits}f}", None if v is None else 100 * v)


def fixed(v, digits=4, unit="") -> Cell:
    v = _num(v)
    return Cell("-" if v is None else f"{v:.{digits}f}{unit}", v)


def si(v) -> Cell:
    v = _num(v)
    if v is None:
        return Cell("-", None)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return Cell(f"{v / div:.2f}{unit}", v)
    return Cell(f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}", v)


def count(v) -> Cell:
    v = _num(v)
    return Cell("-" if v is None else f"{int(v):,}", v)


def seconds(v) -> Cell:
    v = _num(v)
    return Cell("-" if v is None else f"{v:.1f}", v)


def time_to_accuracy(value) -> Cell:
    """summary.json's `time_to_accuracy` (seconds, or a mapping such as {target: seconds} or
    {"target": ..., "seconds": ...}); '-' when the run did not record one."""
    if value is None:
        return Cell("-", None)
    if _num(value) is not None:
        return Cell(f"{value:.1f} s", value)
    if isinstance(value, dict):
        if _num(value.get("seconds")) is not None:
            target = _num(value.get("target") or value.get("accuracy"))
            at = f" to {100 * target if target <= 1 else target:g}%" if target is not None else ""
            return Cell(f"{value['seconds']:.1f} s{at}", value["seconds"])
        parts = []
        for k, v in value.items():
            if _num(v) is not None:
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


def _with_unit(cell: Cell, unit: str) -> str:
    """The cell's text with a unit, or '-' alone."""
    return cell.text if cell.sort is None else f"{cell.text}{unit}"


def _text(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v) if v else ("{}" if isinstance(v, dict) else "[]")
    return str(v)


# ---- rendering -------------------------------------------------------------------------------

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #2b5fa8; --bg: #ffffff; --band: #f5f7fa;
        --note: #fff6dc; --note-line: #e0a800; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--band); }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 28px 0 10px; font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.sub { margin: 0; color: var(--muted); }
nav { margin-top: 10px; font-size: 13px; }
nav a { color: var(--accent); margin-right: 12px; text-decoration: none; }
main { padding: 0 32px 32px; max-width: 1500px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--band); }
tfoot td { font-weight: 600; border-top: 2px solid var(--fg); }
table.kv th { font-weight: 600; color: var(--muted); white-space: nowrap; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button:focus-visible { outline: 2px solid var(--accent); }
th[aria-sort="ascending"] button::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"] button::after { content: " \\25BC"; font-size: 10px; }
th[aria-sort="none"] button::after { content: " \\21C5"; font-size: 10px; color: var(--muted); }
figure { display: inline-block; vertical-align: top; margin: 10px 16px 18px 0; max-width: 100%; }
figcaption { max-width: 700px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
.note { background: var(--note); border-left: 4px solid var(--note-line); padding: 6px 12px; margin: 8px 0; }
.missing { margin: 12px 0 0; }
pre { background: var(--band); padding: 8px 12px; overflow-x: auto; font-size: 12px; }
footer { color: var(--muted); font-size: 12px; padding: 12px 32px 24px; border-top: 1px solid var(--line); }
.scroll { overflow-x: auto; }
"""

# Sorting: a click on a header (a button inside it) sorts the body rows by that column, ascending,
# a second click descending; empty cells ('-') stay last; ties keep their order.
SORT_JS = """
(function () {
  "use strict";
  function value(cell, type) {
    var v = cell.getAttribute("data-value");
    if (v === null) { v = cell.textContent.trim(); }
    if (type === "num") { var x = parseFloat(v); return isNaN(x) ? null : x; }
    return (v === "" || v === "-") ? null : v.toLowerCase();
  }
  function sortBy(table, th, col) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir);
    var type = th.getAttribute("data-type") || "text";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) { return { row: row, i: i, v: value(row.cells[col], type) }; });
    keyed.sort(function (a, b) {
      if (a.v === null || b.v === null) { return (a.v === null) - (b.v === null) || a.i - b.i; }
      var c = a.v < b.v ? -1 : (a.v > b.v ? 1 : 0);
      return (dir === "descending" ? -c : c) || a.i - b.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });
})();
"""


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _cell(c) -> Cell:
    return c if isinstance(c, Cell) else Cell(_text(c), None)


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
                c = _cell(row.get(key, "-"))
                num = ' class="num"' if typ == "num" else ""
                val = f' data-value="{c.sort!r}"' if typ == "num" and c.sort is not None else ""
                tds.append(f"<td{num}{val}>{_esc(c.text)}</td>")
            body.append(f"<tr{attr}>{''.join(tds)}</tr>")
        foot = ""
        if b.foot:
            foot = "<tfoot>" + "".join(
                "<tr>" + "".join(f'<td{" class=num" if typ == "num" else ""}>{_esc(_cell(row.get(key, "")).text)}</td>'
                                 for key, _, typ in b.columns) + "</tr>" for row in b.foot) + "</tfoot>"
        return (f'<div class="scroll"><table{cls}{tid}><thead><tr>{"".join(head)}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody>{foot}</table></div>')
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
            f"<title>{_esc(doc.title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head>\n"
            f"<body><header><h1>{_esc(doc.title)}</h1><p class=\"sub\">{_esc(doc.subtitle)}</p>"
            f"<nav>{nav}</nav>{missing}</header>\n<main>{body}</main>\n"
            f"<footer>Written by cnnlab {_esc(__version__)} from {_esc(doc.source)}.</footer>\n"
            f"<script>{SORT_JS}</script></body></html>\n")


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document, image_path) -> str:
    """Markdown; `image_path(name, fig)` writes one PNG and returns its path relative to the file."""
    out = [f"# {doc.title}", "", doc.subtitle, ""]
    if doc.missing:
        out += ["> **Not in this report:**", ">"] + [f"> - {m}" for m in doc.missing] + [""]
    for s in doc.sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Note):
                out += [f"> **Note:** {b.text}", ""]
            elif isinstance(b, Pre):
                out += ["```", b.text, "```", ""]
            elif isinstance(b, KeyValues):
                out += ["| | |", "|---|---|"] + [f"| **{_md_escape(k)}** | {_md_escape(v)} |" for k, v in b.rows] + [""]
            elif isinstance(b, Image):
                out += [f"![{b.alt}]({image_path(b.name, b.fig)})", "", f"*{b.caption}*", ""]
            elif isinstance(b, Table):
                out.append("| " + " | ".join(_md_escape(t) for _, t, _ in b.columns) + " |")
                out.append("|" + "|".join("---:" if typ == "num" else "---" for _, _, typ in b.columns) + "|")
                for row in list(b.rows) + list(b.foot):
                    out.append("| " + " | ".join(_md_escape(_cell(row.get(k, "-")).text) for k, _, _ in b.columns) + " |")
                out.append("")
    out += [f"*Written by cnnlab {__version__} from {doc.source}.*", ""]
    return "\n".join(out)


# ---- one run ---------------------------------------------------------------------------------

def _model_for_cost(files: RunFiles):
    """(model, input shape) for the cost table: the trained model, or one built from the config
    when the run has no checkpoint yet; (None, None) with a note when neither works."""
    run = files.model()
    if run is not None:
        return run.model, tuple(run.data["shape"])
    if files.config is None:
        return None, None
    from cnnlab.data.registry import dataset_input
    from cnnlab.models import create_model

    where = dataset_input(files.config.dataset)
    if where is None:
        return None, None
    (c, h, w), classes = where
    try:
        return create_model(files.config.model, num_classes=classes, in_channels=c, input_size=(h, w),
                            **dict(files.config.model_args)), (c, h, w)
    except CnnlabError:
        return None, None


def cost_of(files: RunFiles):
    """The cost model's report (cnnlab.cost.analyze) of the run's model, or None with a note."""
    from cnnlab.cost.report import analyze

    model, shape = _model_for_cost(files)
    if model is None:
        files.notes.setdefault("cost", "the model could not be built (no checkpoint, and its input shape is not "
                                       "known from the dataset name), so there is no layer table")
        return None
    try:
        return analyze(model, shape, name=files.config.model if files.config else None)
    except CnnlabError as e:
        files.notes["cost"] = f"the cost model could not trace the model: {e}"
        return None


def _layer_table(rep) -> Table:
    cols = [("layer", "layer", "text"), ("type", "type", "text"), ("output", "output", "text"),
            ("params", "params", "num"), ("macs", "MACs", "num"), ("act", "activation bytes", "num"),
            ("cycles", "cycles", "num"), ("energy", "energy (µJ)", "num")]
    rows = []
    for r in rep.rows:
        rows.append({"layer": r.name, "type": r.type, "output": "x".join(str(v) for v in r.out_shape[1:]),
                     "params": count(r.params), "macs": count(r.macs), "act": count(r.activation_bytes),
                     "cycles": count(r.cycles), "energy": fixed(r.energy_pj / 1e6, 3)})
    t = rep.totals
    foot = [{"layer": "total", "type": "", "output": "", "params": count(t["params"]), "macs": count(t["macs"]),
             "act": f"peak {rep.peak_activation:,}", "cycles": count(t["cycles"]),
             "energy": fixed(t["energy_pj"] / 1e6, 3)}]
    return Table(cols, rows, id="layers", foot=foot)


def _result_rows(files: RunFiles) -> list:
    s = files.summary or {}
    rows = [("status", files.status)]
    if files.summary is not None:
        rows += [("test accuracy", _with_unit(pct(s.get("test_acc")), "%")),
                 ("test loss", fixed(s.get("test_loss")).text), ("test images", count(s.get("test_count")).text),
                 ("best epoch", _text(s.get("best_epoch"))),
                 ("best validation accuracy", _with_unit(pct(s.get("best_val_acc")), "%")),
                 ("epochs run", _text(s.get("epochs_run"))),
                 ("training time", _with_unit(seconds(s.get("train_seconds")), " s")),
                 ("time per epoch", _with_unit(seconds(s.get("seconds_per_epoch")), " s")),
                 ("time to accuracy", time_to_accuracy(s.get("time_to_accuracy")).text),
                 ("parameters", count(s.get("params")).text),
                 ("trainable parameters", count(s.get("trainable_params")).text)]
        pre = s.get("pretrained")
        if isinstance(pre, dict):  # --pretrained (cnnlab.train.transfer)
            tr = s.get("transfer") or {}
            rows += [("pretrained from", f"{_text(pre.get('source'))} ({_text(pre.get('kind'))}, "
                                         f"{_text(pre.get('layout'))} layout; sha256 {str(pre.get('sha256'))[:12]})"),
                     ("pretrained weights loaded", f"{count(pre.get('loaded_params')).text} of the backbone's "
                                                   f"{count(pre.get('backbone_params')).text} parameters; new: "
                                                   f"{', '.join(pre.get('new') or {}) or 'none'}"),
                     ("backbone", ("fine-tuned" if tr.get("freeze") == "none" else
                                   f"frozen, then thawed from the top over {tr['unfreeze_epochs']} epochs"
                                   if tr.get("unfreeze_epochs") else "frozen, only the head trains")
                      + (f", at {tr['backbone_lr_mult']:g}x the learning rate"
                         if tr.get("backbone_lr_mult") not in (None, 1, 1.0) else ""))]
        rows.append(("why it stopped", _text(s.get("stop_reason"))))
    elif files.metrics:
        best = max(files.metrics, key=lambda m: (m.get("val_acc", -1), -m["epoch"]))
        rows += [("epochs finished", str(len(files.metrics))),
                 ("best validation accuracy", f"{_with_unit(pct(best.get('val_acc')), '%')} (epoch {best['epoch']:g})"),
                 ("training time so far", _with_unit(seconds(sum(m.get("seconds", 0) for m in files.metrics)), " s"))]
    if files.iterations:
        rows.append(("training steps recorded", f"{int(files.iterations[-1]['step']):,}"))
    return rows


def _config_rows(files: RunFiles) -> list:
    if files.config is None:
        return []
    return [(k, _text(v)) for k, v in files.config.to_dict().items()]


def _hardware_rows(files: RunFiles) -> list:
    s = files.summary or {}
    env = s.get("environment") or {}
    if not env and not s:
        return []
    gpus = ", ".join(f"{g.get('name')} ({g.get('memory_gib')} GiB)" for g in env.get("gpus") or []) or "none"
    rows = [("device used", _text(s.get("device"))), ("CPU", _text(env.get("cpu_model"))),
            ("CPU cores", _text(env.get("cpu_cores"))), ("memory", f"{_text(env.get('memory_gib'))} GiB"),
            ("GPUs", gpus), ("PyTorch", _text(env.get("torch"))), ("CUDA", _text(env.get("cuda"))),
            ("PyTorch threads", _text(env.get("torch_threads"))), ("Python", _text(env.get("python"))),
            ("platform", _text(env.get("platform"))), ("cnnlab", _text(s.get("cnnlab_version")))]
    if s.get("git_commit"):
        rows.append(("git commit", s["git_commit"] + (" (with local changes)" if s.get("git_dirty") else "")))
    return rows


BENCH_COLUMNS = [("device", "device", "text"), ("status", "status", "text"), ("test_acc", "test acc %", "num"),
                 ("test_loss", "test loss", "num"), ("lat1", "latency batch 1 (ms)", "num"),
                 ("latb", "latency per image in a batch (ms)", "num"), ("batch", "batch", "num"),
                 ("train5", "train 5 epochs (s)", "num"), ("score", "score (acc / s at batch 1)", "num")]


def _bench_row(r: dict) -> dict:
    return {"device": _text(r.get("device")), "status": _text(r.get("status")), "test_acc": pct(r.get("test_acc")),
            "test_loss": fixed(r.get("test_loss")), "lat1": fixed(r.get("latency_ms_batch1"), 3),
            "latb": fixed(r.get("latency_ms_per_image_batch"), 4), "batch": count(r.get("batch_size")),
            "train5": seconds(r.get("train_seconds_5_epochs")), "score": fixed(r.get("score"), 1)}


def _score_rows(sc: dict) -> list:
    parts = sc.get("points_by_part") or {}
    rows = [("points", f"{_text(sc.get('points'))} (error {parts.get('error', '-')}, energy {parts.get('energy', '-')}, "
                       f"latency {parts.get('latency', '-')})"),
            ("ranking metric (lower is better)", fixed(sc.get("metric"), 4).text),
            ("test accuracy", f"{pct(sc.get('test_accuracy')).text}% ({_text(sc.get('test_correct'))} of "
                              f"{_text(sc.get('test_images'))})"),
            ("energy", f"{fixed(sc.get('energy_mj'), 4).text} mJ"), ("cycles", count(sc.get("cycles")).text),
            ("peak activation", f"{count(sc.get('peak_activation_bytes')).text} B at {_text(sc.get('peak_activation_layer'))}"
                                f" (limit {count(sc.get('max_activation_bytes')).text} B)"),
            ("accelerator", _text(sc.get("architecture"))),
            ("hard constraints failed", "; ".join(sc.get("hard_constraints_failed") or []) or "none")]
    if sc.get("note"):
        rows.append(("note", sc["note"]))
    return rows


def run_document(files: RunFiles, data_dir=None, device="cpu", evaluate: bool = True):
    """(Document, figures) of one run."""
    figs, fig_notes, test = run_figures(files, data_dir, device, evaluate)
    cfg = files.config
    s = files.summary or {}
    missing = []

    def note(section: Section, text: str):
        section.blocks.append(Note(text))
        missing.append(f"{section.title}: {text}")

    result = Section("result", "Result")
    result.blocks.append(KeyValues(_result_rows(files)))
    if files.summary is None:
        tail = [line for line in files.log if line.strip()][-8:]
        result.blocks.append(Note("The run did not finish, so it has no final test result; the figures below show "
                                  "what it recorded." + (" The end of its train.log:" if tail else "")))
        missing.append(f"Result: the run {files.short_status} before its final test evaluation (see Result)")
        if tail:
            result.blocks.append(Pre("\n".join(tail)))

    curves = Section("curves", "Training curves")
    for name, alt in (("loss", "training loss against iteration, validation loss per epoch"),
                      ("accuracy", "training and validation accuracy against epoch"),
                      ("lr", "learning rate against iteration")):
        if name in figs:
            curves.blocks.append(Image(name, figs[name], _CAPTIONS[name], alt))
    if not any(n in figs for n in ("loss", "accuracy", "lr")):
        note(curves, fig_notes.get("loss") or "nothing was recorded")
    elif "accuracy" not in figs:
        note(curves, fig_notes.get("accuracy", "no epoch has finished"))

    filters = Section("filters", "First-layer filters")
    if "filters" in figs:
        filters.blocks.append(Image("filters", figs["filters"], _CAPTIONS["filters"], "the first convolution's filters"))
    else:
        note(filters, fig_notes.get("filters", "no filters"))

    confusion = Section("confusion", "Confusion matrix and per-class accuracy")
    if test is not None:
        confusion.blocks.append(Note(f"From {test.source}.") if test.saved else
                                KeyValues([("source", test.source)]))
        confusion.blocks.append(Image("confusion", figs["confusion"], _CAPTIONS["confusion"], "confusion matrix"))
        rows = []
        for i, (name, acc) in enumerate(zip(test.classes, test.per_class_accuracy)):
            row = test.confusion[i]
            off = [(row[j], j) for j in range(len(row)) if j != i and row[j] > 0]
            worst = max(off, key=lambda x: (x[0], -x[1])) if off else None
            rows.append({"index": count(i), "class": str(name), "acc": pct(acc), "images": count(sum(row)),
                         "confused": f"{test.classes[worst[1]]} ({worst[0]})" if worst else "-"})
        confusion.blocks.append(Table([("index", "#", "num"), ("class", "class", "text"), ("acc", "accuracy %", "num"),
                                       ("images", "images", "num"), ("confused", "most often taken for", "text")],
                                      rows, id="per-class"))
    else:
        note(confusion, fig_notes.get("confusion", "no evaluation"))

    mistakes = Section("mistakes", "Most confident mistakes")
    if "mistakes" in figs:
        mistakes.blocks.append(Image("mistakes", figs["mistakes"], _CAPTIONS["mistakes"], "misclassified test images"))
    else:
        note(mistakes, fig_notes.get("mistakes", "no evaluation"))

    layers = Section("layers", "Layers and cost")
    rep = cost_of(files)
    if rep is not None:
        t = rep.totals
        layers.blocks.append(KeyValues([
            ("input", "x".join(map(str, rep.in_shape))), ("parameters", f"{t['params']:,}"),
            ("MACs", f"{t['macs']:,}"), ("peak activation (competition rule)",
                                         f"{rep.peak_activation:,} bytes at {rep.peak_layer}"),
            ("accelerator", f"{rep.arch.name}: {t['cycles']:,} cycles, {t['energy_pj'] / 1e9:.4f} mJ")]))
        layers.blocks.append(_layer_table(rep))
        if rep.uncounted:
            layers.blocks.append(Note(f"{len(rep.uncounted)} operation(s) have no cost rule and are not counted: "
                                      + ", ".join(sorted({op for op, _ in rep.uncounted}))))
    else:
        note(layers, files.notes.get("cost", "no model"))

    score = Section("score", "Competition score")
    if files.score:
        score.blocks.append(KeyValues(_score_rows(files.score)))
    else:
        score.blocks.append(Note(files.notes.get("score") or
                                 f"no score.json yet: `cnnlab score {files.dir.path}` adds the competition score"))
    bench = Section("bench", "Devices: accuracy and latency")
    if files.bench:
        bench.blocks.append(Table(BENCH_COLUMNS, [_bench_row(r) for r in files.bench], id="bench"))
    else:
        bench.blocks.append(Note(files.notes.get("bench") or
                                 f"no bench.json yet: `cnnlab bench {files.dir.path}` measures accuracy and latency "
                                 "per device"))

    hardware = Section("hardware", "Hardware")
    hw = _hardware_rows(files)
    if hw:
        hardware.blocks.append(KeyValues(hw))
    else:
        note(hardware, "not recorded: the machine is written to summary.json when a run finishes")

    config = Section("config", "Configuration")
    if cfg is not None:
        config.blocks.append(KeyValues(_config_rows(files)))
    else:
        note(config, files.notes.get("config", "no config"))

    for key in ("summary", "saved_evaluation"):  # damaged files
        if key in files.notes and "not valid JSON" in files.notes[key]:
            missing.append(files.notes[key])
    sections = [result, curves, filters, confusion, mistakes, layers, score, bench, hardware, config]
    model = cfg.model if cfg else "?"
    subtitle = " · ".join(x for x in (
        f"model {model}", f"dataset {cfg.dataset}" if cfg else "", f"engine {cfg.engine}" if cfg else "",
        f"device {s['device']}" if s.get("device") else "",
        f"test accuracy {100 * s['test_acc']:.2f}%" if _num(s.get("test_acc")) is not None else files.short_status)
        if x)
    doc = Document(f"cnnlab run report: {files.label}", subtitle, sections, missing, str(files.dir.path))
    return doc, figs


_CAPTIONS = {
    "loss": "Training loss at every iteration (faint) and its moving mean, with the validation loss at the end of "
            "each epoch.",
    "accuracy": "Training accuracy (measured during each epoch, with the weights changing) and validation accuracy "
                "(at the epoch's end); the star marks the best epoch, whose weights are kept.",
    "lr": "The learning rate the optimizer used at each iteration.",
    "filters": "Each filter of the first convolution layer, scaled to its own range.",
    "confusion": "Rows: the true class; columns: the predicted class; the diagonal counts the right answers.",
    "mistakes": "Test images the model got wrong with the highest confidence (the predicted class's softmax "
                "probability), most confident first.",
}


# ---- several runs ----------------------------------------------------------------------------

COMPARE_COLUMNS = [
    ("run", "run", "text"), ("status", "status", "text"), ("model", "model", "text"), ("engine", "engine", "text"),
    ("device", "device", "text"), ("epochs", "epochs", "num"), ("best_val_acc", "best val acc %", "num"),
    ("test_acc", "test acc %", "num"), ("test_loss", "test loss", "num"), ("train_seconds", "train time (s)", "num"),
    ("seconds_per_epoch", "s/epoch", "num"), ("time_to_accuracy", "time to accuracy", "num"),
    ("latency", "latency (ms, batch 1)", "num"), ("params", "params", "num"),
    ("trainable_params", "trainable params", "num"), ("macs", "MACs", "num"), ("score", "score (points)", "num"),
]


def _params_macs(files: RunFiles):
    params = (files.summary or {}).get("params") or (files.score or {}).get("params")
    macs = (files.score or {}).get("macs")
    if macs is None or params is None:
        from cnnlab.models.summary import count_macs, count_params

        model, shape = _model_for_cost(files)
        if model is not None:
            params = params if params is not None else count_params(model)
            try:
                macs = count_macs(model, shape)
            except Exception:  # noqa: BLE001 - a model that cannot run one image: leave the cell empty
                macs = None
    return params, macs


def compare_row(files: RunFiles) -> dict:
    s, cfg = files.summary or {}, files.config
    best_val = s.get("best_val_acc")
    if best_val is None and files.metrics:
        best_val = max((m.get("val_acc", float("nan")) for m in files.metrics), default=None)
    ok = [r for r in files.bench or [] if r.get("status") == "ok" and _num(r.get("latency_ms_batch1")) is not None]
    latency = Cell(f"{ok[0]['latency_ms_batch1']:.3f} ({ok[0]['device']})", ok[0]["latency_ms_batch1"]) if ok \
        else Cell("-", None)
    params, macs = _params_macs(files)
    sc = files.score or {}
    return {
        "run": files.label, "status": files.short_status,
        "model": cfg.model if cfg else "-", "engine": cfg.engine if cfg else "-",
        "device": _text(s.get("device")) if s.get("device") else "-",
        "epochs": count(s.get("epochs_run", len(files.metrics) if files.metrics else None)),
        "best_val_acc": pct(best_val), "test_acc": pct(s.get("test_acc")), "test_loss": fixed(s.get("test_loss")),
        "train_seconds": seconds(s.get("train_seconds", sum(m.get("seconds", 0) for m in files.metrics)
                                       if files.metrics else None)),
        "seconds_per_epoch": seconds(s.get("seconds_per_epoch")),
        "time_to_accuracy": time_to_accuracy(s.get("time_to_accuracy")), "latency": latency,
        "params": si(params), "trainable_params": si(s.get("trainable_params")), "macs": si(macs),
        "score": Cell(_text(sc["points"]), sc["points"]) if _num(sc.get("points")) is not None else Cell("-", None),
    }


def _experiment_table(labelled) -> Table | None:
    """Mean ± std over seeds per experiment (labels 'experiment/seedK')."""
    from cnnlab.workflows.study import mean_std

    groups = {}
    for files in labelled:
        if "/" in files.label:
            groups.setdefault(files.label.rsplit("/", 1)[0], []).append(files)
    if not groups:
        return None
    rows = []
    for name, runs in groups.items():
        sums = [f.summary for f in runs if f.summary]

        def ms(key, scale=1.0, digits=2):
            m, sd = mean_std([x.get(key) for x in sums if _num(x.get(key)) is not None])
            return Cell("-" if math.isnan(m) else f"{scale * m:.{digits}f} ± {scale * sd:.{digits}f}",
                        None if math.isnan(m) else scale * m)

        rows.append({"experiment": name, "runs": count(len(runs)), "finished": count(len(sums)),
                     "test_acc": ms("test_acc", 100), "best_val_acc": ms("best_val_acc", 100),
                     "train_seconds": ms("train_seconds", 1, 1)})
    return Table([("experiment", "experiment", "text"), ("runs", "runs", "num"), ("finished", "finished", "num"),
                  ("test_acc", "test acc % (mean ± std)", "num"), ("best_val_acc", "best val acc % (mean ± std)", "num"),
                  ("train_seconds", "train time s (mean ± std)", "num")], rows, id="experiments")


def search_section(path) -> Section:
    """The search's section: the chosen model and its costs, the Pareto plot, every trial."""
    from cnnlab.workflows.search import pareto_figure, read_search

    d = read_search(path)
    b = d["best"]
    sec = Section("search", "Architecture search")
    sec.blocks.append(KeyValues([
        ("chosen model", f"trial {b['trial']}: {b['model']}"),
        ("validation error", f"{b['val_error']:.2f}%"), ("test error (evaluated once)", f"{b['test_error']:.2f}%"),
        ("cycles", f"{b['cycles']:,}"), ("energy", f"{b['energy_mj']:.4f} mJ"), ("parameters", f"{b['parameters']:,}"),
        ("peak activation", f"{b['peak_activation']:,} B"),
        ("competition metric", f"{b['test_metric']:.3f} on test ({b['val_metric']:.3f} on validation)"),
        ("trials", f"{b['trials']} ({b['complete']} trained, {b['pruned']} pruned early, {b['infeasible']} "
                   "infeasible: refused by the cost model without training)"),
        ("objectives", ", ".join(b["objectives"]))]))
    sec.blocks.append(Image("search_pareto", pareto_figure(d["trials"], set(b["pareto"])),
                            "Validation error against accelerator cycles per image for every trained trial, coloured "
                            "by energy; the Pareto front ringed.", "Pareto front of the search"))
    cols = [("trial", "trial", "num"), ("state", "state", "text"), ("model", "model spec", "text"),
            ("cycles", "cycles", "num"), ("energy_mj", "energy mJ", "num"), ("params", "params", "num"),
            ("peak_activation", "peak act. B", "num"), ("val_error", "val error %", "num"),
            ("metric", "metric", "num"), ("infeasible", "why refused", "text")]
    rows = []
    for r in d["trials"]:
        row = {}
        for key, _, kind in cols:
            v = r.get(key, "")
            num = _num(v) if kind == "num" else None
            if kind == "num" and num is None:
                try:
                    num = float(v)
                except (TypeError, ValueError):
                    num = None
            row[key] = Cell(f"{num:.4g}" if num is not None and key in ("energy_mj", "val_error", "metric")
                            else (f"{int(num):,}" if num is not None else (v or "-")), num)
        rows.append(row)
    sec.blocks.append(Table(cols, rows, id="search-trials"))
    return sec


def comparison_document(runs: list, title: str, description: str = "", sources: str = ""):
    """(Document, figures) comparing several runs (RunFiles)."""
    missing = []
    table = Section("runs", "Runs")
    if description:
        table.blocks.append(KeyValues([("study", description)]))
    table.blocks.append(Table(COMPARE_COLUMNS, [compare_row(f) for f in runs], id="comparison",
                              row_ids=[f.label for f in runs]))
    table.blocks.append(Note("Click a column's title to sort by it (again to reverse). Best val acc: the highest "
                             "validation accuracy of any epoch; test acc/loss: the best-validation weights on the "
                             "test split; latency: from bench.json; score: the competition points from score.json; "
                             "time to accuracy: when the run recorded one."))
    sections = [table]
    exp = _experiment_table(runs)
    if exp is not None:
        sections.append(Section("experiments", "Per experiment", [exp]))
    figs = compare_figures(runs)
    curves = Section("curves", "Curves")
    for name, alt, caption in (
            ("val_acc", "validation accuracy of every run against epoch",
             "Validation accuracy per epoch; a cross marks each run's test accuracy (best-validation weights) at its "
             "last epoch."),
            ("train_loss", "training loss of every run against iteration",
             "Training loss per iteration, each run's moving mean over 2% of its iterations."),
            ("val_loss", "validation loss of every run against epoch", "Validation loss at each epoch's end.")):
        if name in figs:
            curves.blocks.append(Image(f"compare_{name}", figs[name], caption, alt))
    if not figs:
        curves.blocks.append(Note("no run has recorded a training step or an epoch yet"))
        missing.append("Curves: no run has recorded a training step or an epoch yet")
    sections.append(curves)

    bench_rows = [{"run": f.label, **_bench_row(r)} for f in runs for r in (f.bench or [])]
    bench = Section("bench", "Devices: accuracy and latency")
    if bench_rows:
        bench.blocks.append(Table([("run", "run", "text")] + BENCH_COLUMNS, bench_rows, id="bench"))
    else:
        bench.blocks.append(Note("no run has a bench.json yet: `cnnlab bench RUN_DIR --devices cpu,cuda` measures "
                                 "accuracy and latency per device"))
    sections.append(bench)

    hw_rows = []
    for f in runs:
        s = f.summary or {}
        env = s.get("environment") or {}
        gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
        hw_rows.append({"run": f.label, "device": _text(s.get("device")) if s else "-",
                        "cpu": _text(env.get("cpu_model")) if env else "-",
                        "cores": count(env.get("cpu_cores")), "gpus": gpus if env else "-",
                        "torch": _text(env.get("torch")) if env else "-"})
    sections.append(Section("hardware", "Hardware", [Table(
        [("run", "run", "text"), ("device", "device used", "text"), ("cpu", "CPU", "text"),
         ("cores", "cores", "num"), ("gpus", "GPUs", "text"), ("torch", "PyTorch", "text")], hw_rows, id="hardware")]))

    notes = Section("notes", "Notes on the runs")
    for f in runs:
        for key in ("config", "summary", "metrics", "iterations", "model", "cost", "score", "bench"):
            if key in f.notes:
                text = f"{f.label}: {f.notes[key]}"
                notes.blocks.append(Note(text))
                if key in ("config", "summary", "metrics", "model"):
                    missing.append(text)
    if not notes.blocks:
        notes.blocks.append(KeyValues([("all runs", "finished, with every file a report reads")]))
    sections.append(notes)
    subtitle = f"{len(runs)} runs · " + ", ".join(sorted({f.config.dataset for f in runs if f.config}) or ["?"])
    return Document(title, subtitle, sections, missing, sources), figs


# ---- entry point -----------------------------------------------------------------------------

def expand_paths(paths) -> tuple[list, list]:
    """[(label, run dir)] for the given run directories, study directories and folders of run
    directories (each run directly inside), and the study directories among them."""
    from cnnlab.workflows.study import is_study_dir, study_runs

    from cnnlab.workflows.search import is_search_dir, read_search

    found, studies = [], []
    for p in paths:
        p = Path(p)
        if p.exists() and is_search_dir(p):  # a search: its trained trials, and its own section
            studies.append(p)
            prefix = f"{p.resolve().name}:" if len(paths) > 1 else ""
            found += [(f"{prefix}trial-{int(r['trial']):04d}", Path(r["run_dir"] if "run_dir" in r and r["run_dir"]
                                                                     else p / "trials" / f"{int(r['trial']):04d}"))
                      for r in read_search(p)["trials"] if r["state"] == "complete"]
            continue
        if not p.exists():
            raise CnnlabError(f"{p} does not exist: give a run directory (from `cnnlab train`) or a study directory "
                              "(from `cnnlab study`)")
        if RunDir(p).is_run():
            found.append((p.resolve().name, p))
        elif is_study_dir(p):
            runs = study_runs(p)
            if not runs:
                raise CnnlabError(f"study directory {p} holds no runs yet: run `cnnlab study` first")
            studies.append(p)
            prefix = f"{p.resolve().name}:" if len(paths) > 1 else ""
            found += [(prefix + label, run) for label, run in runs]
        elif p.is_dir() and any(RunDir(c).is_run() for c in p.iterdir() if c.is_dir()):
            found += [(c.name, c) for c in sorted(p.iterdir()) if c.is_dir() and RunDir(c).is_run()]
        else:
            RunDir(p).check()  # the one-line 'not a run directory' error
    seen, unique = set(), []
    for label, run in found:  # a directory given twice is reported once
        if run.resolve() not in seen:
            seen.add(run.resolve())
            unique.append((label, run))
    found = unique
    labels = [label for label, _ in found]
    if len(set(labels)) != len(labels):  # the same directory name twice: use the parent too
        found = [(f"{run.resolve().parent.name}/{run.resolve().name}" if labels.count(label) > 1 else label, run)
                 for label, run in found]
    return found, studies


def default_output(paths, fmt: str = "html") -> Path:
    """Where `report` writes when no `out` is given: DIR/report.html for one run, study or folder
    of runs (report.md for Markdown), else ./comparison.html."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        rd = RunDir(paths[0])
        return rd.report if fmt == "html" else rd.report_md
    return Path(f"{COMPARISON_STEM}.{fmt}")


def report(paths, out=None, fmt: str = "html", data_dir=None, device: str = "cpu", evaluate: bool = True) -> Report:
    """Write the report of one run, or the comparison of several runs and studies; returns a Report."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise CnnlabError("give at least one run directory or study directory")
    if fmt not in FORMATS:
        raise CnnlabError(f"unknown report format '{fmt}': choose {' or '.join(FORMATS)}")
    found, studies = expand_paths(paths)
    out = Path(out) if out else default_output(paths, fmt)
    if out.is_dir():
        raise CnnlabError(f"{out} is a directory: give a file name for the report (with --out)")
    single = len(found) == 1 and not studies
    files_list = [read_run(run, label) for label, run in found]
    if single:
        doc, figs = run_document(files_list[0], data_dir, device, evaluate)
        kind = "run"
    else:
        title = (f"cnnlab study report: {Path(studies[0]).resolve().name}" if len(studies) == 1 and len(paths) == 1
                 else f"cnnlab comparison of {len(found)} runs")
        description = ""
        from cnnlab.workflows.search import is_search_dir

        if len(studies) == 1 and len(paths) == 1 and not is_search_dir(studies[0]):
            from cnnlab.workflows.study import study_description

            description = study_description(studies[0])
        doc, figs = comparison_document(files_list, title, description, ", ".join(str(p) for p in paths))
        for place, p in enumerate(p for p in studies if is_search_dir(p)):
            doc.sections.insert(place, search_section(p))
            if len(paths) == 1:
                doc.title = f"cnnlab search report: {Path(p).resolve().name}"
        kind = "comparison"
    written = []
    if fmt == "html":
        atomic_write_text(out, render_html(doc))
    else:
        run_plots = single and out.resolve() == files_list[0].dir.report_md.resolve()

        def image_path(name, fig):
            if run_plots and name in PLOT_FILES:
                path = files_list[0].dir.plot_file(name)
            else:
                path = out.parent / f"{out.stem}-{name}.png"
            written.append(save_png(fig, path))
            return Path(os.path.relpath(path, out.parent)).as_posix()

        text = render_markdown(doc, image_path)
        atomic_write_text(out, text)
    return Report(out, fmt, kind, [label for label, _ in found], doc.missing, figs, [out] + written)
