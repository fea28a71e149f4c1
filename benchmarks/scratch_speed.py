"""One training step of the shallow CIFAR-10 net: scratch engine (NumPy, Numba) against PyTorch.

    .venv/bin/python benchmarks/scratch_speed.py [--repeats 15] [--batch-size 128]

Same process, same batch of 128 random 3x32x32 images, same threads; each round runs one step
of every contender in turn (so a burst of load from elsewhere hits all of them), and the figures
are medians over rounds. A step is forward, backward and an SGD update; no engine computes the
gradient of the input images. Also prints the per-layer profile of both scratch backends and
the floor: the step's FLOPs over this machine's measured float32 matrix-product rate (NumPy's
BLAS on a 2048x2048 product, timed in the same rounds, so the same load hits it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from cnnlab.models.spec import parse_spec, resolve
from cnnlab.scratch.model import ScratchNet
from cnnlab.scratch.optim import SGD
from cnnlab.scratch.profile import format_profile, profile_step

SPEC = "c32k7-relu-p2-fc100-relu-fc10"


def step_flops(spec, in_shape, n, classes=10):
    """Multiply-adds x 2 of the convolutions and fc layers: forward, weight gradient, and the input
    gradient for every layer but the first."""
    total = 0
    for i, (layer, ins, outs) in enumerate(resolve(parse_spec(spec), in_shape, classes)):
        if layer.kind == "conv":
            a = layer.args
            macs = n * outs[0] * outs[1] * outs[2] * (a["in"] // a["groups"]) * a["k"] ** 2
        elif layer.kind == "fc":
            macs = n * layer.args["in"] * layer.args["out"]
        else:
            continue
        total += 2 * macs * (3 if i else 2)
    return total


SGEMM_N = 2048


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    n = args.batch_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n)

    nets = {b: ScratchNet(SPEC, 10, (3, 32, 32), np.float32, b, seed=0) for b in ("numpy", "numba")}
    opts = {b: SGD(net.named_params(), lr=1e-3) for b, net in nets.items()}
    tnet = nets["numpy"].to_torch()
    topt = torch.optim.SGD(tnet.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        topt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(tnet(xt), yt).backward()
        topt.step()

    def scratch_step(b):
        _, grads = nets[b].loss(x, y)
        opts[b].step(grads)

    a = rng.standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    steps = {"torch": torch_step, "numpy": lambda: scratch_step("numpy"), "numba": lambda: scratch_step("numba"),
             "sgemm": lambda: a @ a}
    times = {k: [] for k in steps}
    for r in range(args.repeats + 2):  # two warm-up rounds (Numba compiles or loads its cache)
        for k, f in steps.items():
            t = time.perf_counter()
            f()
            if r >= 2:
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = step_flops(SPEC, (3, 32, 32), n)
    rate = 2 * SGEMM_N ** 3 / med.pop("sgemm")
    floor = flops / rate
    import numba

    print(f"{SPEC}, batch {n}, float32, torch threads {torch.get_num_threads()}, numba threads {numba.get_num_threads()} "
          f"({numba.threading_layer()}), OpenBLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default = CPUs')}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"step FLOPs {flops / 1e9:.2f} G; measured sgemm ({SGEMM_N}^3, NumPy) {rate / 1e9:.0f} GFLOP/s; "
          f"floor {1000 * floor:.1f} ms")
    print(f"{'engine':<8} {'median ms':>10} {'x torch':>8} {'x floor':>8} {'GFLOP/s':>8}")
    for k in med:
        print(f"{k:<8} {1000 * med[k]:>10.1f} {med[k] / med['torch']:>8.2f} {med[k] / floor:>8.1f} {flops / med[k] / 1e9:>8.1f}")
    for b in ("numpy", "numba"):
        print(f"\nper-layer profile, {b} backend (median of 5 steps)")
        print(format_profile(profile_step(nets[b], x, y, repeats=5, warmup=1)))


if __name__ == "__main__":
    main()
