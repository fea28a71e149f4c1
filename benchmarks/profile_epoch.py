"""Where a training step's time goes: a per-operator profile (torch.profiler) of a recipe's training steps.

    python benchmarks/profile_epoch.py [--recipe fast] [--steps 6] [--skip 3] [--threads N] [--data-dir DIR]
        [--set KEY=VALUE ...]

Trains the recipe as `cnnlab train --recipe` does (same model, optimizer, precision, augmentation,
batch), skips `--skip` steps (warm-up: first-call allocation, Numba compilation, lazy init), then
profiles `--steps` steps with torch.profiler (CPU activities, FLOPs of matmuls and convolutions) and
stops the run. Printed: the step time, the operators by self CPU time (the share of the profiled
time, calls, the FLOPs the profiler counts for them: forward convolutions and matmuls only, so the
optimizer's matmuls (Muon's Newton-Schulz iterations) show, backward convolutions do not), the same
grouped into kinds, and the floor: the model's training FLOPs per step (6 x MACs per image x batch:
the forward, and a backward of twice its cost, as benchmarks/time_to_accuracy.py counts them) at this
machine's measured matmul rate in the recipe's precision. One epoch is
steps-per-epoch times the step time; a full epoch under the profiler would slow and distort it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import torch

from cnnlab.config import TrainConfig
from cnnlab.envinfo import environment
from cnnlab.train.hooks import Hook
from cnnlab.train.loop import train
from time_to_accuracy import matmul_flops, recipe_with  # this folder's: the floor and the recipe both use

KINDS = (  # (kind, substrings of an aten op's name), first match wins
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "conv2d", "mkldnn_convolution")),
    ("matmul", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("batch norm", ("batch_norm", "native_batch_norm")),
    ("optimizer", ("_foreach", "lerp", "addcmul", "addcdiv", "newton", "muon")),
    ("copies and casts", ("copy_", "to", "_to_copy", "contiguous", "clone")),
    ("elementwise", ("relu", "gelu", "add", "mul", "div", "sub", "threshold", "where", "max_pool", "avg_pool",
                     "log_softmax", "nll", "cross_entropy", "sum", "mean", "fill", "zero", "sign", "abs")),
)


def kind(name: str) -> str:
    n = name.removeprefix("aten::")
    for k, keys in KINDS:
        if any(n == key or n.startswith(key) for key in keys):
            return k
    return "other"


class Profile(Hook):
    """Profiles steps skip+1 .. skip+steps, timing each, then stops the run."""

    def __init__(self, skip, steps):
        self.skip, self.steps, self.times, self.prof, self.t0 = skip, steps, [], None, None

    def on_step(self, t, loss, n):
        done = t.progress.step
        if self.prof is not None:
            self.times.append(time.perf_counter() - self.t0)
            if done >= self.skip + self.steps:
                self.prof.__exit__(None, None, None)
                t.stop("profiled", now=True)
                return
        if done == self.skip and self.prof is None:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
            self.prof.__enter__()
        self.t0 = time.perf_counter()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--skip", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default="runs/profile-epoch")
    args = p.parse_args()
    base = recipe_with(args.recipe, args.set)
    base.update(data_dir=args.data_dir, device="cpu", threads=args.threads, out=f"{args.out}/{time.strftime('%Y%m%d-%H%M%S')}")
    config = TrainConfig.from_dict(base)
    env = environment()
    print(f"machine: {env['cpu_model']}, {env['cpu_cores']} cores; torch {env['torch']}; load average "
          f"{os.getloadavg()[0]:.2f} at start; {args.recipe}: {config.model}, batch {config.batch_size}, "
          f"{config.precision}, {config.optimizer}", flush=True)
    hook = Profile(args.skip, args.steps)
    s = train(config, quiet=True, hooks=[hook])
    events = hook.prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)  # microseconds, every profiled step
    from cnnlab.build import build_for
    from cnnlab.models.summary import count_macs

    from cnnlab.dirs import load_run

    run = load_run(s["run_dir"], "last")
    shape = tuple(run.data["shape"])
    macs = count_macs(build_for(config, shape, run.data["num_classes"]).eval(), shape)
    flops = 6 * macs * config.batch_size * args.steps
    step = statistics.median(hook.times)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision, torch.float32)
    rate = matmul_flops(dtype, torch.device("cpu"))
    steps_per_epoch = s.get("steps_per_epoch") or -(-s["train_count"] // config.batch_size)
    print(f"\nstep: {step * 1e3:.0f} ms median of {len(hook.times)} (threads {s['threads']['torch']}); an epoch of "
          f"{steps_per_epoch} steps: {step * steps_per_epoch:.1f} s")
    print(f"training FLOPs per step {flops / args.steps / 1e9:.1f} GFLOP ({macs / 1e6:.1f} M MACs per image); matmul rate here {rate / 1e9:.0f} GFLOP/s "
          f"({config.precision}); floor per step {flops / args.steps / rate * 1e3:.0f} ms: the step runs at "
          f"{flops / args.steps / rate / step:.0%} of it\n")
    print("| operator | self CPU ms/step | share | calls/step | GFLOP/step | GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        ms = e.self_cpu_time_total / 1e3 / args.steps
        gf = (e.flops or 0) / 1e9 / args.steps
        rate_op = f"{gf / (ms / 1e3):.0f}" if gf and ms else "-"
        print(f"| `{e.key}` | {ms:.1f} | {e.self_cpu_time_total / total:.1%} | {e.count / args.steps:.0f} | "
              f"{gf:.2f} | {rate_op} |")
    groups = defaultdict(float)
    for e in events:
        groups[kind(e.key)] += e.self_cpu_time_total
    print("\n| kind | self CPU ms/step | share |")
    print("|---|---:|---:|")
    for k, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {us / 1e3 / args.steps:.1f} | {us / total:.1%} |")


if __name__ == "__main__":
    main()
