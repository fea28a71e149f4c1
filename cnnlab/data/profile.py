"""Where the loader's time goes: each stage of making a batch, timed on its own."""

from __future__ import annotations

import time

import torch

from cnnlab.data.augment import parse_augment
from cnnlab.data.loader import BatchLoader, _generator
from cnnlab.device import synchronize


def profile_loader(split, mean, std, batch_size=512, augment="crop+flip+cutout", device="cpu", batches=40, repeats=3):
    """Images/s of each stage (index, normalise, every augmentation op) and of the whole batch.
    Medians over `repeats` passes of `batches` batches."""
    device = torch.device(device)
    loader = BatchLoader(split, batch_size, mean, std, shuffle=True, seed=0, device=device)
    ops = parse_augment(augment)
    order = loader.order(0)
    n = min(batches, len(loader))
    stages = ["index", "normalize"] + [name for name, _, _ in ops]
    times = {s: [] for s in stages + ["total"]}
    for _ in range(repeats):
        acc = dict.fromkeys(stages, 0.0)
        t_all = time.perf_counter()
        for b in range(n):
            idx = order[b * batch_size:(b + 1) * batch_size]
            t = time.perf_counter(); xb = loader.x[idx]; synchronize(device); acc["index"] += time.perf_counter() - t
            t = time.perf_counter(); x = loader.normalize(xb); synchronize(device); acc["normalize"] += time.perf_counter() - t
            gen = _generator(0, 0, b, 7)
            for name, fn, arg in ops:
                t = time.perf_counter()
                x = fn(x, gen) if arg is None else fn(x, gen, arg)
                synchronize(device)
                acc[name] += time.perf_counter() - t
        total = time.perf_counter() - t_all
        images = n * batch_size
        for s in stages:
            times[s].append(images / max(acc[s], 1e-12))
        times["total"].append(images / total)
    return {s: sorted(v)[len(v) // 2] for s, v in times.items()}
