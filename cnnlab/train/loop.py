"""The training loop, engine-agnostic.

    summary = train(config)                 # a new run
    summary = train(None, resume="RUN_DIR") # continue exactly where RUN_DIR stopped

An engine (`cnnlab.train.torch_engine`, `cnnlab.scratch.engine`) owns the model, optimizer and
schedule and offers `train_step`, `eval_logits`, `lr`, `state_dict`, `load_state_dict` and
`torch_model`. The loop owns everything else: data order, metrics, checkpoints, early stopping.

Exact resume: the batch order and augmentation depend only on (seed, epoch, batch), and a
checkpoint holds the engine state, the RNG states, the position and the partial-epoch sums,
so a run killed at any point and resumed ends with the same weights as one never stopped.
"""

from __future__ import annotations

import importlib
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch

from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.data.augment import parse_augment
from cnnlab.data.loader import BatchLoader
from cnnlab.device import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate_logits
from cnnlab.io import atomic_write_text
from cnnlab.train.checkpoint import check_run_dir, load_checkpoint, save_checkpoint
from cnnlab.train.progress import EpochTable, StepBar
from cnnlab.train.rundir import ITERATIONS_HEADER, METRICS_HEADER, RunDir

ENGINES = {"torch": "cnnlab.train.torch_engine", "scratch": "cnnlab.scratch.engine"}
CHECKPOINT_SECONDS = 60.0


class TrainingDiverged(CnnlabError):
    exit_code = 3


class Interrupted(CnnlabError):
    exit_code = 130


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


def build_engine(config: TrainConfig, num_classes, in_shape, steps_per_epoch, device):
    if config.engine not in ENGINES:
        raise CnnlabError(f"unknown engine '{config.engine}': choose {' or '.join(ENGINES)}")
    module = importlib.import_module(ENGINES[config.engine])
    return module.build(config, num_classes, in_shape, steps_per_epoch, device=device)


def default_run_dir(config: TrainConfig) -> Path:
    name = config.model if len(config.model) <= 24 and "-" not in config.model else "convnet"
    dataset = config.dataset.split(":")[0]
    return Path("runs") / f"{name}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def validate(config: TrainConfig):
    """Cheap checks that fail before any data is read or any file written."""
    if config.epochs < 1:
        raise CnnlabError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.engine not in ENGINES:
        raise CnnlabError(f"unknown engine '{config.engine}': choose {' or '.join(ENGINES)}")
    if config.loss not in (None, "softmax", "svm"):
        raise CnnlabError(f"unknown loss '{config.loss}': choose softmax or svm")
    if config.early_stop is not None and config.early_stop < 1:
        raise CnnlabError("--early-stop PATIENCE must be at least 1 epoch")
    if config.max_seconds is not None and config.max_seconds <= 0:
        raise CnnlabError("--max-seconds must be positive")
    parse_augment(config.augment)


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step and stops."""

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


def train(config: TrainConfig | None, resume=None, quiet=False) -> dict:
    ckpt = None
    if resume is not None:
        run = RunDir(check_run_dir(resume))
        if not run.last.exists():
            raise CnnlabError(f"{run.path} has no checkpoints/last.pt to resume from")
        ckpt = load_checkpoint(run.last)
        if ckpt["progress"].get("done") and run.summary.exists():
            raise CnnlabError(f"the run in {run.path} already finished: evaluate it with `cnnlab evaluate {run.path}`")
        config = TrainConfig.from_dict(ckpt["config"])
    validate(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)

    data = load_dataset(config.dataset, config.data_dir, config.val_size, config.seed, config.subset)
    # A short last batch takes a full-size step on a few images' gradient, which can undo a
    # good part of an epoch with plain SGD; it is dropped (its images come round in other
    # epochs, reshuffled) unless the training set is smaller than one batch.
    train_loader = BatchLoader(data.train, config.batch_size, data.mean, data.std, shuffle=True, seed=config.seed,
                               augment=config.augment, device=device,
                               drop_last=len(data.train) >= config.batch_size)
    steps_per_epoch = len(train_loader)
    engine = build_engine(config, data.num_classes, data.shape, steps_per_epoch, device)

    if ckpt is None:
        run = RunDir(config.out or default_run_dir(config))
        if run.path.exists() and any(run.path.iterdir()):
            raise CnnlabError(f"run directory {run.path} already exists: resume it with --resume {run.path}, "
                              "or choose another --out")
        config.out = str(run.path)
        run.create()
        atomic_write_text(run.config, config.to_yaml())
        progress = dict(step=0, epoch=0, batch=0, loss_sum=0.0, correct=0, seen=0, seconds=0.0, elapsed=0.0,
                        best_val_acc=-1.0, best_epoch=-1, bad_epochs=0, done=False)
    else:
        engine.load_state_dict(ckpt["engine_state"])
        set_rng_state(ckpt["rng"])
        progress = dict(ckpt["progress"])
        step = progress["step"]
        run.truncate(run.iterations, ITERATIONS_HEADER, lambda r: int(r["step"]) <= step)
        run.truncate(run.metrics, METRICS_HEADER, lambda r: int(r["epoch"]) <= progress["epoch"])
        run.log(f"resumed at epoch {progress['epoch'] + 1}, batch {progress['batch']} (step {step})")

    meta = {"classes": data.classes, "mean": list(data.mean), "std": list(data.std), "shape": list(data.shape),
            "num_classes": data.num_classes}

    def checkpoint(path):
        model = engine.torch_model()
        save_checkpoint(path, {"config": config.to_dict(), "data": meta, "model_state": model.state_dict(),
                               "engine": config.engine, "engine_state": engine.state_dict(),
                               "progress": dict(progress), "rng": rng_state()})

    def evaluate_split(split):
        if len(split) == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        loader = BatchLoader(split, config.eval_batch_size, data.mean, data.std, device=device)
        logits = torch.cat([engine.eval_logits(x).float().cpu() for x, _ in loader.epoch()])  # TTA is the engine's
        return evaluate_logits(logits, split.y, data.num_classes, config.loss or engine.torch_model().loss_name)

    table = EpochTable(run, quiet=quiet)
    if ckpt is None:
        n_params = sum(p.numel() for p in engine.torch_model().parameters())
        table.message(f"cnnlab: training {config.model} ({n_params:,} parameters) on {config.dataset} "
                      f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test images) "
                      f"with {config.engine} on {device}; run directory {run.path}")
    table.header()
    last_save = time.monotonic()
    every = config.save_every_steps
    with _Signals() as signals, StepBar(steps_per_epoch, disable=quiet) as bar:
        while not progress["done"] and progress["epoch"] < config.epochs:  # done: only the test evaluation is left
            epoch = progress["epoch"]
            bar.start_epoch(epoch, config.epochs, progress["batch"])
            t0 = time.perf_counter() - progress["seconds"]
            rows = []
            out_of_time = False
            for x, y in train_loader.epoch(epoch, start=progress["batch"]):
                loss, correct = engine.train_step(x, y)
                if not math.isfinite(loss):
                    run.append_rows(run.iterations, ITERATIONS_HEADER, rows)
                    raise TrainingDiverged(
                        f"the loss became {loss} at step {progress['step'] + 1} (epoch {epoch + 1}): lower --lr or "
                        f"add --grad-clip; the last good checkpoint is {run.last}")
                progress["step"] += 1
                progress["batch"] += 1
                progress["loss_sum"] += loss * len(y)
                progress["correct"] += correct
                progress["seen"] += len(y)
                rows.append([progress["step"], epoch + 1, f"{loss:.6g}", f"{engine.lr():.6g}"])
                bar.update(loss, progress["correct"] / progress["seen"], len(y), engine.lr())
                if config.max_seconds and progress["elapsed"] + time.perf_counter() - t0 >= config.max_seconds:
                    out_of_time = True
                    break
                due = (progress["step"] % every == 0) if every else (time.monotonic() - last_save > CHECKPOINT_SECONDS)
                if signals.stop or (due and progress["batch"] < steps_per_epoch):
                    progress["seconds"] = time.perf_counter() - t0
                    run.append_rows(run.iterations, ITERATIONS_HEADER, rows)
                    rows = []
                    checkpoint(run.last)
                    last_save = time.monotonic()
                    if signals.stop:
                        raise Interrupted(f"stopped by {signals.stop} at epoch {epoch + 1}, batch {progress['batch']}; "
                                          f"continue with: cnnlab train --resume {run.path}")
            run.append_rows(run.iterations, ITERATIONS_HEADER, rows)
            seconds = time.perf_counter() - t0
            val = evaluate_split(data.val)
            train_loss = progress["loss_sum"] / max(1, progress["seen"])
            train_acc = progress["correct"] / max(1, progress["seen"])
            row = dict(epoch=epoch + 1, train_loss=train_loss, train_acc=train_acc, val_loss=val["loss"],
                       val_acc=val["accuracy"], lr=engine.lr(), seconds=seconds)
            run.append_rows(run.metrics, METRICS_HEADER, [[f"{row[h]:.6g}" if isinstance(row[h], float) else row[h]
                                                           for h in METRICS_HEADER]])
            table.row(row, images_per_s=progress["seen"] / max(seconds, 1e-9))
            improved = val["accuracy"] > progress["best_val_acc"] or math.isnan(val["accuracy"])
            progress.update(epoch=epoch + 1, batch=0, loss_sum=0.0, correct=0, seen=0, seconds=0.0,
                            elapsed=progress["elapsed"] + seconds)
            if improved:
                progress.update(best_val_acc=val["accuracy"], best_epoch=epoch + 1, bad_epochs=0)
            else:
                progress["bad_epochs"] += 1
            stop_early = config.early_stop is not None and progress["bad_epochs"] >= config.early_stop
            if stop_early or out_of_time or progress["epoch"] == config.epochs:
                progress["done"] = True
            if improved:
                checkpoint(run.best)
            checkpoint(run.last)
            last_save = time.monotonic()
            if stop_early:
                table.message(f"early stop: validation accuracy has not improved for {config.early_stop} epochs")
                break
            if out_of_time:
                table.message(f"time budget of {config.max_seconds:g} s spent, in epoch {epoch + 1}")
                break
            if signals.stop:
                raise Interrupted(f"stopped by {signals.stop} after epoch {epoch + 1}; "
                                  f"continue with: cnnlab train --resume {run.path}")

    # Final evaluation on the test split, with the best-validation weights.
    best = load_checkpoint(run.best)
    engine.load_state_dict(best["engine_state"])
    test = evaluate_split(data.test)
    metrics = run.read_metrics()
    summary = {
        "run_dir": str(run.path), "model": config.model, "dataset": config.dataset, "engine": config.engine,
        "epochs_run": len(metrics), "best_epoch": progress["best_epoch"], "best_val_acc": progress["best_val_acc"],
        "test_acc": test["accuracy"], "test_loss": test["loss"], "test_count": len(data.test),
        "train_seconds": sum(m["seconds"] for m in metrics),
        "params": sum(p.numel() for p in engine.torch_model().parameters()),
        "final_train_acc": metrics[-1]["train_acc"] if metrics else None,
    }
    run.write_json("summary.json", summary)
    table.message(f"test accuracy: {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}, {len(data.test)} images, "
                  f"best epoch {progress['best_epoch']})")
    return summary
