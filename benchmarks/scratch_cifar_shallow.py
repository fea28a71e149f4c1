"""The shallow net c32k7-relu-p2-fc100-relu-fc10 trained by the scratch engine on real CIFAR-10.

    CNNLAB_DATA_DIR=/path/to/data .venv/bin/python benchmarks/scratch_cifar_shallow.py [--budget 540] [--backend numba]

Trains with Adam (lr 1e-3, batch 128, no augmentation) on the 45,000 training images until
the time budget (training seconds) runs out, finishing the batch in flight, then reports the
accuracy on the 10,000 test images. The whole run, data loading and evaluation included, is
meant to stay within 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.data.loader import BatchLoader
from cnnlab.scratch.engine import ScratchEngine

SPEC = "c32k7-relu-p2-fc100-relu-fc10"


def accuracy(engine, split, data):
    loader = BatchLoader(split, 1000, data.mean, data.std)
    correct = sum(int((engine.eval_logits(x).argmax(1) == y).sum()) for x, y in loader.epoch())
    return correct / len(split)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=540.0, help="training seconds")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    start = time.perf_counter()
    data = load_dataset("cifar10", os.environ.get("CNNLAB_DATA_DIR"))
    loader = BatchLoader(data.train, 128, data.mean, data.std, shuffle=True, seed=0)
    cfg = TrainConfig(engine="scratch", model=SPEC, dataset="cifar10", optimizer="adam", lr=args.lr, epochs=1)
    engine = ScratchEngine(cfg, data.num_classes, data.shape, len(loader), backend=args.backend)
    t0, steps, epoch = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < args.budget:
        seen = correct = 0
        for x, y in loader.epoch(epoch):
            _, c = engine.train_step(x, y)
            seen, correct, steps = seen + len(y), correct + c, steps + 1
            if time.perf_counter() - t0 >= args.budget:
                break
        epoch += 1
        print(f"epoch {epoch}: {seen} images, train acc {correct / max(seen, 1):.4f}, "
              f"{time.perf_counter() - t0:.0f} s, val acc {accuracy(engine, data.val, data):.4f}", flush=True)
    train_s = time.perf_counter() - t0
    test = accuracy(engine, data.test, data)
    print(f"{SPEC} ({args.backend}): {steps} steps ({steps * 128 / len(data.train):.2f} epochs) in {train_s:.0f} s "
          f"training; test accuracy {100 * test:.2f}% on {len(data.test)} images; total wall {time.perf_counter() - start:.0f} s; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
