"""Measured figures of a trained run on the devices at hand.

Per device: (optionally) the time to train the run's configuration for 5 epochs, test
accuracy and loss, and inference latency per image at batch 1 and at a larger batch
(warm-up runs first, then the median of many timed runs, synchronising the GPU around
each). Score = test accuracy / latency per image at batch 1 (in seconds).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.device import synchronize
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate
from cnnlab.rundir import RunDir, load_run

COLUMNS = ("device", "status", "best_train_acc", "best_train_loss", "best_val_acc", "best_val_loss",
           "train_seconds_5_epochs", "test_acc", "test_loss", "latency_ms_batch1", "batch_size",
           "latency_ms_per_image_batch", "score")


def device_unavailable(name: str) -> str | None:
    """None when the device can run, else why not."""
    if name == "cpu":
        return None
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return "PyTorch sees no CUDA device"
        idx = int(name.split(":")[1]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s)"
        return None
    if name == "mps":
        return None if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "no MPS device"
    raise CnnlabError(f"unknown device '{name}' in --devices: use cpu, cuda, cuda:N or mps, separated by commas")


@torch.no_grad()
def latency_per_image(model, x, device, repeats: int | None = None, warmup: int = 5) -> float:
    """Median seconds per image of model(x) on `device`."""
    model = model.to(device).eval()
    x = x.to(device)
    for _ in range(warmup):
        model(x)
    synchronize(device)
    if repeats is None:  # enough runs for a stable median, within about a second
        t0 = time.perf_counter()
        model(x)
        synchronize(device)
        repeats = int(min(200, max(10, 1.0 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        model(x)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / x.shape[0]


def _best_from_metrics(run: RunDir) -> dict:
    rows = run.read_metrics()
    best = {}
    for key, pick in (("train_acc", max), ("train_loss", min), ("val_acc", max), ("val_loss", min)):
        vals = [r[key] for r in rows if key in r]
        if vals:
            best[f"best_{key}"] = pick(vals)
    return best


def _train_seconds(config, device: str) -> float:
    from cnnlab.train.loop import train

    cfg = config
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        cfg = dataclasses.replace(cfg, epochs=5, device=device, early_stop=None, out=str(Path(tmp) / "run"))
        t0 = time.perf_counter()
        train(cfg, quiet=True)
        return time.perf_counter() - t0


def bench_run(run_dir, devices=("cpu", "cuda"), batch_size: int = 256, do_train: bool = False, write: bool = True,
              data_dir=None) -> list[dict]:
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {batch_size}")
    for name in devices:
        device_unavailable(name)  # an unknown device name is an error before any work
    run = load_run(run_dir)
    cfg, d = run.config, run.data
    test = run.split("test", data_dir)
    if len(test.y) == 0:
        raise CnnlabError(f"the test split of {cfg.dataset} is empty: nothing to benchmark")
    mean = torch.tensor(d["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(d["std"]).view(1, -1, 1, 1)
    images = (test.x[:batch_size].float() / 255 - mean) / std
    best = _best_from_metrics(run.dir)
    rows = []
    for name in devices:
        why = device_unavailable(name)
        row = {c: None for c in COLUMNS}
        row.update(device=name, **best)
        if why:
            row["status"] = f"unavailable: {why}"
            rows.append(row)
            continue
        device = torch.device(name)
        res = evaluate(run.model.to(device), test, d["mean"], d["std"], d["num_classes"], run.loss_name, device=device)
        lat1 = latency_per_image(run.model, images[:1], device)
        latb = latency_per_image(run.model, images, device)
        row.update(status="ok", test_acc=res["accuracy"], test_loss=res["loss"], latency_ms_batch1=lat1 * 1e3,
                   batch_size=images.shape[0], latency_ms_per_image_batch=latb * 1e3, score=res["accuracy"] / lat1)
        if do_train:
            row["train_seconds_5_epochs"] = _train_seconds(cfg, name)
        run.model.to("cpu")
        rows.append(row)
    if write:
        run.dir.write_bench(rows, COLUMNS)
    return rows
