"""The figures cnnlab draws: matplotlib Figures of a run's curves, filters, confusion matrix and
mistakes, of several runs' curves, and of a time profile; PNG bytes that are the same for the same figure.

    fig = loss_figure(iterations, metrics, "x: loss")     # rows of iterations.csv and metrics.csv
    fig = filters_figure(model)                           # None when the model has no convolution
    figs = compare_figures([read_run(a), read_run(b)])    # val_acc, train_loss, val_loss -> Figure
    save_png(fig, "plots/loss.png")                       # atomic; png_bytes(fig) for the bytes

    loss        training loss against iteration (each step, and a moving mean), validation loss at
                each epoch's end
    accuracy    training and validation accuracy against epoch, the best epoch marked
    lr          the learning rate against iteration
    filters     the first convolution layer's filters, one tile each, each scaled to its own range
                (colour for 3-channel input; cnnlab.models.filters)
    confusion   a confusion matrix
    mistakes    the images a model got wrong with the highest confidence, with true and predicted labels

Each function takes plain rows and arrays (no run directory) and returns a Figure, or None when
it has nothing to draw. Figures are drawn with matplotlib's Agg renderer on `Figure` objects (no
pyplot state, no window) and saved without a date or version stamp, so the same run gives the
same PNG bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from cnnlab.io import atomic_write

DPI = 100
# the filter grid's background: a blue-grey that a grey filter tile can never be
FILTER_BACKGROUND = "#dfe7ef"
CURVE_SIZE = (7.0, 4.2)  # inches, at DPI: 700 x 420 pixels


def new_figure(width, height, **kw):
    """A Figure of width x height inches at DPI, not attached to pyplot."""
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


# ---- one run ----------------------------------------------------------------------------

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
    fig = new_figure(*CURVE_SIZE, layout="constrained")
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
    fig = new_figure(*CURVE_SIZE, layout="constrained")
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
    fig = new_figure(*CURVE_SIZE, layout="constrained")
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
    fig = new_figure(width, height, facecolor=FILTER_BACKGROUND)
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
    fig = new_figure(side + 1.2, side, layout="constrained")
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
    fig = new_figure(9.0, 7.6, layout="constrained")
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
    fig = new_figure(7.0, max(2.5, 0.32 * len(layers) + 1.2), layout="constrained")
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


# ---- several runs on one set of axes --------------------------------------------------------

def _colours(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def compare_figures(runs) -> dict:
    """Overlaid curves of several runs: `runs` is a list of RunFiles (their label, metrics,
    iterations and summary). Returns name -> Figure for
    'val_acc' (validation accuracy against epoch, test accuracy marked at the last epoch),
    'train_loss' (smoothed training loss against iteration) and 'val_loss' (against epoch)."""
    colours = _colours(len(runs))
    out = {}
    fig = new_figure(8.0, 4.8, layout="constrained")
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
    fig = new_figure(8.0, 4.8, layout="constrained")
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
    fig = new_figure(8.0, 4.8, layout="constrained")
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
