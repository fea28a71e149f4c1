"""Training throughput (images/s) of every zoo model on this machine's CPU.

    python benchmarks/zoo_throughput.py [--batch 128] [--steps 3] [--threads N] [--models a,b]

One training step = forward, cross-entropy, backward, SGD-with-momentum update, on a batch of
random 3x32x32 images. Each model runs one warm-up step, then `--steps` timed steps; the
figure is the median step time turned into images/s. All models are measured in one process,
one after another, so their figures compare as ratios even on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnlab.models import create_model, list_models
from cnnlab.models.summary import count_macs, count_params


def step_seconds(model, x, y, opt, steps):
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--models", help="comma-separated names (default: every model tagged zoo, plus lenet5 and convnet)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else ["lenet5", "convnet", *list_models("zoo")]
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    print(f"batch {args.batch}, 3x32x32, {torch.get_num_threads()} threads, median of {args.steps} steps")
    print("| model | params | MACs/image | step s | images/s |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        model = create_model(name, num_classes=10, in_channels=3, input_size=32).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        seconds = step_seconds(model, x, y, opt, args.steps)
        print(f"| {name} | {count_params(model) / 1e6:.2f}M | {count_macs(model) / 1e6:.1f}M | {seconds:.3f} | "
              f"{args.batch / seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
