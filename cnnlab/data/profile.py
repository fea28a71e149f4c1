"""Where the loader's time goes: each stage of making a batch, timed on its own."""

from __future__ import annotations

import time

import torch

from cnnlab.data.augment import parse_augment, split_pixel_ops
from cnnlab.data.fused import fusable, fused_batch
from cnnlab.data.loader import BatchLoader, _generator
from cnnlab.device import synchronize


def profile_loader(split, mean, std, batch_size=512, augment="crop+flip+cutout", device="cpu", batches=40, repeats=3):
    """Images/s of each stage (index, normalise, every augmentation op), of the whole batch made by
    those torch operations, and, where the loader uses it, of the fused CPU kernel.
    Medians over `repeats` passes of `batches` batches."""
    device = torch.device(device)
    loader = BatchLoader(split, batch_size, mean, std, shuffle=True, seed=0, device=device)
    pixel_ops, float_ops = split_pixel_ops(parse_augment(augment))
    order = loader.order(0)
    n = min(batches, len(loader))
    # The loader's own order: pixel-moving ops on uint8, then normalisation, then the rest.
    stages = ["index"] + [name for name, _, _ in pixel_ops] + ["normalize"] + [name for name, _, _ in float_ops]
    fused = device.type == "cpu" and fusable(pixel_ops + float_ops)
    times = {s: [] for s in stages + ["total"] + (["fused"] if fused else [])}
    for _ in range(repeats):
        acc = dict.fromkeys(stages, 0.0)
        t_all = time.perf_counter()
        for b in range(n):
            idx = order[b * batch_size:(b + 1) * batch_size]
            t = time.perf_counter(); x = loader.x[idx]; synchronize(device); acc["index"] += time.perf_counter() - t
            gen = _generator(0, 0, b, 7)
            for name, fn, arg in pixel_ops + [("normalize", None, None)] + float_ops:
                t = time.perf_counter()
                if fn is None:
                    x = loader.normalize(x)
                else:
                    x = fn(x, gen) if arg is None else fn(x, gen, arg)
                synchronize(device)
                acc[name] += time.perf_counter() - t
        total = time.perf_counter() - t_all
        images = n * batch_size
        for s in stages:
            times[s].append(images / max(acc[s], 1e-12))
        times["total"].append(images / total)
        if fused:
            t = time.perf_counter()
            for b in range(n):
                idx = order[b * batch_size:(b + 1) * batch_size]
                fused_batch(loader.x[idx], pixel_ops + float_ops, _generator(0, 0, b, 7), loader.mean, loader.inv_std)
            times["fused"].append(images / (time.perf_counter() - t))
    return {s: sorted(v)[len(v) // 2] for s, v in times.items()}
