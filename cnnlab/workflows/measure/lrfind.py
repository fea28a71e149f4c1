"""The learning-rate range test (Smith, WACV 2017, §3.3; the "LR finder" popularised by fast.ai).

Train for a few hundred steps while the learning rate grows exponentially from `start_lr`
to `end_lr`:

    lr_i = start_lr * (end_lr / start_lr) ** (i / (steps - 1))

and record the loss, smoothed by an exponential moving average with bias correction

    avg_i = beta * avg_{i-1} + (1 - beta) * loss_i,    smoothed_i = avg_i / (1 - beta ** (i + 1)).

The test stops early once the smoothed loss exceeds `diverge` times its minimum (or is not
finite). The suggestion is the learning rate where the smoothed loss falls fastest (the most
negative slope against log lr) before its minimum: a good maximum for one-cycle or cyclical
schedules, and a sensible constant rate. The model's weights are restored afterwards.

    result = find_lr("resnet20", "cifar10", subset=5000)   # builds the model, runs the test
    result.suggestion, result.to_dict()                    # the suggested lr; every point, as JSON
    plot_lr_find(result, "lr_find.png")
    lr_range_test(model, batches, loss_fn, "adam")         # any model and (x, y) batches
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import CnnlabError


@dataclass
class LRFindResult:
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)  # smoothed
    raw_losses: list = field(default_factory=list)
    suggestion: float | None = None
    min_loss_lr: float | None = None
    diverged: bool = False

    def to_dict(self) -> dict:
        return {"suggested_lr": self.suggestion, "min_loss_lr": self.min_loss_lr, "diverged": self.diverged,
                "steps": len(self.lrs), "lrs": self.lrs, "losses": self.losses, "raw_losses": self.raw_losses}


def suggest_lr(lrs, losses, window: int = 5) -> tuple[float | None, float | None]:
    """(suggested lr, lr at the minimum loss) from a smoothed loss curve.

    The suggestion is the steepest descent of the loss against log lr, searched only in the
    two decades below the minimum (earlier, the curve is flat and its slope is noise), with
    the slope taken over `window` points. Too short a curve falls back to a tenth of the
    minimum-loss lr, the usual rule of thumb."""
    if len(lrs) < 3:
        return None, None
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    low = int(np.nanargmin(losses))
    min_loss_lr = float(lrs[low])
    first = int(np.searchsorted(lrs, min_loss_lr / 100))
    if low - first < window:
        return min_loss_lr / 10, min_loss_lr
    log_lr = np.log(lrs)
    idx = np.arange(first, low - window + 1)
    slope = (losses[idx + window] - losses[idx]) / (log_lr[idx + window] - log_lr[idx])
    best = int(idx[np.argmin(slope)]) + window // 2
    return float(lrs[best]), min_loss_lr


def lr_range_test(model, batches, loss_fn, optimizer="sgd", start_lr=1e-6, end_lr=10.0, steps=200, beta=0.98,
                  diverge=4.0, restore=True, **optimizer_kw) -> LRFindResult:
    """Run the range test. `batches` is an iterable of (x, y); it is cycled if it runs out."""
    from cnnlab.train.optim import build_optimizer

    if not 0 < start_lr < end_lr:
        raise CnnlabError(f"the LR range needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if steps < 5:
        raise CnnlabError(f"the LR range test needs at least 5 steps, got {steps}")
    saved = copy.deepcopy(model.state_dict()) if restore else None
    opt = build_optimizer(model, optimizer, start_lr, **optimizer_kw)
    result = LRFindResult()
    avg, best = 0.0, math.inf
    source = iter(batches)
    model.train()
    try:
        for i in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            for g in opt.param_groups:
                g["lr"] = lr
            try:
                x, y = next(source)
            except StopIteration:
                source = iter(batches)
                x, y = next(source)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.item())
            if not math.isfinite(value):
                result.diverged = True
                break
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(smoothed)
            result.raw_losses.append(value)
            best = min(best, smoothed)
            if smoothed > diverge * best:
                result.diverged = True
                break
    finally:
        if saved is not None:
            model.load_state_dict(saved)
    result.suggestion, result.min_loss_lr = suggest_lr(result.lrs, result.losses)
    return result


def plot_lr_find(result: LRFindResult, path, title: str = "LR range test") -> Path:
    """Write the plot; returns the path written (a name without a suffix gets .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.raw_losses, color="0.8", lw=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    if result.suggestion is not None:
        y = float(np.interp(math.log(result.suggestion), np.log(result.lrs), result.losses))
        ax.axvline(result.suggestion, color="C3", ls="--", lw=1)
        ax.plot([result.suggestion], [y], "o", color="C3", label=f"suggested lr {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    if result.losses:  # show the descent, not the blow-up at the end
        low, first = min(result.losses), result.losses[0]
        span = max(first - low, 0.05 * abs(low), 1e-3)
        ax.set_ylim(low - 0.1 * span, first + 0.5 * span)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def find_lr(model_name: str, dataset: str, data_dir=None, subset=None, batch_size=128, optimizer="sgd",
            augment="none", seed=0, model_args=None, loss=None, **kw) -> LRFindResult:
    """The range test for a model on a dataset's training split."""
    from cnnlab.build import build_for
    from cnnlab.data import load_dataset
    from cnnlab.data.loader import BatchLoader
    from cnnlab.losses import make_loss

    torch.manual_seed(seed)
    data = load_dataset(dataset, data_dir, seed=seed, subset=subset)
    loader = BatchLoader(data.train, batch_size, data.mean, data.std, shuffle=True, seed=seed, augment=augment)
    model = build_for({"model": model_name, "model_args": model_args or {}}, data.shape, data.num_classes)
    loss_fn = make_loss(loss or model.loss_name)

    def batches():
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1

    return lr_range_test(model, batches(), loss_fn, optimizer, **kw)
