"""The searched model against hand-designed zoo models on the competition metric, same recipe and budget.

    python benchmarks/search_vs_zoo.py --search runs/search-search-competition \\
        --file examples/search-competition.yaml --models lenet5,resnet20,shufflenet_v2 [--data-dir DIR]

Each zoo model trains with the search file's `base` config (the recipe and epoch budget every trial
had; the searched `train` keys at their middle value, for the learning rate the geometric mean),
is costed by cnnlab.cost, and is scored like the trials: validation error for the metric the search
optimised, and the test error once. The search's own figures come from OUT/best.json. Printed as a
table, and saved to SEARCH/zoo_baseline.json with the config, version and machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.cost.report import analyze
from cnnlab.cost.score import ranking_metric
from cnnlab.dirs import SearchDir
from cnnlab.envinfo import provenance
from cnnlab.models import create_model
from cnnlab.train.loop import train
from cnnlab.workflows.search import load_search


def middle(dist: dict):
    if "choices" in dist:
        return dist["choices"][len(dist["choices"]) // 2]
    lo, hi = dist.get("int", dist.get("float"))
    if dist.get("log"):
        return math.sqrt(lo * hi)
    return (lo + hi) / 2 if "float" in dist else (lo + hi) // 2


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search", required=True, help="the finished search's directory (holds best.json)")
    p.add_argument("--file", required=True, help="the search file it ran")
    p.add_argument("--models", default="lenet5,resnet20,shufflenet_v2,mobilenet_v2")
    p.add_argument("--data-dir")
    args = p.parse_args()

    search = load_search(args.file, args.search)
    best = SearchDir(args.search).read()["best"]
    base = {**search.base, **{k: middle(d) for k, d in search.train.items()}}
    if args.data_dir:
        base["data_dir"] = args.data_dir
    rows = []
    for name in args.models.split(","):
        config = TrainConfig.from_dict({**base, "model": name, "out": str(Path(args.search) / "zoo" / name)})
        rep = analyze(create_model(name, num_classes=10, in_channels=3, input_size=32), (3, 32, 32))
        t0 = time.perf_counter()
        s = train(config, quiet=True) if not Path(config.out, "summary.json").exists() else \
            json.loads(Path(config.out, "summary.json").read_text())
        val_err, test_err = 100 * (1 - s["best_val_acc"]), 100 * (1 - s["test_acc"])
        rows.append({"model": name, "params": rep.totals["params"], "cycles": int(rep.totals["cycles"]),
                     "energy_mj": rep.totals["energy_mj"], "peak_activation": rep.peak_activation,
                     "activation_ok": rep.activation_ok, "val_error": val_err, "test_error": test_err,
                     "val_metric": ranking_metric(val_err, rep.totals["cycles"]),
                     "test_metric": ranking_metric(test_err, rep.totals["cycles"]),
                     "train_seconds": s["train_seconds"], "wall_seconds": time.perf_counter() - t0})
        print(f"{name}: done", file=sys.stderr, flush=True)
    rows.append({"model": f"search best (trial {best['trial']}): {best['model']}", "params": best["parameters"],
                 "cycles": best["cycles"], "energy_mj": best["energy_mj"], "peak_activation": best["peak_activation"],
                 "activation_ok": best["peak_activation"] < search.max_activation, "val_error": best["val_error"],
                 "test_error": best["test_error"], "val_metric": best["val_metric"], "test_metric": best["test_metric"]})
    print(f"{'model':<60} {'params':>9} {'cycles':>9} {'mJ':>7} {'peak B':>9} {'val err':>8} {'test err':>8} "
          f"{'val metric':>10} {'test metric':>11}")
    for r in rows:
        print(f"{r['model'][:60]:<60} {r['params']:>9,} {r['cycles']:>9,} {r['energy_mj']:>7.3f} "
              f"{r['peak_activation']:>9,}{'' if r['activation_ok'] else '!'} {r['val_error']:>7.2f}% "
              f"{r['test_error']:>7.2f}% {r['val_metric']:>10.3f} {r['test_metric']:>11.3f}")
    out = Path(args.search) / "zoo_baseline.json"
    out.write_text(json.dumps({"rows": rows, "base": base, "argv": sys.argv, **provenance()}, indent=2, default=str))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
