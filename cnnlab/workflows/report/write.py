"""`report`: which document the given directories make, in which format, written where.

    rep = report(["runs/lenet5"])                       # runs/lenet5/report.html
    rep = report(["runs/a", "runs/b", "runs/study-x"])  # ./comparison.html
    rep = report(["runs/lenet5"], fmt="md")             # runs/lenet5/report.md, PNGs in runs/lenet5/plots/
    found, studies = expand_paths(["runs/study-x"])     # [(label, run dir)], and the studies/searches among them

One run directory gives the run's document (cnnlab.workflows.report.run); anything else (several
runs, a study directory, a search directory, a folder of run directories) gives a comparison
(cnnlab.workflows.report.compare), a search adding its own section first. The file is written
atomically; Markdown writes its PNGs beside it (a run's own report.md uses RUN_DIR/plots/).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from cnnlab.dirs import PLOT_FILES, RunDir, SearchDir, StudyDir
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text
from cnnlab.workflows.report.compare import comparison_document, search_section
from cnnlab.workflows.report.figures import save_png
from cnnlab.workflows.report.html import render_html
from cnnlab.workflows.report.markdown import render_markdown
from cnnlab.workflows.report.run import run_document
from cnnlab.workflows.report.snapshot import read_run

FORMATS = ("html", "md")
COMPARISON_STEM = "comparison"  # the default file of a comparison: ./comparison.html or .md


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


def _search_runs(p: Path, prefix: str) -> list:
    """(label, run dir) of a finished search's trained trials, then its final stage's finished runs."""
    sd = SearchDir(p)
    d = sd.read()
    found = [(f"{prefix}trial-{int(r['trial']):04d}",
              Path(r["run_dir"]) if r.get("run_dir") else sd.trial_dir(r["trial"]))
             for r in d["trials"] if r["state"] == "complete"]
    return found + [(f"{prefix}final-{Path(r['run_dir']).name}", Path(r["run_dir"]))
                    for f in d["best"].get("finalists", []) for r in f["final"]["runs"]]


def expand_paths(paths) -> tuple[list, list]:
    """[(label, run dir)] for the given run directories, study directories, search directories and
    folders of run directories (each run directly inside), and the study and search directories among them."""
    found, studies = [], []
    for p in paths:
        p = Path(p)
        prefix = f"{p.resolve().name}:" if len(paths) > 1 else ""
        if p.exists() and SearchDir(p).finished():  # a search: its trained trials, and its own section
            studies.append(p)
            found += _search_runs(p, prefix)
            continue
        if not p.exists():
            raise CnnlabError(f"{p} does not exist: give a run directory (from `cnnlab train`) or a study directory "
                              "(from `cnnlab study`)")
        if RunDir(p).is_run():
            found.append((p.resolve().name, p))
        elif StudyDir(p).is_study():
            runs = StudyDir(p).list_runs()
            if not runs:
                raise CnnlabError(f"study directory {p} holds no runs yet: run `cnnlab study` first")
            studies.append(p)
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


def _comparison(paths, found, studies, files_list):
    """(Document, figures) of several runs; a study's description and a search's section when one is given alone."""
    alone = len(studies) == 1 and len(paths) == 1
    title = (f"cnnlab study report: {Path(studies[0]).resolve().name}" if alone
             else f"cnnlab comparison of {len(found)} runs")
    searches = [p for p in studies if SearchDir(p).finished()]
    description = StudyDir(studies[0]).description() if alone and not searches else ""
    doc, figs = comparison_document(files_list, title, description, ", ".join(str(p) for p in paths))
    for place, p in enumerate(searches):
        doc.sections.insert(place, search_section(p))
        if len(paths) == 1:
            doc.title = f"cnnlab search report: {Path(p).resolve().name}"
    return doc, figs


def _write_markdown(doc, out: Path, run_files) -> list:
    """Write the Markdown file and its PNGs; a run's own report.md puts them in RUN_DIR/plots/.
    Returns the PNG paths written."""
    written = []
    run_plots = run_files is not None and out.resolve() == run_files.dir.report_md.resolve()

    def image_path(name, fig):
        if run_plots and name in PLOT_FILES:
            path = run_files.dir.plot_file(name)
        else:
            path = out.parent / f"{out.stem}-{name}.png"
        written.append(save_png(fig, path))
        return Path(os.path.relpath(path, out.parent)).as_posix()

    atomic_write_text(out, render_markdown(doc, image_path))
    return written


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
    else:
        doc, figs = _comparison(paths, found, studies, files_list)
    if fmt == "html":
        atomic_write_text(out, render_html(doc))
        written = []
    else:
        written = _write_markdown(doc, out, files_list[0] if single else None)
    return Report(out, fmt, "run" if single else "comparison", [label for label, _ in found], doc.missing, figs,
                  [out] + written)
