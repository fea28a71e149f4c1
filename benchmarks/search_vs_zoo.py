"""The searched model against hand-designed zoo models on the competition metric, each equally tuned and trained.

    python benchmarks/search_vs_zoo.py --file examples/search-competition-final.yaml --out runs/search-vs-zoo \\
        --models resnet20,convnet,lenet5 --workers 2 --seeds 3 [--trials N] [--data-dir DIR] \\
        [--zoo-base examples/search-competition-final.yaml] \\
        [--set base.subset=5000 --set final.epochs=4 ...]   # a reduced budget, the same for every contender

Every contender goes through the same `cnnlab search` pipeline, with the same budget:
1. the search: the search file as it is (its final stage with --seeds seeds), into OUT/search/;
2. each zoo model: a search file of its own (OUT/zoo-NAME.yaml, written here) with the same base,
   pruner, fidelity, trial budget and final stage, its model fixed and the training values the search
   file tunes (`space.train`: the learning rate, and the optimizer or TTA when searched) searched
   for it alone, into OUT/zoo-NAME/. No constraint refuses a zoo model: one over the 1 MB activation
   limit is marked "!" and left out of "best zoo model".
So each model gets its own tuning (the same number of trials, the same Hyperband rungs) and the
same final training (top_k finalists x seeds, the winner by final validation metric); the figures
are the winner's test split, mean ± std over its seeds.

`--zoo-base FILE` gives the zoo models the base training config and `space.train` of another
search file, everything else (trials, pruner, rungs, final stage) still from --file. Use it when
the search file's base belongs to its own network: the fast recipe's (search-competition-fastnet.yaml)
trains FastNet's logits-over-width head at a head rate of 1340, which a zoo model's plain head
cannot take, so its contenders train from search-competition-final.yaml's SGD/Muon base instead.

Each search resumes when the benchmark runs again, and the search contender reuses a finished
`cnnlab search FILE --out DIR` copied to OUT/search/ (its file is written as OUT/FILE's name, the
study's name), so a search measured on its own is not run twice (its wall time in the JSON is
then the reuse's seconds; the measured one is the original run's). A contender whose search has begun keeps its
file: when the search files or flags would now write it otherwise, the benchmark stops with one line before
anything is written (a contender changed half-way would be measured on two budgets). The table is printed and saved, with the search
files, the command lines, the wall time of each search, the cnnlab version and the machine, to
OUT/search_vs_zoo.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cnnlab.dirs import SearchDir
from cnnlab.envinfo import provenance
from cnnlab.io import atomic_write_text

NO_LIMIT = 10**12  # bytes: a zoo model is measured whatever its peak activation, and marked when over 1 MB


def apply_set(d: dict, assignment: str):
    """`final.train.subset=20000`: the search file's key at that dotted path set to the YAML value."""
    path, sep, value = assignment.partition("=")
    if not sep or not path:
        raise SystemExit(f"--set takes KEY.PATH=VALUE, e.g. base.subset=5000, got {assignment!r}")
    *parents, last = path.split(".")
    for key in parents:
        d = d.setdefault(key, {})
    d[last] = yaml.safe_load(value)


def contender_files(file: Path, out: Path, models: list, seeds, trials, sets=(), zoo_base: Path | None = None) -> dict:
    """{name: search file} of the search and each zoo model, written into OUT; the zoo models'
    base and space.train from `zoo_base` when given (the `--set base.*` changes apply to both)."""
    d = yaml.safe_load(file.read_text())
    z = yaml.safe_load(zoo_base.read_text()) if zoo_base else d
    z = {"base": dict(z.get("base") or {}), "train": dict((z.get("space") or {}).get("train") or {})}
    for assignment in sets:
        apply_set(d, assignment)
        if zoo_base and assignment.startswith("base."):
            apply_set(z, assignment)
    if not isinstance(d.get("final"), dict):
        raise SystemExit(f"{file} has no final stage (`final:`): the comparison is of fully trained models")
    if seeds:
        d["final"]["seeds"] = seeds
    if trials:
        d["trials"] = trials
    files = {"search": d}
    for name in models:
        zoo = {k: v for k, v in d.items() if k not in ("space", "constraints", "description")}
        zoo["space"] = {"spec": name, "train": z["train"] if zoo_base else d["space"].get("train", {})}
        if zoo_base:
            zoo["base"] = {**z["base"], "epochs": d["base"].get("epochs", z["base"].get("epochs"))}
        zoo["constraints"] = {"max_activation": NO_LIMIT}
        zoo["description"] = f"{name} with its own tuning of {', '.join(zoo['space']['train']) or 'nothing'}"
        files[f"zoo-{name}"] = zoo
    out.mkdir(parents=True, exist_ok=True)
    # the search keeps its file's name, so its study (named after the file) is the one a
    # `cnnlab search FILE` run made: a finished run copied to OUT/search/ is reused, not redone
    paths = {name: out / (file.name if name == "search" else f"{name}.yaml") for name in files}
    texts = {name: yaml.safe_dump(content, sort_keys=False) for name, content in files.items()}
    for name, path in paths.items():  # all checked before any is written
        if path.exists() and (out / name).exists() and path.read_text() != texts[name]:
            raise SystemExit(f"search_vs_zoo: {path} differs from what these files and flags give now, and "
                             f"{out / name} holds its search: continuing would change a contender half-way; give "
                             "another --out, or put the search files and flags back")
    for name, path in paths.items():
        atomic_write_text(path, texts[name])
    return paths


def run_search(path: Path, out: Path, workers: int, data_dir) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", str(workers)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    t0 = time.perf_counter()
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    code = subprocess.run(cmd).returncode
    if code:  # the search said why (a stop by Ctrl-C is 130); it resumes when this benchmark runs again
        raise SystemExit(f"search_vs_zoo: the search {path.name} ended with exit code {code}; run this benchmark "
                         "again to continue it")
    return SearchDir(out).read_best(), time.perf_counter() - t0


def pm(mean, std, digits=2) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", required=True, help="the search file (with a final stage)")
    p.add_argument("--out", required=True, help="the benchmark's folder: one search folder per contender")
    p.add_argument("--models", default="resnet20,convnet,lenet5", help="zoo models, comma-separated")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, help="final runs per finalist (default: the file's final.seeds)")
    p.add_argument("--trials", type=int, help="trials per contender (default: the file's trials)")
    p.add_argument("--data-dir")
    p.add_argument("--zoo-base", metavar="FILE",
                   help="a search file whose base and space.train the zoo models train with (default: --file's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="change the search file for every contender, e.g. base.subset=5000 (repeatable)")
    args = p.parse_args()

    out = Path(args.out)
    files = contender_files(Path(args.file), out, args.models.split(","), args.seeds, args.trials, args.set,
                            Path(args.zoo_base) if args.zoo_base else None)
    rows = []
    for name, path in files.items():
        best, wall = run_search(path, out / name, args.workers, args.data_dir)
        f = best["final"]
        rows.append({"contender": name, "model": best["model"], "trial": best["trial"], "params": best["params"],
                     "parameters": best["parameters"], "cycles": best["cycles"], "energy_mj": best["energy_mj"],
                     "peak_activation": best["peak_activation"], "activation_ok": best["peak_activation"] < 1_000_000,
                     "seeds": f["finished"], "epochs": f["epochs"],
                     **{k: f[k] for k in ("val_error", "val_error_std", "test_error", "test_error_std", "val_metric",
                                          "test_metric", "test_metric_std")},
                     "per_seed_test_metric": [r["test_metric"] for r in f["runs"]],
                     "search_val_metric": best["search"]["val_metric"], "wall_seconds": wall})
    print(f"{'contender':<16} {'params':>9} {'cycles':>9} {'peak B':>10} {'val error %':>14} {'test error %':>14} "
          f"{'test metric':>14} {'seeds':>5}  model")
    for r in rows:
        print(f"{r['contender']:<16} {r['parameters']:>9,} {r['cycles']:>9,} {r['peak_activation']:>9,}"
              f"{'' if r['activation_ok'] else '!'} {pm(r['val_error'], r['val_error_std']):>14} "
              f"{pm(r['test_error'], r['test_error_std']):>14} {pm(r['test_metric'], r['test_metric_std'], 3):>14} "
              f"{r['seeds']:>5}  {r['model']}")
    zoo = [r for r in rows if r["contender"] != "search" and r["activation_ok"]]
    summary = {}
    if zoo:
        best_zoo, mine = min(zoo, key=lambda r: r["test_metric"]), rows[0]
        gain = 100 * (best_zoo["test_metric"] - mine["test_metric"]) / best_zoo["test_metric"]
        summary = {"best_zoo": best_zoo["contender"], "improvement_percent": gain}
        print(f"search vs the best zoo model ({best_zoo['contender']}): test metric {mine['test_metric']:.3f} against "
              f"{best_zoo['test_metric']:.3f}, {abs(gain):.1f}% {'better' if gain >= 0 else 'worse'}")
    result = {"rows": rows, **summary, "files": {n: yaml.safe_load(p.read_text()) for n, p in files.items()},
              "argv": sys.argv, **provenance()}
    atomic_write_text(out / "search_vs_zoo.json", json.dumps(result, indent=2, default=str) + "\n")
    print(f"saved {out / 'search_vs_zoo.json'}")


if __name__ == "__main__":
    main()
