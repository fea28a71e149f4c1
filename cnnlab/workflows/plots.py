"""Figures of a run, made from its run directory: what `cnnlab plot` writes and reports embed.

    result = plot_run("runs/x")         # every figure that can be drawn, written to runs/x/plots/
    result.figures["loss"]              # a matplotlib Figure (shows inline in a notebook)
    result.files["loss"]                # runs/x/plots/loss.png
    result.notes                        # figure -> why it could not be drawn, e.g. no conv layer

The figures (cnnlab.dirs.PLOT_FILES names their files):

    loss        training loss against iteration (each step, and a moving mean), validation loss at
                each epoch's end
    accuracy    training and validation accuracy against epoch, the best epoch marked
    lr          the learning rate against iteration
    filters     the first convolution layer's filters, one tile each, each scaled to its own range
                (colour for 3-channel input; cnnlab.models.filters)
    confusion   the confusion matrix of the test split
    mistakes    the test images the model got wrong with the highest confidence, with true and
                predicted labels

The last two evaluate the run's best weights on its test split (the dataset must be at hand);
both engines' runs load as PyTorch models (a scratch run's checkpoint holds PyTorch weights).
Figures are drawn with matplotlib's Agg renderer on `Figure` objects (no pyplot state, no
window) and saved without a date or version stamp, so the same run gives the same PNG bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write
from cnnlab.dirs import PLOT_FILES, LoadedRun, RunDir, load_run

DPI = 100
# the filter grid's background: a blue-grey that a grey filter tile can never be
FILTER_BACKGROUND = "#dfe7ef"
MISTAKES_SHOWN = 24  # 4 rows of 6
CURVE_SIZE = (7.0, 4.2)  # inches, at DPI: 700 x 420 pixels


def _figure(width, height, **kw):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, **kw)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes, with no software or date stamp: same figure, same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def save_png(fig, path) -> Path:
    """Write the figure atomically as PNG; returns the path."""
    path = Path(path)
    data = png_bytes(fig)
    atomic_write(path, lambda f: f.write(data), mode="wb")
    return path


# ---- reading a run --------------------------------------------------------------------------

@dataclass
class RunFiles:
    """What a run directory holds, read once; absent files are None / [] and explained in `notes`."""

    dir: RunDir
    label: str
    config: TrainConfig | None = None
    summary: dict | None = None
    metrics: list = field(default_factory=list)
    iterations: list = field(default_factory=list)
    saved_evaluation: dict | None = None  # the test split's evaluation.json (`cnnlab evaluate`)
    score: dict | None = None
    bench: list | None = None
    log: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)  # topic -> note
    _loaded: object = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def status(self) -> str:
        """'finished', or why not, in a few words."""
        if self.summary is not None:
            return "finished"
        stopped = [line for line in self.log if line.startswith("stopped")]
        if stopped:
            return "stopped: " + stopped[-1].split(":", 1)[-1].strip()
        return "did not finish (no summary.json: it crashed, was killed, or is still training)"

    @property
    def short_status(self) -> str:
        """'finished', 'stopped' (it said why in train.log) or 'did not finish'."""
        if self.summary is not None:
            return "finished"
        return "stopped" if any(line.startswith("stopped") for line in self.log) else "did not finish"

    def model(self) -> LoadedRun | None:
        """The run's best weights as a PyTorch model (`load_run`), or None with a note why not."""
        if self._loaded is None and not (self.dir.best.exists() or self.dir.last.exists()):
            self._loaded = False
            self.notes["model"] = ("no checkpoint was written yet (the run stopped before its first save), so there "
                                   "is no trained model: no filters and no test evaluation")
        if self._loaded is None:
            try:
                self._loaded = load_run(self.dir.path)
            except CnnlabError as e:
                self._loaded = False
                self.notes["model"] = f"the trained model could not be loaded: {e}"
        return self._loaded or None


def read_run(run_dir, label: str | None = None) -> RunFiles:
    """Read a run directory's files; a damaged JSON file becomes a note, not an error."""
    rd = RunDir(run_dir).check()
    files = RunFiles(rd, label or rd.path.name)
    try:
        files.config = TrainConfig.load(rd.config)
    except CnnlabError as e:
        files.notes["config"] = str(e)
    for attr, path in (("summary", rd.summary), ("saved_evaluation", rd.evaluation_files("test")[0]),
                       ("score", rd.score), ("bench", rd.bench_json)):
        try:
            setattr(files, attr, rd.read_json(path))
        except CnnlabError as e:
            files.notes[attr] = str(e)
    try:
        files.metrics = [m for m in rd.read_metrics() if "epoch" in m]
        files.iterations = [r for r in rd.read_iterations() if "step" in r]
    except (ValueError, OSError) as e:
        files.notes["metrics"] = f"the metrics files could not be read ({e})"
    files.log = rd.read_log()
    if not files.metrics and "metrics" not in files.notes:
        files.notes["metrics"] = ("no epoch has finished yet (metrics.csv is missing or empty), so there are no "
                                  "accuracy curves")
    if not files.iterations and not files.metrics:
        files.notes["iterations"] = "no training step was recorded (iterations.csv is missing or empty)"
    if files.summary is None and "summary" not in files.notes:
        files.notes["summary"] = (f"the run {files.short_status} (no summary.json), so it has no final test result; "
                                  "its figures show what it recorded")
    return files


# ---- the test split: confusion matrix and mistakes ----------------------------------------------

@dataclass
class Evaluation:
    accuracy: float
    loss: float
    count: int
    correct: int
    classes: list
    confusion: list  # rows: true class, columns: predicted class
    per_class_accuracy: list
    source: str  # where the figures come from
    saved: bool = False  # True: read from the run's evaluation.json, not evaluated now
    mistakes: dict | None = None  # images, true, pred, confidence, index (most confident first)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("accuracy", "loss", "count", "correct", "classes", "confusion",
                                           "per_class_accuracy", "source")}
        if self.mistakes is not None:
            d["mistakes"] = {k: v for k, v in self.mistakes.items() if k != "images"}
        return d


def evaluate_test(files: RunFiles, data_dir=None, device="cpu", shown: int = MISTAKES_SHOWN) -> Evaluation | None:
    """Evaluate the run's best weights on its test split; None (and a note) when the model or the
    data is not at hand, in which case evaluation.json (if any) still gives the confusion matrix."""
    import torch

    from cnnlab.device import resolve_device
    from cnnlab.evaluate import evaluate_logits, predict_logits

    run = files.model()
    test = None
    if run is not None:
        try:
            test = run.split("test", data_dir)
        except CnnlabError as e:
            files.notes["test"] = (f"the test split could not be loaded ({e}); pass --data-dir to evaluate the run, "
                                   "or run `cnnlab evaluate` where its data is")
    if run is None or test is None or len(test) == 0:
        if test is not None and len(test) == 0:
            files.notes["test"] = "the test split is empty: no confusion matrix and no mistakes"
        ev = files.saved_evaluation
        if ev and ev.get("confusion"):
            classes = ev.get("classes") or [str(i) for i in range(len(ev["confusion"]))]
            return Evaluation(ev["accuracy"], ev["loss"], ev["count"], ev["correct"], classes, ev["confusion"],
                              ev["per_class_accuracy"], "the run's evaluation.json (written by `cnnlab evaluate`)",
                              saved=True)
        return None
    d = run.data
    dev = resolve_device(device)
    logits = predict_logits(run.model.to(dev), test, d["mean"], d["std"], device=dev, tta=run.config.tta)
    run.model.to("cpu")
    ev = evaluate_logits(logits, test.y, d["num_classes"], run.loss_name)
    probs = torch.softmax(logits.double(), 1)
    conf, pred = probs.max(1)
    wrong = (pred != test.y).nonzero().flatten().numpy()
    order = wrong[np.argsort(-conf.numpy()[wrong], kind="stable")][:shown]
    mistakes = {"index": order.tolist(), "true": test.y[order].tolist(), "pred": pred[order].tolist(),
                "confidence": conf[order].tolist(), "images": test.x[order].numpy(), "wrong": int(len(wrong))}
    engine = files.config.engine if files.config else "torch"
    source = f"evaluated now on the {len(test)} test images ({run.which} weights"
    source += ", the PyTorch twin of the scratch model)" if engine == "scratch" else ")"
    return Evaluation(ev["accuracy"], ev["loss"], ev["count"], ev["correct"], list(d["classes"]), ev["confusion"],
                      ev["per_class_accuracy"], source, mistakes=mistakes)


# ---- the figures ----------------------------------------------------------------------------

def _finite(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def moving_mean(values, width: int):
    """The mean of the last `width` values at each point (fewer at the start)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= width:
            acc -= values[i - width]
        out.append(acc / min(i + 1, width))
    return out


def _log_if_wide(ax, values):
    pos = [v for v in values if v > 0]
    if pos and len(pos) == len(values) and max(pos) / min(pos) > 20:
        ax.set_yscale("log")


def _finish(ax, title, xlabel, ylabel, legend=True):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def _epoch_axis(ax, epochs):
    """Whole epochs on the x axis; a single epoch sits in the middle, not on a 0.96-1.04 scale."""
    ax.xaxis.get_major_locator().set_params(integer=True)
    if epochs and min(epochs) == max(epochs):
        ax.set_xlim(min(epochs) - 1, max(epochs) + 1)


def epoch_end_steps(iterations) -> dict:
    """epoch (1-based) -> the step that ended it, from iterations.csv."""
    ends = {}
    for r in iterations:
        e = int(r.get("epoch", 0))
        ends[e] = max(ends.get(e, 0), int(r["step"]))
    return ends


def loss_figure(iterations, metrics, title: str = "loss"):
    """Training loss against iteration with validation loss at each epoch's end (against epoch when
    only metrics.csv exists); None when neither file has rows."""
    if not iterations and not metrics:
        return None
    fig = _figure(*CURVE_SIZE, layout="constrained")
    ax = fig.add_subplot()
    plotted = []
    if iterations:
        steps, loss = _finite([r["step"] for r in iterations], [r.get("loss") for r in iterations])
        width = max(1, len(steps) // 50)
        ax.plot(steps, loss, color="C0", lw=0.7, alpha=0.35 if width > 1 else 1.0,
                label="training loss (each iteration)")
        if width > 1:
            ax.plot(steps, moving_mean(loss, width), color="C0", lw=1.8, label=f"training loss (mean of {width} iterations)")
        ends = epoch_end_steps(iterations)
        vx, vy = _finite([ends.get(int(m["epoch"])) for m in metrics if int(m["epoch"]) in ends],
                         [m.get("val_loss") for m in metrics if int(m["epoch"]) in ends])
        if vx:
            ax.plot(vx, vy, "o-", color="C1", lw=1.8, ms=5, label="validation loss (end of each epoch)")
        plotted = loss + vy
        xlabel = "iteration (training steps)"
    else:
        ex, tl = _finite([m["epoch"] for m in metrics], [m.get("train_loss") for m in metrics])
        vx, vl = _finite([m["epoch"] for m in metrics], [m.get("val_loss") for m in metrics])
        ax.plot(ex, tl, "o-", color="C0", label="training loss (mean over the epoch)")
        ax.plot(vx, vl, "o-", color="C1", label="validation loss (end of each epoch)")
        plotted = tl + vl
        xlabel = "epoch"
        _epoch_axis(ax, ex + vx)
    _log_if_wide(ax, plotted)
    _finish(ax, title, xlabel, "loss (mean per image)")
    return fig


def accuracy_figure(metrics, title: str = "accuracy", best_epoch: int | None = None):
    """Training and validation accuracy (%) against epoch; None without metrics rows."""
    if not metrics:
        return None
    fig = _figure(*CURVE_SIZE, layout="constrained")
    ax = fig.add_subplot()
    ex, ta = _finite([m["epoch"] for m in metrics], [m.get("train_acc") for m in metrics])
    vx, va = _finite([m["epoch"] for m in metrics], [m.get("val_acc") for m in metrics])
    ax.plot(ex, [100 * a for a in ta], "o-", color="C0", label="training accuracy (during the epoch)")
    ax.plot(vx, [100 * a for a in va], "o-", color="C1", label="validation accuracy (end of the epoch)")
    if va:
        by_epoch = dict(zip(vx, va))
        if best_epoch not in by_epoch:  # the first epoch with the highest validation accuracy
            best_epoch = max(vx, key=lambda e: (by_epoch[e], -e))
        best = by_epoch[best_epoch]
        ax.plot([best_epoch], [100 * best], "*", color="C3", ms=14,
                label=f"best: {100 * best:.2f}% at epoch {best_epoch:g}")
    _epoch_axis(ax, ex + vx)
    _finish(ax, title, "epoch", "accuracy (%)")
    return fig


def lr_figure(iterations, metrics, title: str = "learning rate"):
    """The learning rate against iteration (against epoch when only metrics.csv exists)."""
    if iterations:
        xs, ys = _finite([r["step"] for r in iterations], [r.get("lr") for r in iterations])
        xlabel = "iteration (training steps)"
    elif metrics:
        xs, ys = _finite([m["epoch"] for m in metrics], [m.get("lr") for m in metrics])
        xlabel = "epoch"
    else:
        return None
    if not xs:
        return None
    fig = _figure(*CURVE_SIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(xs, ys, color="C2", lw=1.8, label="learning rate")
    _log_if_wide(ax, ys)
    _finish(ax, title, xlabel, "learning rate", legend=False)
    return fig


def filters_figure(model, title: str = "first convolution layer's filters"):
    """One tile per filter of the first Conv2d, in a grid on a blue-grey background; None when the
    model has no convolution. The figure's `filter_count` attribute is the number of tiles."""
    from cnnlab.models.filters import filter_tiles, first_conv, grid_shape

    found = first_conv(model)
    if found is None:
        return None
    name, conv = found
    tiles = filter_tiles(conv.weight)
    n, kh, kw, c = tiles.shape
    rows, cols = grid_shape(n)
    tile = min(0.75, 9.0 / cols)  # inches
    gap, side, head = 0.16 * tile, 0.25, 0.85
    grid_w = cols * tile + (cols - 1) * gap
    width = max(grid_w + 2 * side, 5.5)
    height = rows * tile + (rows - 1) * gap + side + head
    fig = _figure(width, height, facecolor=FILTER_BACKGROUND)
    x0 = (width - grid_w) / 2
    for i in range(n):
        r, col = divmod(i, cols)
        left = x0 + col * (tile + gap)
        bottom = height - head - (r + 1) * tile - r * gap
        ax = fig.add_axes((left / width, bottom / height, tile / width, tile / height))
        if c == 3:
            ax.imshow(tiles[i], interpolation="nearest")
        else:
            ax.imshow(tiles[i][..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_off()
    in_ch = conv.in_channels // conv.groups
    colour = "in colour (R, G, B)" if c == 3 else ("grey" if in_ch == 1 else f"grey, the mean over {in_ch} channels")
    fig.text(0.5, 1 - 0.28 / height, title, ha="center", va="center", fontsize=12)
    fig.text(0.5, 1 - 0.62 / height,
             f"{name}: {n} filters {kh}x{kw} over {in_ch} input channel{'s' if in_ch != 1 else ''}, {colour}\n"
             "each scaled to its own range: dark = most negative weight, light = most positive",
             ha="center", va="center", fontsize=8, color="0.25")
    fig.filter_count = n
    return fig


def confusion_figure(confusion, classes, title: str = "confusion matrix (test split)"):
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(cm)
    side = min(max(5.0, 0.45 * k + 2.5), 12.0)
    fig = _figure(side + 1.2, side, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest", vmin=0)
    if k <= 20:
        top = cm.max() if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8 if k <= 12 else 6,
                        color="white" if top and cm[i, j] > top / 2 else "black")
    ticks = list(range(k)) if k <= 30 else list(range(0, k, max(1, k // 10)))
    names = [str(classes[t]) for t in ticks]
    ax.set_xticks(ticks, names, rotation=45 if max((len(s) for s in names), default=0) > 3 else 0, ha="right"
                  if max((len(s) for s in names), default=0) > 3 else "center")
    ax.set_yticks(ticks, names)
    fig.colorbar(im, ax=ax, label="images", shrink=0.8)
    ax.set_title(title)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return fig


def mistakes_figure(mistakes: dict, classes, title: str = "most confident mistakes (test split)"):
    """The wrongly classified test images with the highest confidence, most confident first:
    'true' and 'pred' labels and the predicted class's probability above each."""
    rows, cols = 4, 6
    fig = _figure(9.0, 7.6, layout="constrained")
    images = mistakes["images"]
    n = min(len(images), rows * cols)
    fig.suptitle(f"{title}: {n} of {mistakes.get('wrong', n)} wrong" if n else f"{title}: none, every image is right")
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i >= n:
            continue
        img = np.asarray(images[i])
        if img.shape[0] == 3:
            ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(img.mean(axis=0) if img.shape[0] > 1 else img[0], cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
        t, p = mistakes["true"][i], mistakes["pred"][i]
        ax.set_title(f"true {classes[t]}\npred {classes[p]} ({100 * mistakes['confidence'][i]:.0f}%)", fontsize=8,
                     color="C3")
    return fig


def profile_figure(result: dict, title: str | None = None):
    """A per-layer time profile (`cnnlab.scratch.profile.profile_step`'s result) as stacked bars."""
    layers = [r for r in result["layers"]]
    names = [r["layer"] if r["index"] is None else f"{r['index']}: {r['layer']}" for r in layers]
    fig = _figure(7.0, max(2.5, 0.32 * len(layers) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(layers))[::-1]
    fwd = [r["forward_ms"] for r in layers]
    bwd = [r["backward_ms"] for r in layers]
    ax.barh(y, fwd, color="C0", label="forward")
    ax.barh(y, bwd, left=fwd, color="C1", label="backward")
    ax.set_yticks(y, names)
    _finish(ax, title or f"time per layer of one training step ({result['step_ms']:.1f} ms, batch "
                         f"{result['batch_size']})", "time (ms, median)", "layer")
    return fig


# ---- a run's figures ------------------------------------------------------------------------

@dataclass
class RunPlots:
    run_dir: Path
    figures: dict  # name -> matplotlib Figure, in PLOT_FILES order
    files: dict  # name -> PNG path written (empty when write=False)
    notes: dict  # name -> why that figure is not there
    test: Evaluation | None = None  # the evaluation the confusion matrix and mistakes come from

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "files": {k: str(v) for k, v in self.files.items()},
                "notes": self.notes, "test": self.test.to_dict() if self.test else None}


def run_figures(files: RunFiles, data_dir=None, device="cpu", evaluate: bool = True):
    """(figures, notes, test result) of a run already read."""
    figs, notes = {}, {}
    label = files.label
    best = (files.summary or {}).get("best_epoch")
    figs["loss"] = loss_figure(files.iterations, files.metrics, f"{label}: training and validation loss")
    figs["accuracy"] = accuracy_figure(files.metrics, f"{label}: accuracy",
                                       best if isinstance(best, int) and best > 0 else None)
    figs["lr"] = lr_figure(files.iterations, files.metrics, f"{label}: learning rate")
    for name in ("loss", "lr"):
        if figs[name] is None:
            notes[name] = files.notes.get("iterations") or files.notes.get("metrics", "nothing recorded")
    if figs["accuracy"] is None:
        notes["accuracy"] = files.notes.get("metrics", "no epoch has finished yet")
    run = files.model()
    if run is None:
        notes["filters"] = files.notes.get("model", "no trained model")
    else:
        figs["filters"] = filters_figure(run.model, f"{label}: first convolution layer's filters")
        if figs["filters"] is None:
            notes["filters"] = (f"the model ({run.config.model}) has no convolution layer, so there are no filters "
                                "to show")
    test = evaluate_test(files, data_dir, device) if evaluate else None
    if test is not None:
        figs["confusion"] = confusion_figure(test.confusion, test.classes,
                                             f"{label}: confusion matrix, test split ({test.count} images, "
                                             f"{100 * test.accuracy:.2f}% right)")
        if test.mistakes is not None:
            figs["mistakes"] = mistakes_figure(test.mistakes, test.classes, f"{label}: most confident mistakes")
        else:
            notes["mistakes"] = files.notes.get("test") or files.notes.get("model") or "the test images are not at hand"
    else:
        why = files.notes.get("test") or files.notes.get("model") or "evaluation was not asked for"
        notes["confusion"] = notes["mistakes"] = why
    figs = {k: figs[k] for k in PLOT_FILES if figs.get(k) is not None}
    return figs, {k: notes[k] for k in PLOT_FILES if k in notes}, test


def plot_run(run_dir, data_dir=None, device="cpu", write: bool = True, evaluate: bool = True) -> RunPlots:
    """Draw every figure a run directory allows and (by default) write them to RUN_DIR/plots/."""
    files = read_run(run_dir)
    figs, notes, test = run_figures(files, data_dir, device, evaluate)
    written = {}
    if write:
        for name, fig in figs.items():
            written[name] = save_png(fig, files.dir.plot_file(name))
    return RunPlots(files.dir.path, figs, written, notes, test)


# ---- several runs on one set of axes --------------------------------------------------------

def _colours(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def compare_figures(runs) -> dict:
    """Overlaid curves of several runs: `runs` is a list of RunFiles. Returns name -> Figure for
    'val_acc' (validation accuracy against epoch, test accuracy marked at the last epoch),
    'train_loss' (smoothed training loss against iteration) and 'val_loss' (against epoch)."""
    colours = _colours(len(runs))
    out = {}
    fig = _figure(8.0, 4.8, layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for f, col in zip(runs, colours):
        xs, ys = _finite([m["epoch"] for m in f.metrics], [m.get("val_acc") for m in f.metrics])
        if xs:
            ax.plot(xs, [100 * y for y in ys], "o-", ms=3, color=col, label=f.label)
            drawn = True
            test = (f.summary or {}).get("test_acc")
            if isinstance(test, (int, float)) and math.isfinite(test):
                ax.plot([xs[-1]], [100 * test], "x", ms=8, mew=2, color=col)
    if drawn:
        ax.plot([], [], "x", color="0.3", ms=8, mew=2, label="test accuracy (best weights)")
        _epoch_axis(ax, [m["epoch"] for f in runs for m in f.metrics])
        _finish(ax, "validation accuracy", "epoch", "accuracy (%)")
        out["val_acc"] = fig
    fig = _figure(8.0, 4.8, layout="constrained")
    ax = fig.add_subplot()
    values = []
    for f, col in zip(runs, colours):
        xs, ys = _finite([r["step"] for r in f.iterations], [r.get("loss") for r in f.iterations])
        if xs:
            ys = moving_mean(ys, max(1, len(ys) // 50))
            ax.plot(xs, ys, color=col, lw=1.4, label=f.label)
            values += ys
    if values:
        _log_if_wide(ax, values)
        _finish(ax, "training loss (moving mean)", "iteration (training steps)", "loss (mean per image)")
        out["train_loss"] = fig
    fig = _figure(8.0, 4.8, layout="constrained")
    ax = fig.add_subplot()
    values = []
    for f, col in zip(runs, colours):
        xs, ys = _finite([m["epoch"] for m in f.metrics], [m.get("val_loss") for m in f.metrics])
        if xs:
            ax.plot(xs, ys, "o-", ms=3, color=col, label=f.label)
            values += ys
    if values:
        _log_if_wide(ax, values)
        _epoch_axis(ax, [m["epoch"] for f in runs for m in f.metrics])
        _finish(ax, "validation loss", "epoch", "loss (mean per image)")
        out["val_loss"] = fig
    return out
