"""Loader + augmentation throughput against LeNet-5 training throughput, side by side.

    python benchmarks/loader_vs_training.py [--data-dir DIR] [--repeats 5]

Both are measured in one process, on the same threads, interleaved repeat by repeat, and the
medians are compared: the loader must make batches at least 10x faster than LeNet-5 trains on them.
Also prints the FLOP floor of a LeNet-5 training step on this CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cnnlab.data import load_dataset
from cnnlab.data.loader import BatchLoader
from cnnlab.envinfo import environment
from cnnlab.models import create_model
from cnnlab.train.optim import build_optimizer


def loader_rate(loader, batches):
    t = time.perf_counter()
    n = 0
    for i, (x, y) in enumerate(loader.epoch(0)):
        n += len(y)
        if i + 1 == batches:
            break
    return n / (time.perf_counter() - t)


def training_rate(model, opt, loader, batches):
    data = [b for _, b in zip(range(batches), loader.epoch(1))]  # batches made beforehand: time training alone
    model.train()
    t = time.perf_counter()
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return sum(len(y) for _, y in data) / (time.perf_counter() - t)


def train_flops_per_image(model, shape):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *shape)
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), torch.zeros(1, dtype=torch.long)).backward()
    return fc.get_total_flops()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--augment", default="crop:4+flip+cutout:8")
    args = ap.parse_args()
    torch.manual_seed(0)
    results = {}
    for dataset in ("cifar10", "mnist"):
        d = load_dataset(dataset, args.data_dir)
        loader = BatchLoader(d.train, args.batch_size, d.mean, d.std, shuffle=True, augment=args.augment)
        model = create_model("lenet5", d.num_classes, d.shape[0], d.shape[1:])
        opt = build_optimizer(model, "sgd", 0.01)
        loader_rate(loader, 5), training_rate(model, opt, loader, 5)  # warm-up
        lr_, tr_ = [], []
        for _ in range(args.repeats):
            lr_.append(loader_rate(loader, args.batches))
            tr_.append(training_rate(model, opt, loader, args.batches))
        flops = train_flops_per_image(model, d.shape)
        results[dataset] = dict(loader_images_per_s=statistics.median(lr_), lenet5_train_images_per_s=statistics.median(tr_),
                                ratio=statistics.median(a / b for a, b in zip(lr_, tr_)), train_flops_per_image=flops)
    env = environment()
    print(json.dumps({"machine": f"{env['cpu_model']}, {env['cpu_cores']} cores, torch {env['torch']}",
                      "batch_size": args.batch_size, "augment": args.augment, "results": results}, indent=2))
    for name, r in results.items():
        print(f"{name}: loader {r['loader_images_per_s']:,.0f} img/s, LeNet-5 training {r['lenet5_train_images_per_s']:,.0f} img/s, "
              f"ratio {r['ratio']:.1f}x, {r['train_flops_per_image'] / 1e6:.2f} MFLOP per training image")


if __name__ == "__main__":
    main()
