"""The comparison of several runs, studies and searches: its Document.

    doc, figs = comparison_document([read_run(a, "a"), read_run(b, "b")], "cnnlab comparison of 2 runs")
    row = compare_row(read_run("runs/x"))      # one row of the table: column key -> Cell
    doc.sections.insert(0, search_section("runs/search-x"))   # a search's own section

The sections, in order: one sortable table (COMPARE_COLUMNS: model, engine, device, best
validation accuracy, test accuracy and loss, training time, time to accuracy, latency,
parameters, MACs, score), mean ± std per experiment when the labels are a study's
'experiment/seedK', overlaid curves (figures.compare_figures), every run's bench.json rows, the
machines used, and the notes of runs that lack something.
"""

from __future__ import annotations

import math

from cnnlab.dirs import SearchDir
from cnnlab.workflows.report.document import (Cell, Document, Image, KeyValues, Note, Section, Table, count, fixed,
                                              number, pct, seconds, si, text, time_to_accuracy)
from cnnlab.workflows.report.figures import compare_figures
from cnnlab.workflows.report.run import BENCH_COLUMNS, bench_row
from cnnlab.workflows.report.snapshot import RunFiles

# the comparison table's columns (key, title, kind), one row per run: compare_row gives the cells
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

        model, shape = files.cost_model()
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
    ok = [r for r in files.bench or [] if r.get("status") == "ok" and number(r.get("latency_ms_batch1")) is not None]
    latency = Cell(f"{ok[0]['latency_ms_batch1']:.3f} ({ok[0]['device']})", ok[0]["latency_ms_batch1"]) if ok \
        else Cell("-", None)
    params, macs = _params_macs(files)
    sc = files.score or {}
    return {
        "run": files.label, "status": files.short_status,
        "model": cfg.model if cfg else "-", "engine": cfg.engine if cfg else "-",
        "device": text(s.get("device")) if s.get("device") else "-",
        "epochs": count(s.get("epochs_run", len(files.metrics) if files.metrics else None)),
        "best_val_acc": pct(best_val), "test_acc": pct(s.get("test_acc")), "test_loss": fixed(s.get("test_loss")),
        "train_seconds": seconds(s.get("train_seconds", sum(m.get("seconds", 0) for m in files.metrics)
                                       if files.metrics else None)),
        "seconds_per_epoch": seconds(s.get("seconds_per_epoch")),
        "time_to_accuracy": time_to_accuracy(s.get("time_to_accuracy")), "latency": latency,
        "params": si(params), "trainable_params": si(s.get("trainable_params")), "macs": si(macs),
        "score": Cell(text(sc["points"]), sc["points"]) if number(sc.get("points")) is not None else Cell("-", None),
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
            m, sd = mean_std([x.get(key) for x in sums if number(x.get(key)) is not None])
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
    from cnnlab.workflows.search import pareto_figure

    d = SearchDir(path).read()
    b = d["best"]
    sec = Section("search", "Architecture search")
    final = b.get("stage") == "final"
    pm = (lambda key: f" ± {b[key + '_std']:.2f}" if final and b.get("seeds", 1) > 1 else "")
    rows = [("chosen model", f"trial {b['trial']}: {b['model']}")]
    if final:
        select = [f["final"]["selection_seeds"] for f in b["finalists"] if "selection_seeds" in f["final"]]
        how = (f"each retrained {b['epochs']} epochs with {select[0]} seed(s), the winner then with {b['seeds']}"
               if select else f"each retrained {b['epochs']} epochs with {b['seeds']} seed(s)")
        rows.append(("chosen by", f"the final stage: the lowest validation metric of {len(b['finalists'])} "
                                  f"finalists, {how}"))
    rows += [
        ("validation error", f"{b['val_error']:.2f}%{pm('val_error')}"),
        ("test error (evaluated once" + (" per final run)" if final else ")"), f"{b['test_error']:.2f}%{pm('test_error')}"),
        ("cycles", f"{b['cycles']:,}"), ("energy", f"{b['energy_mj']:.4f} mJ"), ("parameters", f"{b['parameters']:,}"),
        ("peak activation", f"{b['peak_activation']:,} B"),
        ("competition metric", f"{b['test_metric']:.3f}{pm('test_metric')} on test ({b['val_metric']:.3f} on validation)")]
    if final:
        p = b["search"]
        test = f", {p['test_metric']:.3f} on test" if p.get("test_metric") is not None else ""
        rows.append(("in the search (proxy)", f"{p['epochs']}-epoch trial: validation error {p['val_error']:.2f}%, "
                                              f"metric {p['val_metric']:.3f} on validation{test}"))
    rows += [("trials", f"{b['trials']} ({b['complete']} trained, {b['pruned']} pruned early, {b['infeasible']} "
                        f"infeasible: refused by the cost model without training, {b.get('bound_pruned', 0)} "
                        "refused by the bound: their cycles alone lost)"),
             ("objectives", ", ".join(b["objectives"]))]
    sec.blocks.append(KeyValues(rows))
    if final:
        sec.blocks.append(finalists_table(b["finalists"]))
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
            num = number(v) if kind == "num" else None
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


def finalists_table(finalists: list) -> Table:
    """The final stage: each finalist's search (proxy) figures beside its final ones (mean over seeds)."""
    def cell(v, digits=2):
        return Cell("-" if v is None else f"{v:.{digits}f}", v)

    cols = [("trial", "trial", "num"), ("model", "model spec", "text"), ("cycles", "cycles", "num"),
            ("search_val_error", "search val error %", "num"), ("search_val_metric", "search val metric", "num"),
            ("final_val_error", "final val error %", "num"), ("final_test_error", "final test error %", "num"),
            ("final_val_metric", "final val metric", "num"), ("final_test_metric", "final test metric", "num"),
            ("seeds", "seeds", "num")]
    rows = []
    for f in finalists:
        s, fin = f["search"], f["final"]
        rows.append({"trial": Cell(str(f["trial"]), f["trial"]), "model": f["model"],
                     "cycles": Cell(f"{f['cycles']:,}", f["cycles"]), "search_val_error": cell(s["val_error"]),
                     "search_val_metric": cell(s["val_metric"], 3), "final_val_error": cell(fin["val_error"]),
                     "final_test_error": cell(fin["test_error"]), "final_val_metric": cell(fin["val_metric"], 3),
                     "final_test_metric": cell(fin["test_metric"], 3),
                     "seeds": Cell(f"{fin['finished']}/{fin['seeds']}", fin["finished"])})
    return Table(cols, rows, id="search-finalists")


def runs_section(runs: list, description: str = "") -> Section:
    sec = Section("runs", "Runs")
    if description:
        sec.blocks.append(KeyValues([("study", description)]))
    sec.blocks.append(Table(COMPARE_COLUMNS, [compare_row(f) for f in runs], id="comparison",
                            row_ids=[f.label for f in runs]))
    sec.blocks.append(Note("Click a column's title to sort by it (again to reverse). Best val acc: the highest "
                           "validation accuracy of any epoch; test acc/loss: the best-validation weights on the "
                           "test split; latency: from bench.json; score: the competition points from score.json; "
                           "time to accuracy: when the run recorded one."))
    return sec


def curves_section(figs: dict, missing: list) -> Section:
    sec = Section("curves", "Curves")
    for name, alt, caption in (
            ("val_acc", "validation accuracy of every run against epoch",
             "Validation accuracy per epoch; a cross marks each run's test accuracy (best-validation weights) at its "
             "last epoch."),
            ("train_loss", "training loss of every run against iteration",
             "Training loss per iteration, each run's moving mean over 2% of its iterations."),
            ("val_loss", "validation loss of every run against epoch", "Validation loss at each epoch's end.")):
        if name in figs:
            sec.blocks.append(Image(f"compare_{name}", figs[name], caption, alt))
    if not figs:
        sec.blocks.append(Note("no run has recorded a training step or an epoch yet"))
        missing.append("Curves: no run has recorded a training step or an epoch yet")
    return sec


def bench_section(runs: list) -> Section:
    sec = Section("bench", "Devices: accuracy and latency")
    rows = [{"run": f.label, **bench_row(r)} for f in runs for r in (f.bench or [])]
    if rows:
        sec.blocks.append(Table([("run", "run", "text")] + BENCH_COLUMNS, rows, id="bench"))
    else:
        sec.blocks.append(Note("no run has a bench.json yet: `cnnlab bench RUN_DIR --devices cpu,cuda` measures "
                               "accuracy and latency per device"))
    return sec


def hardware_section(runs: list) -> Section:
    rows = []
    for f in runs:
        s = f.summary or {}
        env = s.get("environment") or {}
        gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
        rows.append({"run": f.label, "device": text(s.get("device")) if s else "-",
                     "cpu": text(env.get("cpu_model")) if env else "-",
                     "cores": count(env.get("cpu_cores")), "gpus": gpus if env else "-",
                     "torch": text(env.get("torch")) if env else "-"})
    return Section("hardware", "Hardware", [Table(
        [("run", "run", "text"), ("device", "device used", "text"), ("cpu", "CPU", "text"),
         ("cores", "cores", "num"), ("gpus", "GPUs", "text"), ("torch", "PyTorch", "text")], rows, id="hardware")])


def notes_section(runs: list, missing: list) -> Section:
    """Each run's notes; those that leave a run without its config, result, curves or model also go to `missing`."""
    sec = Section("notes", "Notes on the runs")
    for f in runs:
        for key in ("config", "summary", "metrics", "iterations", "model", "cost", "score", "bench"):
            if key in f.notes:
                line = f"{f.label}: {f.notes[key]}"
                sec.blocks.append(Note(line))
                if key in ("config", "summary", "metrics", "model"):
                    missing.append(line)
    if not sec.blocks:
        sec.blocks.append(KeyValues([("all runs", "finished, with every file a report reads")]))
    return sec


def comparison_document(runs: list, title: str, description: str = "", sources: str = ""):
    """(Document, figures) comparing several runs (RunFiles)."""
    missing = []
    sections = [runs_section(runs, description)]
    exp = _experiment_table(runs)
    if exp is not None:
        sections.append(Section("experiments", "Per experiment", [exp]))
    figs = compare_figures(runs)
    sections += [curves_section(figs, missing), bench_section(runs), hardware_section(runs),
                 notes_section(runs, missing)]
    subtitle = f"{len(runs)} runs · " + ", ".join(sorted({f.config.dataset for f in runs if f.config}) or ["?"])
    return Document(title, subtitle, sections, missing, sources), figs
