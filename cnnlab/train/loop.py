"""The training loop, engine-agnostic, extended through hooks.

Over 400 lines: the Trainer's three phases read top to bottom in one class, as one run goes.

    summary = train(config)                       # a new run
    summary = train(None, resume="RUN_DIR")       # continue exactly where RUN_DIR stopped
    summary = train(config, hooks=[MyHook()])     # extra behaviour (see cnnlab.train.hooks)

A `Trainer` runs in three phases: open (validate the config, load the data, build the engine,
create or reopen the run directory), epochs (steps, then the epoch's end: validation, the
metrics row, the hooks), and finish (the test evaluation with the best weights, summary.json).
An engine (`cnnlab.train.engines`) owns the model, optimizer and schedule; the loop owns data
order, metrics and the run directory; hooks add the rest (weight average, time budget, early
stop, checkpoints, and whatever a caller passes in).

Exact resume: the batch order and augmentation depend only on (seed, epoch, batch), and a
checkpoint holds the engine state, the RNG states, the position, the partial-epoch sums and
every named hook's state, so a run killed at any point and resumed ends with the same weights
as one never stopped (bitwise on the CPU; on CUDA with `deterministic: true`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.checkpoint import check_weights_fit, load_checkpoint, save_checkpoint
from cnnlab.config import TrainConfig
from cnnlab.device import configure_determinism, resolve_device, set_threads
from cnnlab.errors import CnnlabError, warn
from cnnlab.io import NO_SPACE, WriteError
from cnnlab.evaluate import evaluate_logits
from cnnlab.dirs import RunDir
from cnnlab.train.engines import build_engine
from cnnlab.train.defaults import default_hooks
from cnnlab.train.hooks import Checkpointer, Hook
from cnnlab.train.distributed import (broadcast, check_processes, join, leave, resume_command, share, sum_values,
                                      watch_peers, world_from_env)
from cnnlab.train.progress import EpochTable, StepBar
from cnnlab.train.validate import validate

CHECKPOINT_SECONDS = 60.0


class TrainingDiverged(CnnlabError):
    exit_code = 3


class Interrupted(CnnlabError):
    """A run stopped by a signal. `stopped` says by which and where ("stopped by SIGTERM at epoch 3,
    batch 140"), the message adds how to continue; a caller that continues it otherwise (a search
    run again) says so with `stopped`."""

    exit_code = 130

    def __init__(self, message: str, stopped: str = ""):
        super().__init__(message)
        self.stopped = stopped or message


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches taken in the current epoch
    loss_sum: float = 0.0  # current epoch: sum of per-image losses,
    correct: int = 0  # correct predictions
    seen: int = 0  # and images seen
    seconds: float = 0.0  # training seconds of the current epoch up to the last mid-epoch save
    elapsed: float = 0.0  # training seconds of the finished epochs
    best_val_acc: float = -1.0
    best_epoch: int = -1
    done: bool = False  # training is over; only the test evaluation may be left
    stop_reason: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Progress":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def default_run_dir(config: TrainConfig) -> Path:
    from cnnlab.models.registry import model_name

    name = model_name(config.model)  # fastnet(widths=[16, 64, 128]) -> fastnet
    name = name if len(name) <= 24 and "-" not in name else "convnet"
    dataset = config.dataset.split(":")[0]
    return Path("runs") / f"{name}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def free_run_dir(config: TrainConfig, take) -> Path:
    """The first of the default name, then -2, -3, ... for which `take(path)` is true (it checks or
    claims the name)."""
    base = default_run_dir(config)
    for k in range(1, 1000):
        path = Path(base if k == 1 else f"{base}-{k}")
        if take(path):
            return path
    raise CnnlabError(f"could not find a free run directory name next to {base}: give one with --out")


class StopSignals:
    """SIGINT/SIGTERM set `stop` (the signal's name), a second one raises KeyboardInterrupt at once.
    The trainer looks after each step (it saves a checkpoint and stops); a search worker between
    trials (cnnlab.workflows.search.worker)."""

    def __init__(self):
        self.stop = None

    def __enter__(self):
        self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.stop is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


# What a resume may change; anything else would make the run a different run.
RESUME_OVERRIDES = ("lr", "grad_clip")


def _open_resume(path, overrides: dict) -> tuple[RunDir, Path | None, dict | None, TrainConfig, dict]:
    """The run to continue, its newest complete checkpoint and where it is (None: it died before its
    first one; another run's checkpoint is an error, cnnlab.dirs.RunDir.check_checkpoint) and its
    config with `overrides` (a new --lr or --grad-clip) applied, and the values they replaced."""
    run = RunDir(path).check()
    ckpt_path, ckpt, warnings = run.newest_checkpoint()
    if ckpt is None and warnings:  # checkpoints there, none readable: starting over would drop the run's results
        damaged = " and ".join(str(p) for p in (run.last, run.best) if p.exists())
        raise CnnlabError(f"cannot resume {run.path}: {damaged} {'are' if ' and ' in damaged else 'is'} damaged; "
                          f"delete {run.checkpoints} to train the run again from the start in place, or train a new "
                          f"run with --config {run.config}")
    for w in warnings:
        warn(w)
    if ckpt is not None and ckpt["progress"].get("done") and run.finished():
        raise CnnlabError(f"the run in {run.path} already finished: evaluate it with `cnnlab evaluate {run.path}`")
    if ckpt is not None and ckpt_path == run.best and run.last.exists():
        warn(f"continuing from {run.best}, the newest complete state of the run")
    config = TrainConfig.from_dict(ckpt["config"], where=str(run.config)) if ckpt else TrainConfig.load(run.config)
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise CnnlabError(f"a resumed run keeps its config; only {' and '.join(RESUME_OVERRIDES)} may change, not {bad[0]}")
    replaced = {key: getattr(config, key) for key in overrides}
    for key, value in overrides.items():
        setattr(config, key, value)
    return run, ckpt_path, ckpt, config, replaced


class Trainer:
    def __init__(self, config: TrainConfig | None, resume=None, quiet=False, hooks=(), overrides=None):
        self.run, self.ckpt, self.ckpt_path, self.overrides = None, None, None, dict(overrides or {})
        self.world = world_from_env()  # several processes under torchrun; rank 0 writes
        self.main = self.world.main
        if resume is not None:
            self.run, self.ckpt_path, self.ckpt, config, self.replaced = _open_resume(resume, self.overrides)
        elif self.overrides:
            raise CnnlabError("overrides are for a resumed run: put the values in the config instead")
        self.config = validate(config, new_run=resume is None and self.main)
        check_processes(self.config, self.world.size)
        self.quiet = quiet
        self.extra_hooks = list(hooks)
        for h in self.extra_hooks:
            if not isinstance(h, Hook):
                raise CnnlabError(f"hooks must be cnnlab.train.hooks.Hook instances, got {type(h).__name__}")
        self.improved, self.stopping, self._rows, self._contexts = False, False, [], []
        self.table, self._early_lines = None, []

    # ---- phase 1: open ------------------------------------------------------------------

    def open(self):
        from cnnlab.data import load_dataset
        from cnnlab.data.loader import BatchLoader

        config = self.config
        if self.run is not None and self.main:  # a resumed run: one trainer at a time
            self._enter(self.run.lock())
        if config.dataset.lower().startswith("imagefolder:") and self.ckpt is None:
            # stored absolute, so the run can be evaluated from any folder
            config.dataset = "imagefolder:" + str(Path(config.dataset.split(":", 1)[1]).expanduser().resolve())
        self.determinism = configure_determinism(config.deterministic)
        self.device = resolve_device(config.device)
        if self.world.distributed and self.device.type == "cuda":  # one GPU per process
            self.device = torch.device("cuda", self.world.local_rank)
            torch.cuda.set_device(self.device)
        self.world = join(self.world, self.device)
        seed_everything(config.seed)
        self.data = data = load_dataset(config.dataset, config.data_dir, config.val_size, config.seed, config.subset)
        if config.subset is not None and config.subset > len(data.train):
            raise CnnlabError(f"--subset {config.subset} is larger than the {len(data.train)} training images: "
                              f"use at most {len(data.train)}")
        check_processes(config, self.world.size, len(data.train))
        # A short last batch takes a full-size step on a few images' gradient, which can undo a
        # good part of an epoch with plain SGD; it is dropped (its images come round in other
        # epochs, reshuffled) unless the training set is smaller than one batch.
        self.loader = BatchLoader(data.train, config.batch_size, data.mean, data.std, shuffle=True, seed=config.seed,
                                  augment=config.augment, device=self.device,
                                  drop_last=len(data.train) >= config.batch_size)
        self.loader.warm_up()
        # after the loader's warm-up, which would undo it (BatchLoader.warm_up); cnnlab.device.choose_threads.
        # A resumed run keeps the count it started with: with another, sums may add in another order.
        self.threads = set_threads(config.threads or (self.ckpt or {}).get("threads"))
        self.steps_per_epoch = len(self.loader)
        self.engine = build_engine(config, data.num_classes, data.shape, self.steps_per_epoch, self.device, self.world)
        self.share = share(config.batch_size, self.world) if self.world.distributed else slice(None)
        self.compile_seconds = 0.0
        if config.compile and hasattr(self.engine, "compile_warm_up"):  # reported apart from training time
            x, y = self.loader.batch(torch.arange(min(config.batch_size, len(data.train))))
            self.compile_seconds = self.engine.compile_warm_up(x[self.share], y[self.share])
        self.meta = {"classes": data.classes, "mean": list(data.mean), "std": list(data.std),
                     "shape": list(data.shape), "num_classes": data.num_classes}
        self.hooks = default_hooks(config) + self.extra_hooks + [
            Checkpointer(config.save_every_steps, CHECKPOINT_SECONDS)]
        if self.ckpt is None:
            self._start_new()
        else:
            self._restore()
            if self.main:  # a changed --lr or --grad-clip is the run's config from here on
                self.run.write_config(self.config)
        self.table = EpochTable(self.run if self.main else None, quiet=self.quiet or not self.main)
        if self.main:  # until summary.json, this says the run is under way (or was, if it crashed)
            self.run.write_state("training")
        early, self._early_lines = self._early_lines, []
        for key, value in self.overrides.items():
            self.log(f"resumed with {key} = {value} (was {self.replaced[key]}): from here the run differs from an "
                     "uninterrupted one")
        if self.ckpt is None:
            self.log(f"cnnlab: training {config.model} ({self.param_summary()}) on {config.dataset} "
                     f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test images) "
                     f"with {config.engine} on {self.device}"
                     f"{f' x {self.world.size} processes ({self.world.backend})' if self.world.distributed else ''}; "
                     f"run directory {self.run.path}")
        else:
            p = self.progress
            self.log(f"resumed at epoch {p.epoch + 1}, batch {p.batch} (step {p.step})")
        for line in early:  # what hooks said while the run opened, before the table existed
            self.log(line)

    def _start_new(self):
        if not self.main:  # rank 0 makes the run directory; the others learn where it is
            self.run = RunDir(broadcast(self.world, None))
            self.config.out = str(self.run.path)
            self.progress = Progress()
            for h in self.hooks:
                h.on_start(self)
            return
        made = self.run is None and not (self.config.out and Path(self.config.out).exists())
        if self.run is None:  # a new run
            self.run = self._new_run_dir()
            self.config.out = str(self.run.path)
            self._enter(self.run.lock())
            if self.run.config.exists():  # another run took this --out since validation looked
                raise CnnlabError(f"run directory {self.run.path} already exists: resume it with --resume "
                                  f"{self.run.path}, or choose another --out")
        else:  # a resumed run that died before its first checkpoint: start it again in place
            for path in (self.run.metrics, self.run.iterations, self.run.summary):
                path.unlink(missing_ok=True)
            shutil.rmtree(self.run.checkpoints, ignore_errors=True)
        try:
            self.run.create()
            self.run.write_config(self.config)
        except OSError:  # the first write failed (a full disk): a new run leaves no empty folder behind
            if made:
                shutil.rmtree(self.run.path, ignore_errors=True)
            raise
        broadcast(self.world, str(self.run.path))
        self.progress = Progress()
        for h in self.hooks:
            h.on_start(self)

    def _new_run_dir(self) -> RunDir:
        """--out as given (validation made sure it is free), or a default name no other run has:
        two runs started in the same second get -2, -3, ... (the directory is made exclusively)."""
        if self.config.out:
            run = RunDir(self.config.out)
            run.create()
            return run
        return RunDir(free_run_dir(self.config, lambda path: RunDir(path).create_new()))

    def _enter(self, context):
        self._contexts.append(context)
        return context.__enter__()

    def close(self):
        while self._contexts:
            self._contexts.pop().__exit__(None, None, None)
        if self.world.distributed:
            # the DDP wrapper goes before its process group: freed after it, its destructor hangs (measured)
            engine = getattr(self, "engine", None)
            if engine is not None and hasattr(engine, "release"):
                engine.release()
            import gc

            gc.collect()
            leave(self.world)

    def _restore(self, ckpt=None, path=None, model_only=False):
        ckpt, path = (ckpt, path) if ckpt is not None else (self.ckpt, self.ckpt_path)
        # before anything is loaded, truncated or logged: weights of another network are one line
        check_weights_fit(ckpt, self.engine.torch_model(), path)
        self.engine.load_state_dict(ckpt["engine_state"])
        states = dict(ckpt.get("hooks") or {})
        # checkpoints from before hooks kept these two in other places
        states.setdefault("ema", ckpt["engine_state"].get("ema"))
        states.setdefault("early_stop", {"bad_epochs": ckpt["progress"].get("bad_epochs", 0)})
        if "lr" in self.overrides and not model_only:
            self.engine.set_base_lr(self.engine_lr())
        if not model_only:
            set_rng_state(ckpt["rng"])
            self.progress = Progress.from_dict(ckpt["progress"])
            if self.main:
                self.run.truncate_to(self.progress.step, self.progress.epoch)
        for h in self.hooks:
            if not model_only:
                h.on_start(self)
            if h.name and states.get(h.name) is not None and (h.model_state or not model_only):
                h.load_state_dict(states[h.name])

    # ---- helpers for hooks ----------------------------------------------------------------

    def engine_lr(self) -> float:
        from cnnlab.train.optim import default_lr

        return self.config.lr if self.config.lr is not None else default_lr(self.config.optimizer)

    def log(self, line: str):
        if getattr(self, "table", None) is None:
            self._early_lines.append(line)
        else:
            self.table.message(line)

    def param_summary(self) -> str:
        """'N parameters', or 'N parameters (M trainable)' when some are frozen (--freeze backbone, a
        fixed whitening layer); after the hooks' on_start, which freeze them."""
        n, m = self.param_count(), self.param_count(trainable_only=True)
        return f"{n:,} parameters" + (f" ({m:,} trainable)" if m < n else "")

    def param_count(self, trainable_only=False) -> int:
        # trainable: of the trained model (the weight average's copy has no gradients of its own)
        model = getattr(self.engine, "model", None) if trainable_only else None
        model = model if isinstance(model, torch.nn.Module) else self.engine.torch_model()
        return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

    def train_seconds(self) -> float:
        """Training seconds so far: finished epochs plus the running one."""
        return self.progress.elapsed + time.perf_counter() - self._t0

    def stop(self, reason: str, now: bool = False):
        """Finish the run after this epoch (now=True: end the epoch after the current step)."""
        self.progress.done = True
        self.progress.stop_reason = self.progress.stop_reason or reason
        self.stopping = self.stopping or now

    def save(self, which: str):
        """Write checkpoints/<which>.pt; the iteration rows so far are written first, so the files
        end exactly where the checkpoint does."""
        if not self.main:  # rank 0 writes the run directory
            self._rows = []
            return
        if self._in_epoch:
            self.progress.seconds = time.perf_counter() - self._t0
        self.run.append_iterations(self._rows)
        self._rows = []
        path = self.run.checkpoint(which)
        save_checkpoint(path, {
            "config": self.config.to_dict(), "data": self.meta,
            "model_state": self.engine.torch_model().state_dict(), "engine": self.config.engine,
            "engine_state": self.engine.state_dict(), "progress": self.progress.to_dict(), "rng": rng_state(),
            "hooks": {h.name: h.state_dict() for h in self.hooks if h.name}, "threads": self.threads["torch"]})
        for h in self.hooks:
            h.on_checkpoint(self, path, which)

    def evaluate(self, split) -> dict:
        """Accuracy and loss on a split. With several processes rank 0 evaluates and tells the others,
        so every process takes the same decisions (best epoch, early stop)."""
        if not self.world.distributed:
            return self._evaluate(split)
        return broadcast(self.world, self._evaluate(split) if self.main else None)

    def _evaluate(self, split) -> dict:
        from cnnlab.data.loader import BatchLoader

        if len(split) == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        loader = BatchLoader(split, self.config.eval_batch_size, self.data.mean, self.data.std, device=self.device)
        logits = torch.cat([self.engine.eval_logits(x).float().cpu() for x, _ in loader.epoch()])  # TTA: the engine's
        return evaluate_logits(logits, split.y, self.data.num_classes,
                               self.config.loss or self.engine.torch_model().loss_name)

    # ---- phase 2: epochs ------------------------------------------------------------------

    def fit(self) -> dict:
        try:
            # with several processes, a collective that fails because another process died (DDP's
            # backward all-reduce included) ends this one with one line (cnnlab.train.distributed)
            with watch_peers(self.world, lambda: self.run and resume_command(self.run.path, self.world)):
                self.open()
                self.table.header()
                self._in_epoch, self._t0 = False, time.perf_counter()
                with StopSignals() as self.signals, StepBar(self.steps_per_epoch, disable=self.quiet) as self.bar:
                    while not self.progress.done and self.progress.epoch < self.config.epochs:
                        self._train_epoch()
                        self._end_epoch()
                return self.finish()
        except WriteError as e:  # a full disk mid-run: the run's own resume command
            if e.errno in NO_SPACE and self.run is not None and self.run.config.exists():
                e.advice = f"free space, then continue with: cnnlab train --resume {self.run.path}"
            raise
        finally:
            self.close()

    def _train_epoch(self):
        p, epoch = self.progress, self.progress.epoch
        self.bar.start_epoch(epoch, self.config.epochs, p.batch)
        self._in_epoch, self._t0 = True, time.perf_counter() - p.seconds
        for x, y in self.loader.epoch(epoch, start=p.batch):
            x, y = x[self.share], y[self.share]  # this process's share of the global batch
            loss, correct = self.engine.train_step(x, y)
            n = len(y)
            # with several processes a signal counts once the exchange below has carried it, so that all
            # stop after the same step (one that came later waits for the next step's exchange); one
            # process stops after the step in which it came
            stop = self.signals.stop
            if self.world.distributed:  # the global batch's figures, and stop flags every process obeys
                loss_sum, correct, n, signal_stop = sum_values(self.world, [loss * n, correct, n, float(bool(stop))])
                loss, correct, n = loss_sum / n, int(correct), int(n)
                stop = self._any_stop(stop, signal_stop)
            if not math.isfinite(loss):
                self._diverged(loss)
            p.step, p.batch = p.step + 1, p.batch + 1
            p.loss_sum, p.correct, p.seen = p.loss_sum + loss * n, p.correct + correct, p.seen + n
            lr = self.engine.lr()
            self._rows.append([p.step, epoch + 1, f"{loss:.6g}", f"{lr:.6g}"])
            self.bar.update(loss, p.correct / p.seen, n, lr)
            for h in self.hooks:
                h.on_step(self, loss, n)
            if self.world.distributed and not self.stopping:  # a hook's stop on one process holds for all
                self.stopping = bool(sum_values(self.world, [float(self.stopping)])[0])
                if self.stopping:
                    self.progress.done = True
            if self.stopping:
                break
            if stop or (not self.world.distributed and self.signals.stop):
                self.save("last")
                self._interrupted(f"at epoch {epoch + 1}, batch {p.batch}")
        if self.main:
            self.run.append_iterations(self._rows)
        self._rows = []

    def _diverged(self, loss):
        if self.main:
            self.run.append_iterations(self._rows)
        self._rows = []
        p = self.progress
        kept = self.run.last if self.run.last.exists() else None
        why = (f"the loss became {loss} at step {p.step + 1} (epoch {p.epoch + 1}): continue with a lower learning "
               f"rate, e.g. cnnlab train --resume {self.run.path} --lr {self.engine_lr() / 10:g} (or add --grad-clip); "
               + (f"it goes on from the last good checkpoint, {kept}" if kept else
                  "no checkpoint was written before it, so the run starts again"))
        if self.main:
            self.run.log(f"stopped: {why}")
            self.run.write_state("stopped", why)
        raise TrainingDiverged(why)

    def _end_epoch(self):
        p = self.progress
        seconds = time.perf_counter() - self._t0
        self._in_epoch = False
        val = self.evaluate(self.data.val)
        row = dict(epoch=p.epoch + 1, train_loss=p.loss_sum / max(1, p.seen), train_acc=p.correct / max(1, p.seen),
                   val_loss=val["loss"], val_acc=val["accuracy"], lr=self.engine.lr(), seconds=seconds)
        if self.main:
            self.run.append_metrics(row)
        self.table.row(row, images_per_s=p.seen / max(seconds, 1e-9))
        self.improved = val["accuracy"] > p.best_val_acc or math.isnan(val["accuracy"])
        p.epoch, p.batch, p.loss_sum, p.correct, p.seen, p.seconds = p.epoch + 1, 0, 0.0, 0, 0, 0.0
        p.elapsed += seconds
        if self.improved:
            p.best_val_acc, p.best_epoch = val["accuracy"], p.epoch
        if p.epoch >= self.config.epochs:
            p.done = True
        for h in self.hooks:
            h.on_epoch_end(self, row)
        if p.done and p.stop_reason:
            self.log(p.stop_reason)
        stop = self.signals.stop
        if self.world.distributed:  # as after each step: every process stops here, or none
            stop = self._any_stop(stop, sum_values(self.world, [float(bool(stop))])[0])
        if stop and not p.done:
            self._interrupted(f"after epoch {p.epoch}")

    def _any_stop(self, stop, stops_seen: float):
        """This process's stop signal as exchanged (`stop`), or another process's (`stops_seen` > 0)."""
        if stops_seen and not stop:
            stop = self.signals.stop = self.signals.stop or "a signal to another process"
        return stop

    def _interrupted(self, where: str):
        stopped = f"stopped by {self.signals.stop} {where}"
        why = f"{stopped}; continue with: {resume_command(self.run.path, self.world)}"
        if self.main:
            self.run.log(why)
            self.run.write_state("stopped", why)
        raise Interrupted(why, stopped)

    # ---- phase 3: finish ------------------------------------------------------------------

    def finish(self) -> dict:
        """The test evaluation with the best-validation weights, then summary.json."""
        if self.main:
            self._restore(load_checkpoint(self.run.best), self.run.best, model_only=True)
        test = self.evaluate(self.data.test)
        summary = self._summary(test) if self.main else None
        summary = broadcast(self.world, summary)
        for h in self.hooks:
            h.on_end(self, summary)
        if self.main:
            self.run.write_summary(summary)
            self.run.write_state("finished")
        self.log(f"test accuracy: {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}, {len(self.data.test)} "
                 f"images, best epoch {self.progress.best_epoch})")
        return summary

    def _summary(self, test: dict) -> dict:
        from cnnlab.envinfo import provenance

        metrics = self.run.read_metrics()
        p = self.progress
        train_seconds = sum(m["seconds"] for m in metrics)
        summary = {
            "run_dir": str(self.run.path), "model": self.config.model, "dataset": self.config.dataset,
            "engine": self.config.engine, "device": str(self.device),
            "epochs_run": len(metrics), "best_epoch": p.best_epoch, "best_val_acc": p.best_val_acc,
            "test_acc": test["accuracy"], "test_loss": test["loss"], "test_count": len(self.data.test),
            "train_count": len(self.data.train), "val_count": len(self.data.val),
            "train_seconds": train_seconds, "seconds_per_epoch": train_seconds / max(1, len(metrics)),
            "compile_seconds": self.compile_seconds,
            "params": self.param_count(), "trainable_params": self.param_count(trainable_only=True),
            "final_train_acc": metrics[-1]["train_acc"] if metrics else None,
            "stop_reason": p.stop_reason or f"trained {len(metrics)} epochs",
            "world_size": self.world.size, "deterministic": self.determinism, "threads": self.threads, **provenance(),
        }
        return summary


def train(config: TrainConfig | None, resume=None, quiet=False, hooks=(), overrides=None) -> dict:
    """Train a new run (or continue `resume`, a run directory, optionally with a new lr or
    grad_clip in `overrides`) and return its summary."""
    return Trainer(config, resume=resume, quiet=quiet, hooks=hooks, overrides=overrides).fit()
