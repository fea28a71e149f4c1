"""Trainer hooks: behaviour that plugs into the training loop without editing it.

A hook subclasses `Hook` and overrides what it needs; the trainer calls, in list order:

    on_start(t)                    the run is open (new or resumed), before the first step
    on_step(t, loss, n)            after each training step (n images); keep it cheap: it runs every step
    on_epoch_end(t, row)           after the epoch's validation; `row` is its metrics.csv row as a dict
    on_checkpoint(t, path, which)  after checkpoints/<which>.pt ("last" or "best") was written
    on_end(t, summary)             after the test evaluation; may add keys to `summary` before it is written

`t` is the `Trainer` (cnnlab.train.loop): `t.config`, `t.engine`, `t.data`, `t.loader` (the
training BatchLoader), `t.run` (the RunDir), `t.progress` (a `Progress`), `t.improved` (this
epoch beat the best validation accuracy), `t.train_seconds()`, `t.log(line)`,
`t.stop(reason, now=False)` (finish the run after this epoch, or with now=True end the epoch at
once) and `t.save(which)`.

A hook with a `name` keeps state across an interruption: `state_dict()` is saved in every
checkpoint under that name and given back to `load_state_dict()` on resume, so a resumed run
behaves as one never stopped. `model_state = True` marks state that belongs with the weights
(the weight average): it is also restored with the best weights for the test evaluation.

The built-in hooks below are the trainer's own features. Hooks with a module of their own
(`TransferHook` in cnnlab.train.transfer, `TensorBoardLogger` in cnnlab.train.tensorboard, the
search's pruning report) subclass `Hook` from here; cnnlab.train.defaults.default_hooks(config),
above them all, lists the hooks a config asks for in the order they run (data-dependent
initialisation first, time to accuracy last). The `Checkpointer` always runs last, so what it
saves includes every other hook's work for that step or epoch.

    class PrintLoss(Hook):
        def on_step(self, t, loss, n):
            print(t.progress.step, loss)

    train(config, hooks=[PrintLoss()])
"""

from __future__ import annotations

import time


class Hook:
    """The base of every trainer hook: each call does nothing until a subclass overrides it."""

    name: str | None = None  # set: the hook's state_dict() is checkpointed under this name
    model_state = False  # True: its state belongs with the weights (restored with the best ones)

    def on_start(self, t): ...

    def on_step(self, t, loss: float, n: int): ...

    def on_epoch_end(self, t, row: dict): ...

    def on_checkpoint(self, t, path, which: str): ...

    def on_end(self, t, summary: dict): ...

    def state_dict(self):
        return None

    def load_state_dict(self, state): ...


class DataInit(Hook):
    """Data-dependent initialisation: on a new run, every module of the model with an
    `init_from_data(images)` method (e.g. FastNet's patch-whitening layer, cnnlab.models.zoo.fastnet)
    is fitted to the first `count` normalised training images, before any other hook copies the
    weights. Its time counts as training time. A resumed run keeps its checkpointed weights."""

    def __init__(self, count: int = 5000):
        self.count = count

    def on_start(self, t):
        model = getattr(t.engine, "model", None)
        if t.progress.step or t.progress.epoch or not hasattr(model, "modules"):
            return
        layers = [m for m in model.modules() if callable(getattr(m, "init_from_data", None))]
        if not layers:
            return
        start = time.perf_counter()
        images = t.loader.normalize(t.loader.x[:self.count]).cpu()  # fitted on the CPU: the same on every process
        fits = [m for m in layers if getattr(m, "in_channels", images.shape[1]) == images.shape[1]]
        if len(fits) < len(layers):  # behind an input adapter (--input-channels): left at its initial weights
            t.log(f"not fitted to the data: {', '.join(type(m).__name__ for m in layers if m not in fits)} "
                  f"(it takes another channel count than the dataset's {images.shape[1]})")
        layers = fits
        if not layers:
            return
        for m in layers:
            m.init_from_data(images)
        t.progress.elapsed += time.perf_counter() - start
        t.log(f"fitted {len(layers)} layer(s) to the first {len(images)} training images "
              f"({', '.join(type(m).__name__ for m in layers)})")


# Validation accuracies (%) whose first crossing a run records; the finest steps where fast recipes
# end (CIFAR-10 90-96 %, MNIST 99 %+).
ACCURACY_TARGETS = (50, 60, 70, 80, 85, 88, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 99.5)


class TimeToAccuracy(Hook):
    """Time to accuracy, in every run: the training seconds (validation and checkpoints excluded)
    at the end of the first epoch whose validation accuracy reached each of ACCURACY_TARGETS. The
    epoch table logs each crossing; summary.json gets `time_to_accuracy` ({"90": seconds, ...}) and
    `epochs_to_accuracy` ({"90": epoch, ...}), next to the final `test_acc`."""

    name = "time_to_accuracy"

    def __init__(self, targets=ACCURACY_TARGETS):
        self.targets, self.reached = tuple(targets), {}

    def on_epoch_end(self, t, row):
        acc = 100 * row["val_acc"]
        new = [a for a in self.targets if f"{a:g}" not in self.reached and acc >= a]
        for a in new:
            self.reached[f"{a:g}"] = [round(t.progress.elapsed, 3), int(row["epoch"])]
        if new:
            t.log(f"validation accuracy passed {', '.join(f'{a:g}%' for a in new)} after "
                  f"{t.progress.elapsed:.1f} s of training (epoch {int(row['epoch'])})")

    def on_end(self, t, summary):
        summary["time_to_accuracy"] = {k: v[0] for k, v in self.reached.items()}
        summary["epochs_to_accuracy"] = {k: v[1] for k, v in self.reached.items()}

    def state_dict(self):
        return {"reached": self.reached}

    def load_state_dict(self, state):
        self.reached = {k: list(v) for k, v in state["reached"].items()}


class WeightAverage(Hook):
    """An exponential moving average of the weights (`--ema DECAY`), evaluated and saved instead of
    the trained weights (cnnlab.train.ema.ModelEMA)."""

    name = "ema"
    model_state = True

    def __init__(self, decay: float):
        self.decay = decay
        self.ema = None

    def on_start(self, t):
        from cnnlab.train.ema import ModelEMA

        if self.ema is None:
            self.ema = ModelEMA(t.engine.model, self.decay)
        t.engine.eval_module = self.ema.module

    def on_step(self, t, loss, n):
        self.ema.update(t.engine.model)

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state):
        self.ema.load_state_dict(state)


class TimeBudget(Hook):
    """`--max-seconds`: end the run once this much training time is spent, mid-epoch if need be
    (the partial epoch is validated and counted)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step(self, t, loss, n):
        if t.train_seconds() >= self.seconds:
            t.stop(f"time budget of {self.seconds:g} s spent, in epoch {t.progress.epoch + 1}", now=True)


class EarlyStop(Hook):
    """`--early-stop PATIENCE`: finish once validation accuracy has not improved for PATIENCE epochs."""

    name = "early_stop"

    def __init__(self, patience: int):
        self.patience, self.bad_epochs = patience, 0

    def on_epoch_end(self, t, row):
        self.bad_epochs = 0 if t.improved else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:
            t.stop(f"early stop: validation accuracy has not improved for {self.patience} epochs")

    def state_dict(self):
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.bad_epochs = int(state["bad_epochs"])


class Checkpointer(Hook):
    """checkpoints/last.pt mid-epoch (every `save_every_steps` steps, else every `seconds` of wall
    time) and at each epoch's end; checkpoints/best.pt when validation accuracy improved."""

    def __init__(self, every_steps: int | None = None, seconds: float = 60.0):
        self.every_steps, self.seconds = every_steps, seconds
        self.last_save = time.monotonic()

    def on_step(self, t, loss, n):
        p = t.progress
        if t.stopping or p.batch >= t.steps_per_epoch:  # the epoch's end saves it
            return
        due = p.step % self.every_steps == 0 if self.every_steps else time.monotonic() - self.last_save > self.seconds
        if due:
            t.save("last")

    def on_epoch_end(self, t, row):
        if t.improved:
            t.save("best")
        t.save("last")

    def on_checkpoint(self, t, path, which):
        self.last_save = time.monotonic()

