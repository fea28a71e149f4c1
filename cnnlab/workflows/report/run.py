"""The report of one run: its Document, section by section, from what its run directory holds.

    doc, figs = run_document(read_run("runs/x"), data_dir=None, device="cpu", evaluate=True)
    render_html(doc)                       # cnnlab.workflows.report.html

The sections, in order: result (status from RunDir.status, test result, timing, transfer), the
training curves, the first layer's filters, the confusion matrix with a per-class table, the
most confident mistakes (cnnlab.workflows.report.plot's figures), the layers and their cost
(cnnlab.cost on the trained model, or on the network the config trains when there is no
checkpoint yet), the competition score, the devices (bench.json), the hardware and the
configuration. What a run lacks becomes a Note in the section where it would have been, and a
line of the document's `missing` list.
"""

from __future__ import annotations

from cnnlab.errors import CnnlabError
from cnnlab.workflows.report.document import (Document, Image, KeyValues, Note, Pre, Section, Table, count, fixed,
                                              number, pct, seconds, text, time_to_accuracy, with_unit)
from cnnlab.workflows.report.plot import run_figures
from cnnlab.workflows.report.snapshot import RunFiles


def cost_of(files: RunFiles):
    """The cost model's report (cnnlab.cost.analyze) of the run's model, or None with a note."""
    from cnnlab.cost.report import analyze

    model, shape = files.cost_model()
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
        rows += [("test accuracy", with_unit(pct(s.get("test_acc")), "%")),
                 ("test loss", fixed(s.get("test_loss")).text), ("test images", count(s.get("test_count")).text),
                 ("best epoch", text(s.get("best_epoch"))),
                 ("best validation accuracy", with_unit(pct(s.get("best_val_acc")), "%")),
                 ("epochs run", text(s.get("epochs_run"))),
                 ("training time", with_unit(seconds(s.get("train_seconds")), " s")),
                 ("time per epoch", with_unit(seconds(s.get("seconds_per_epoch")), " s")),
                 ("time to accuracy", time_to_accuracy(s.get("time_to_accuracy")).text),
                 ("parameters", count(s.get("params")).text),
                 ("trainable parameters", count(s.get("trainable_params")).text)]
        pre = s.get("pretrained")
        if isinstance(pre, dict):  # --pretrained (cnnlab.train.transfer)
            tr = s.get("transfer") or {}
            rows += [("pretrained from", f"{text(pre.get('source'))} ({text(pre.get('kind'))}, "
                                         f"{text(pre.get('layout'))} layout; sha256 {str(pre.get('sha256'))[:12]})"),
                     ("pretrained weights loaded", f"{count(pre.get('loaded_params')).text} of the backbone's "
                                                   f"{count(pre.get('backbone_params')).text} parameters; new: "
                                                   f"{', '.join(pre.get('new') or {}) or 'none'}"),
                     ("backbone", ("fine-tuned" if tr.get("freeze") == "none" else
                                   f"frozen, then thawed from the top over {tr['unfreeze_epochs']} epochs"
                                   if tr.get("unfreeze_epochs") else "frozen, only the head trains")
                      + (f", at {tr['backbone_lr_mult']:g}x the learning rate"
                         if tr.get("backbone_lr_mult") not in (None, 1, 1.0) else ""))]
        rows.append(("why it stopped", text(s.get("stop_reason"))))
    elif files.metrics:
        best = max(files.metrics, key=lambda m: (m.get("val_acc", -1), -m["epoch"]))
        rows += [("epochs finished", str(len(files.metrics))),
                 ("best validation accuracy", f"{with_unit(pct(best.get('val_acc')), '%')} (epoch {best['epoch']:g})"),
                 ("training time so far", with_unit(seconds(sum(m.get("seconds", 0) for m in files.metrics)), " s"))]
    if files.iterations:
        rows.append(("training steps recorded", f"{int(files.iterations[-1]['step']):,}"))
    return rows


def _config_rows(files: RunFiles) -> list:
    if files.config is None:
        return []
    return [(k, text(v)) for k, v in files.config.to_dict().items()]


def _hardware_rows(files: RunFiles) -> list:
    s = files.summary or {}
    env = s.get("environment") or {}
    if not env and not s:
        return []
    gpus = ", ".join(f"{g.get('name')} ({g.get('memory_gib')} GiB)" for g in env.get("gpus") or []) or "none"
    rows = [("device used", text(s.get("device"))), ("CPU", text(env.get("cpu_model"))),
            ("CPU cores", text(env.get("cpu_cores"))), ("memory", f"{text(env.get('memory_gib'))} GiB"),
            ("GPUs", gpus), ("PyTorch", text(env.get("torch"))), ("CUDA", text(env.get("cuda"))),
            ("PyTorch threads", text(env.get("torch_threads"))), ("Python", text(env.get("python"))),
            ("platform", text(env.get("platform"))), ("cnnlab", text(s.get("cnnlab_version")))]
    if s.get("git_commit"):
        rows.append(("git commit", s["git_commit"] + (" (with local changes)" if s.get("git_dirty") else "")))
    return rows


# the devices table's columns, one row per bench.json entry (the comparison adds a run column)
BENCH_COLUMNS = [("device", "device", "text"), ("status", "status", "text"), ("test_acc", "test acc %", "num"),
                 ("test_loss", "test loss", "num"), ("lat1", "latency batch 1 (ms)", "num"),
                 ("latb", "latency per image in a batch (ms)", "num"), ("batch", "batch", "num"),
                 ("train5", "train 5 epochs (s)", "num"), ("score", "score (acc / s at batch 1)", "num")]


def bench_row(r: dict) -> dict:
    return {"device": text(r.get("device")), "status": text(r.get("status")), "test_acc": pct(r.get("test_acc")),
            "test_loss": fixed(r.get("test_loss")), "lat1": fixed(r.get("latency_ms_batch1"), 3),
            "latb": fixed(r.get("latency_ms_per_image_batch"), 4), "batch": count(r.get("batch_size")),
            "train5": seconds(r.get("train_seconds_5_epochs")), "score": fixed(r.get("score"), 1)}


def _score_rows(sc: dict) -> list:
    parts = sc.get("points_by_part") or {}
    rows = [("points", f"{text(sc.get('points'))} (error {parts.get('error', '-')}, energy {parts.get('energy', '-')}, "
                       f"latency {parts.get('latency', '-')})"),
            ("ranking metric (lower is better)", fixed(sc.get("metric"), 4).text),
            ("test accuracy", f"{pct(sc.get('test_accuracy')).text}% ({text(sc.get('test_correct'))} of "
                              f"{text(sc.get('test_images'))})"),
            ("energy", f"{fixed(sc.get('energy_mj'), 4).text} mJ"), ("cycles", count(sc.get("cycles")).text),
            ("peak activation", f"{count(sc.get('peak_activation_bytes')).text} B at {text(sc.get('peak_activation_layer'))}"
                                f" (limit {count(sc.get('max_activation_bytes')).text} B)"),
            ("accelerator", text(sc.get("architecture"))),
            ("hard constraints failed", "; ".join(sc.get("hard_constraints_failed") or []) or "none")]
    if sc.get("note"):
        rows.append(("note", sc["note"]))
    return rows


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




# ---- the sections, in the order the report shows them ------------------------------------------

def _absent(section: Section, why: str, missing: list):
    """A note where the section's content would be, repeated in the document's `missing` list."""
    section.blocks.append(Note(why))
    missing.append(f"{section.title}: {why}")


def result_section(files: RunFiles, missing: list) -> Section:
    sec = Section("result", "Result", [KeyValues(_result_rows(files))])
    if files.summary is None and files.short_status != "finished":
        tail = [line for line in files.log if line.strip()][-8:]
        sec.blocks.append(Note("The run did not finish, so it has no final test result; the figures below show "
                               "what it recorded." + (" The end of its train.log:" if tail else "")))
        missing.append(f"Result: the run {files.short_status} before its final test evaluation (see Result)")
        if tail:
            sec.blocks.append(Pre("\n".join(tail)))
    return sec


def curves_section(figs: dict, fig_notes: dict, missing: list) -> Section:
    sec = Section("curves", "Training curves")
    for name, alt in (("loss", "training loss against iteration, validation loss per epoch"),
                      ("accuracy", "training and validation accuracy against epoch"),
                      ("lr", "learning rate against iteration")):
        if name in figs:
            sec.blocks.append(Image(name, figs[name], _CAPTIONS[name], alt))
    if not any(n in figs for n in ("loss", "accuracy", "lr")):
        _absent(sec, fig_notes.get("loss") or "nothing was recorded", missing)
    elif "accuracy" not in figs:
        _absent(sec, fig_notes.get("accuracy", "no epoch has finished"), missing)
    return sec


def filters_section(figs: dict, fig_notes: dict, missing: list) -> Section:
    sec = Section("filters", "First-layer filters")
    if "filters" in figs:
        sec.blocks.append(Image("filters", figs["filters"], _CAPTIONS["filters"], "the first convolution's filters"))
    else:
        _absent(sec, fig_notes.get("filters", "no filters"), missing)
    return sec


def _per_class_table(test) -> Table:
    """Accuracy per class, and the class each is most often taken for (ties: the lower index)."""
    rows = []
    for i, (name, acc) in enumerate(zip(test.classes, test.per_class_accuracy)):
        row = test.confusion[i]
        off = [(row[j], j) for j in range(len(row)) if j != i and row[j] > 0]
        worst = max(off, key=lambda x: (x[0], -x[1])) if off else None
        rows.append({"index": count(i), "class": str(name), "acc": pct(acc), "images": count(sum(row)),
                     "confused": f"{test.classes[worst[1]]} ({worst[0]})" if worst else "-"})
    return Table([("index", "#", "num"), ("class", "class", "text"), ("acc", "accuracy %", "num"),
                  ("images", "images", "num"), ("confused", "most often taken for", "text")], rows, id="per-class")


def confusion_section(figs: dict, fig_notes: dict, test, missing: list) -> Section:
    sec = Section("confusion", "Confusion matrix and per-class accuracy")
    if test is None:
        _absent(sec, fig_notes.get("confusion", "no evaluation"), missing)
        return sec
    sec.blocks.append(Note(f"From {test.source}.") if test.saved else KeyValues([("source", test.source)]))
    sec.blocks.append(Image("confusion", figs["confusion"], _CAPTIONS["confusion"], "confusion matrix"))
    sec.blocks.append(_per_class_table(test))
    return sec


def mistakes_section(figs: dict, fig_notes: dict, missing: list) -> Section:
    sec = Section("mistakes", "Most confident mistakes")
    if "mistakes" in figs:
        sec.blocks.append(Image("mistakes", figs["mistakes"], _CAPTIONS["mistakes"], "misclassified test images"))
    else:
        _absent(sec, fig_notes.get("mistakes", "no evaluation"), missing)
    return sec


def layers_section(files: RunFiles, missing: list) -> Section:
    sec = Section("layers", "Layers and cost")
    rep = cost_of(files)
    if rep is None:
        _absent(sec, files.notes.get("cost", "no model"), missing)
        return sec
    t = rep.totals
    sec.blocks.append(KeyValues([
        ("input", "x".join(map(str, rep.in_shape))), ("parameters", f"{t['params']:,}"),
        ("MACs", f"{t['macs']:,}"), ("peak activation (competition rule)",
                                     f"{rep.peak_activation:,} bytes at {rep.peak_layer}"),
        ("accelerator", f"{rep.arch.name}: {t['cycles']:,} cycles, {t['energy_pj'] / 1e9:.4f} mJ")]))
    sec.blocks.append(_layer_table(rep))
    if rep.uncounted:
        sec.blocks.append(Note(f"{len(rep.uncounted)} operation(s) have no cost rule and are not counted: "
                               + ", ".join(sorted({op for op, _ in rep.uncounted}))))
    return sec


def score_section(files: RunFiles) -> Section:
    sec = Section("score", "Competition score")
    if files.score:
        sec.blocks.append(KeyValues(_score_rows(files.score)))
    else:
        sec.blocks.append(Note(files.notes.get("score") or
                               f"no score.json yet: `cnnlab score {files.dir.path}` adds the competition score"))
    return sec


def bench_section(files: RunFiles) -> Section:
    sec = Section("bench", "Devices: accuracy and latency")
    if files.bench:
        sec.blocks.append(Table(BENCH_COLUMNS, [bench_row(r) for r in files.bench], id="bench"))
    else:
        sec.blocks.append(Note(files.notes.get("bench") or
                               f"no bench.json yet: `cnnlab bench {files.dir.path}` measures accuracy and latency "
                               "per device"))
    return sec


def hardware_section(files: RunFiles, missing: list) -> Section:
    sec = Section("hardware", "Hardware")
    hw = _hardware_rows(files)
    if hw:
        sec.blocks.append(KeyValues(hw))
    else:
        _absent(sec, "not recorded: the machine is written to summary.json when a run finishes", missing)
    return sec


def config_section(files: RunFiles, missing: list) -> Section:
    sec = Section("config", "Configuration")
    if files.config is not None:
        sec.blocks.append(KeyValues(_config_rows(files)))
    else:
        _absent(sec, files.notes.get("config", "no config"), missing)
    return sec


def _subtitle(files: RunFiles) -> str:
    cfg, s = files.config, files.summary or {}
    return " · ".join(x for x in (
        f"model {cfg.model if cfg else '?'}", f"dataset {cfg.dataset}" if cfg else "",
        f"engine {cfg.engine}" if cfg else "", f"device {s['device']}" if s.get("device") else "",
        f"test accuracy {100 * s['test_acc']:.2f}%" if number(s.get("test_acc")) is not None else files.short_status)
        if x)


def run_document(files: RunFiles, data_dir=None, device="cpu", evaluate: bool = True):
    """(Document, figures) of one run."""
    figs, fig_notes, test = run_figures(files, data_dir, device, evaluate)
    missing = []
    sections = [result_section(files, missing), curves_section(figs, fig_notes, missing),
                filters_section(figs, fig_notes, missing), confusion_section(figs, fig_notes, test, missing),
                mistakes_section(figs, fig_notes, missing), layers_section(files, missing), score_section(files),
                bench_section(files), hardware_section(files, missing), config_section(files, missing)]
    for key in ("summary", "saved_evaluation"):  # damaged files
        if key in files.notes and "not valid JSON" in files.notes[key]:
            missing.append(files.notes[key])
    return Document(f"cnnlab run report: {files.label}", _subtitle(files), sections, missing,
                    str(files.dir.path)), figs
