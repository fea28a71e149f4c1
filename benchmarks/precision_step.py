"""Which precision and memory format train a model fastest on this machine: one training step
(forward, backward, optimizer update) timed in each combination, side by side.

    python benchmarks/precision_step.py [--model SPEC_OR_NAME] [--batch-size 256] [--threads 1]
        [--optimizer muon] [--rounds 9] [--precisions fp32,bf16] [--formats channels_last,contiguous] [--profile]

Every combination gets its own engine (cnnlab.train.torch_engine.TorchEngine, as `cnnlab train`
builds it) and the same random batch; the steps run round by round, each combination once a round,
so a change of machine load hits them all alike. The first round is warm-up (oneDNN builds its
kernels per shape) and is dropped; medians of the rest. Also printed: this machine's n x n matmul
rate in each precision (benchmarks/time_to_accuracy.py's measure) and each step against the floor:
the step's training FLOPs (6 x MACs per image x batch) at the fastest of those rates, whichever
precision it is in (a precision whose matmuls are slower has no lower floor of its own). With
--profile, after the timing, 3 more steps of each combination under torch.profiler give the share
of the step spent in convolutions (forward and backward, oneDNN) and the rate they reach (the
model's training FLOPs, nearly all of them convolutions', over that time).

Why it exists: whether bf16 pays depends on the CPU. Where AMX is exposed, bf16 matmuls run several
times the fp32 rate and `precision: bf16` is the fast choice; where the CPU has AVX-512 BF16 but no
AMX (or shows none to a virtual machine), bf16 convolutions ran slower than fp32's and only the
memory-bound work (batch norm, activations, pooling) gained, so a small net's step took as long in
either (BENCHMARKS.md, "Precision of a small net's training step").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnlab.config import TrainConfig
from cnnlab.envinfo import environment
from cnnlab.errors import CnnlabError
from cnnlab.models.summary import count_macs
from cnnlab.train.torch_engine import PRECISIONS, TorchEngine
from time_to_accuracy import matmul_flops  # this folder's

# the network examples/search-competition-residual.yaml chose (BENCHMARKS.md): 82,952 cycles
DEFAULT_MODEL = ("c32k3-bn-relu-p2-[r[c32k3-bn-relu-c32k3-bn]x1-relu]x1-c48k3-bn-relu-p2-c128k3-bn-relu-p2-"
                 "[r[c128k3-bn-relu-c128k3-bn]x1-relu]x1-gap")
DTYPES = {name: dtype or torch.float32 for name, dtype in PRECISIONS.items()}  # the engine's vocabulary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1: one search worker's share)")
    p.add_argument("--optimizer", default="muon")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--formats", default="channels_last,contiguous")
    p.add_argument("--profile", action="store_true", help="also the convolutions' share of the step and their rate")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    formats = args.formats.split(",")
    for name in formats:
        if name not in ("channels_last", "contiguous"):
            p.error(f"unknown memory format {name!r}: channels_last or contiguous")

    shape, classes = (3, 32, 32), 10
    x = torch.randn(args.batch_size, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, classes, (args.batch_size,), generator=torch.Generator().manual_seed(1))
    combos = [(prec, fmt) for prec in precisions for fmt in formats]
    engines = {}
    for prec, fmt in combos:
        config = TrainConfig(model=args.model, precision=prec, channels_last=fmt == "channels_last",
                             optimizer=args.optimizer, lr=0.03, epochs=1, schedule="onecycle",
                             batch_size=args.batch_size, label_smoothing=0.1)
        try:
            engines[prec, fmt] = TorchEngine(config, classes, shape, steps_per_epoch=10 * args.rounds)
        except CnnlabError as e:  # a bad spec, model name or precision (the engine's check): one line, exit 2
            p.error(str(e))
    times = {c: [] for c in combos}
    for _ in range(args.rounds):
        for c, engine in engines.items():
            t0 = time.perf_counter()
            engine.train_step(x, y)
            times[c].append(time.perf_counter() - t0)

    env = environment()
    macs = count_macs(next(iter(engines.values())).model.eval(), shape)
    flops = 6 * macs * args.batch_size
    rates = {prec: matmul_flops(DTYPES[prec], torch.device("cpu")) for prec in precisions}
    print(f"{env['cpu_model']}, {env['cpu_cores']} cores, torch {env['torch']}, {args.threads} thread(s); "
          f"batch {args.batch_size}, {args.optimizer}; {macs / 1e6:.1f} M MACs per image, "
          f"{flops / 1e9:.1f} GFLOP per training step")
    floor = flops / max(rates.values())
    print("matmul rate (2048 x 2048): " + ", ".join(f"{prec} {rates[prec] / 1e9:.0f} GFLOP/s" for prec in precisions)
          + f"; floor {1000 * floor:.1f} ms per step at the fastest")
    base = statistics.median(times[combos[0]][1:])
    conv = {c: conv_share(engines[c], x, y) for c in combos} if args.profile else {}
    print(f"{'precision':>9}  {'format':<14}{'step ms':>9}{'ms/image':>10}{'x first':>9}{'x floor':>9}"
          + (f"{'conv share':>12}{'conv GFLOP/s':>14}" if conv else ""))
    for c in combos:
        step = statistics.median(times[c][1:])
        line = (f"{c[0]:>9}  {c[1]:<14}{1000 * step:9.1f}{1000 * step / args.batch_size:10.3f}"
                f"{step / base:9.2f}{step / floor:9.2f}")
        if conv:
            share, seconds = conv[c]
            line += f"{100 * share:11.0f}%{flops / seconds / 1e9:14.0f}"
        print(line)


def conv_share(engine, x, y, steps=3) -> tuple[float, float]:
    """(share of the profiled time spent in convolution operators, their seconds per step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.train_step(x, y)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    return conv / total, conv / 1e6 / steps


if __name__ == "__main__":
    main()
