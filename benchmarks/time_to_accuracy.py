"""Time to accuracy of a training recipe over several seeds, against this machine's FLOP floor.

    python benchmarks/time_to_accuracy.py --recipe fast --seeds 2 [--data-dir DIR] [--threads N]
        [--device cpu|cuda] [--set KEY=VALUE ...] [--out runs/tta-bench]

Each seed is an ordinary `cnnlab train --recipe NAME --seed S` run (its run directory is kept
under --out). Printed, and saved with the exact config, cnnlab version and machine to
OUT/results.json:
- per seed: test accuracy (with the recipe's test-time augmentation), training seconds, seconds
  per epoch, and the training seconds at which validation accuracy first passed each target;
- mean +- std over seeds of each figure (median too for times);
- training FLOPs per epoch (3 x 2 x MACs per image x training images: forward, and a backward of
  twice the forward's cost; convolutions and fc layers, which are all but a trace of the work),
  the achieved FLOP/s, and the floor: the same FLOPs at this machine's measured matmul rate in the
  recipe's precision (a large square matmul, median of 5; the best a dense kernel reaches here).
Threads default to every core (cnnlab's own default leaves the cores other work keeps busy at the start).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from cnnlab.config import TrainConfig
from cnnlab.envinfo import cpu_cores, provenance
from cnnlab.models import create_model
from cnnlab.models.summary import count_macs
from cnnlab.recipes import load_recipe
from cnnlab.train.loop import train
from cnnlab.workflows.study import mean_std


def matmul_flops(dtype, device, n=2048, repeats=5) -> float:
    """FLOP/s of an n x n matmul in `dtype` (median of `repeats`)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        if i:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def recipe_with(name: str, sets) -> dict:
    """A recipe's config dict with `--set KEY=VALUE` changes applied (each value read as YAML)."""
    import yaml

    base = load_recipe(name)
    for item in sets:
        key, _, value = item.partition("=")
        base[key] = yaml.safe_load(value)
    return base


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a recipe key (YAML value)")
    p.add_argument("--out", default="runs/tta-bench")
    args = p.parse_args()

    base = recipe_with(args.recipe, args.set)
    base.update(data_dir=args.data_dir, device=args.device, threads=args.threads or cpu_cores())
    out = Path(args.out) / f"{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        config = TrainConfig.from_dict({**base, "seed": seed, "out": str(out / f"seed{seed}")})
        t0 = time.perf_counter()
        s = train(config)
        s["wall_seconds"] = time.perf_counter() - t0
        runs.append(s)
        print(f"seed {seed}: test {100 * s['test_acc']:.2f}%, {s['train_seconds']:.1f} s training, "
              f"{s['wall_seconds']:.1f} s wall", flush=True)

    config = TrainConfig.from_dict({**base, "seed": args.first_seed})
    device = torch.device(runs[0]["device"])
    model = create_model(config.model, num_classes=10, **config.model_args)
    macs = count_macs(model, (3, 32, 32))
    train_images = runs[0]["train_count"]
    flops_epoch = 6 * macs * train_images
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision, torch.float32)
    rate = matmul_flops(dtype, device)
    sec_epoch = [s["seconds_per_epoch"] for s in runs]
    achieved = flops_epoch / statistics.median(sec_epoch)
    targets = sorted({k for s in runs for k in s.get("time_to_accuracy", {})}, key=float)

    print(f"\n{args.recipe}: {config.model}, {config.epochs} epochs, batch {config.batch_size}, {config.precision}, "
          f"{len(runs)} seeds, device {device}, threads {base['threads']}")
    acc_m, acc_s = mean_std([100 * s["test_acc"] for s in runs])
    tr_m, tr_s = mean_std([s["train_seconds"] for s in runs])
    each = ", ".join(f"{100 * s['test_acc']:.2f}" for s in runs)
    print(f"test accuracy      {acc_m:.2f} +- {acc_s:.2f} %   ({each})")
    print(f"training seconds   {tr_m:.1f} +- {tr_s:.1f}      (median {statistics.median(s['train_seconds'] for s in runs):.1f}; "
          f"compile {statistics.median(s.get('compile_seconds', 0.0) for s in runs):.1f} s apart)")
    print(f"seconds per epoch  {statistics.median(sec_epoch):.1f} (median)")
    for k in targets:
        times = [s.get("time_to_accuracy", {}).get(k) for s in runs]
        m, sd = mean_std(times)
        print(f"  to {k:>4}% val     {m:8.1f} +- {sd:.1f} s   reached in {sum(t is not None for t in times)}/{len(runs)} runs")
    print(f"FLOPs per epoch    {flops_epoch / 1e12:.2f} TFLOP ({macs / 1e6:.1f} M MACs per image, {train_images} images)")
    print(f"achieved           {achieved / 1e9:.1f} GFLOP/s")
    print(f"matmul floor rate  {rate / 1e9:.1f} GFLOP/s ({config.precision}); floor per epoch "
          f"{flops_epoch / rate:.1f} s: the recipe runs at {achieved / rate:.0%} of it")

    result = {"recipe": args.recipe, "config": config.to_dict(), "seeds": [s["run_dir"] for s in runs],
              "test_acc": [s["test_acc"] for s in runs], "train_seconds": [s["train_seconds"] for s in runs],
              "wall_seconds": [s["wall_seconds"] for s in runs], "seconds_per_epoch": sec_epoch,
              "compile_seconds": [s.get("compile_seconds") for s in runs],
              "time_to_accuracy": [s.get("time_to_accuracy") for s in runs],
              "macs_per_image": macs, "flops_per_epoch": flops_epoch, "achieved_flops": achieved,
              "matmul_flops": rate, "argv": sys.argv, **provenance()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
