"""Training throughput with 1 and with N processes (torch.distributed, Gloo on CPUs / NCCL on GPUs).

    python benchmarks/distributed_throughput.py --model resnet20 --dataset cifar10 --nproc 2 --rounds 3

Each round trains the same config once in one process and once with `--nproc N`, interleaved, so a
shared machine's load falls on both alike; the figure is images/s over the second epoch (the first
warms up), median over rounds. The global batch is the same in both, so each of N processes
computes batch/N images per step and the gradients are averaged once per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(args, nproc: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "cnnlab", "train", "--model", args.model, "--dataset", args.dataset,
           "--subset", str(args.subset), "--val-size", "1000", "--epochs", "2", "--batch-size", str(args.batch_size),
           "--optimizer", "sgd", "--lr", "0.05", "--device", args.device, "--quiet", "--out", str(out)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    else:
        cmd += ["--threads", str(os.cpu_count() if args.threads is None else args.threads)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = (out / "metrics.csv").read_text().splitlines()
    seconds = float(rows[-1].split(",")[-1])
    return (args.subset // args.batch_size) * args.batch_size / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--subset", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="threads of the single process (default: all cores)")
    args = p.parse_args()
    one, many = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            one.append(run(args, 1, Path(tmp) / f"one{r}"))
            many.append(run(args, args.nproc, Path(tmp) / f"many{r}"))
            print(f"round {r + 1}: 1 process {one[-1]:,.0f} img/s, {args.nproc} processes {many[-1]:,.0f} img/s",
                  flush=True)
    m1, mn = statistics.median(one), statistics.median(many)
    print(json.dumps({"model": args.model, "device": args.device, "batch": args.batch_size, "one": m1, "many": mn,
                      "nproc": args.nproc, "ratio": mn / m1, "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
