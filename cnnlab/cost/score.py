"""The CIFAR-10 class competition's score for a trained run.

Hard constraints: peak activation (competition rule) under 1 MB and test error under 50%;
a run that breaks one scores 0 points. Otherwise points are the sum of
    error      40-49 / 30-39 / 20-29 / 10-19 / 5-9 / <5 %      -> 30 / 40 / 50 / 60 / 70 / 80
    energy     < 2 / 1.5 / 1 / 0.5 mJ                          -> 5 / 10 / 15 / 20
    latency    < 1M / 0.5M / 0.25M / 0.1M cycles               -> 5 / 10 / 15 / 20
and the ranking metric (lower is better) is error_percent / 12 + cycles / 300000.
"""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR
from cnnlab.cost.report import DEFAULT_MAX_ACTIVATION, analyze
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text

ERROR_BANDS = ((5, 80), (10, 70), (20, 60), (30, 50), (40, 40), (50, 30))  # (error % below, points)
ENERGY_BANDS = ((0.5, 20), (1.0, 15), (1.5, 10), (2.0, 5))  # (mJ below, points)
CYCLE_BANDS = ((100_000, 20), (250_000, 15), (500_000, 10), (1_000_000, 5))  # (cycles below, points)


def _band(value, bands):
    for limit, points in bands:
        if value < limit:
            return points
    return 0


def ranking_metric(error_percent: float, cycles: float) -> float:
    return error_percent / 12 + cycles / 300_000


def rubric(error_percent: float, energy_mj: float, cycles: float, peak_activation: int,
           max_activation: int = DEFAULT_MAX_ACTIVATION) -> dict:
    failed = []
    if peak_activation >= max_activation:
        failed.append(f"peak activation {peak_activation:,} B >= {max_activation:,} B")
    if error_percent >= 50:
        failed.append(f"test error {error_percent:.2f}% >= 50%")
    pts = {"error": _band(error_percent, ERROR_BANDS), "energy": _band(energy_mj, ENERGY_BANDS),
           "latency": _band(cycles, CYCLE_BANDS)}
    total = 0 if failed else sum(pts.values())
    return {"points": total, "points_by_part": pts, "hard_constraints_failed": failed,
            "metric": ranking_metric(error_percent, cycles)}


def _test_accuracy(run_dir: Path, run) -> tuple[float, str]:
    summary = run_dir / "summary.json"
    if summary.exists():
        acc = json.loads(summary.read_text()).get("test_acc")
        if acc is not None:
            return float(acc), "summary.json"
    from cnnlab.data import load_dataset
    from cnnlab.evaluate import evaluate

    cfg = run.config
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed)
    res = evaluate(run.model, data.test, data.mean, data.std, data.num_classes, getattr(run.model, "loss_name", "softmax"))
    return res["accuracy"], "evaluated on the test split"


def score_run(run_dir, arch=DEFAULT_ACCELERATOR, max_activation: int = DEFAULT_MAX_ACTIVATION, write: bool = True) -> dict:
    """Score a run directory and (by default) write RUN_DIR/score.json."""
    from cnnlab.train.checkpoint import load_run

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    shape = tuple(run.data["shape"])
    acc, source = _test_accuracy(run_dir, run)
    if acc != acc:  # NaN: an empty test split
        raise CnnlabError(f"run {run_dir} has no test accuracy (empty test split): it cannot be scored")
    rep = analyze(run.model, shape, arch, max_activation=max_activation, name=run.config.model)
    error = 100 * (1 - acc)
    energy_mj = rep.totals["energy_pj"] * 1e-9
    cycles = rep.totals["cycles"]
    result = {
        "run_dir": str(run_dir), "model": run.config.model, "dataset": run.config.dataset,
        "input": list(shape), "test_accuracy": acc, "error_percent": error, "accuracy_source": source,
        "energy_mj": energy_mj, "cycles": cycles, "peak_activation_bytes": rep.peak_activation,
        "peak_activation_layer": rep.peak_layer, "max_activation_bytes": max_activation,
        "params": rep.totals["params"], "macs": rep.totals["macs"], "architecture": arch.name,
        **rubric(error, energy_mj, cycles, rep.peak_activation, max_activation),
    }
    if run.config.dataset != "cifar10":
        result["note"] = f"the competition grades CIFAR-10 models; this run used {run.config.dataset}"
    if write:
        atomic_write_text(run_dir / "score.json", json.dumps(result, indent=2) + "\n")
    return result


def format_score(s: dict) -> str:
    pts = s["points_by_part"]
    lines = [
        f"run              {s['run_dir']} ({s['model']} on {s['dataset']})",
        f"test error       {s['error_percent']:.2f}%  (accuracy {100 * s['test_accuracy']:.2f}%, {s['accuracy_source']})"
        f"  -> {pts['error']} points",
        f"energy           {s['energy_mj']:.4f} mJ  -> {pts['energy']} points",
        f"latency          {s['cycles']:,} cycles  -> {pts['latency']} points",
        f"peak activation  {s['peak_activation_bytes']:,} bytes at {s['peak_activation_layer']} "
        f"(limit {s['max_activation_bytes']:,})",
        f"metric           {s['metric']:.4f}  (error%/12 + cycles/300000, lower is better)",
    ]
    if s["hard_constraints_failed"]:
        lines.append(f"points           0  (hard constraint failed: {'; '.join(s['hard_constraints_failed'])})")
    else:
        lines.append(f"points           {s['points']}  (of 120)")
    if s.get("note"):
        lines.append(f"note             {s['note']}")
    return "\n".join(lines)
