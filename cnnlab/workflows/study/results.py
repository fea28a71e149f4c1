"""A study's results: the table (results.md, results.csv) and the overlaid curves, from its run directories.

    results = collect(study)          # experiment -> {"runs", "test_acc": (mean, std), "params", "curves", ...}
    write_table(study, results)       # results.md and results.csv in the study directory
    plot_curves(study, results)       # train_loss.png and val_acc.png there
    mean_std([0.80, 0.81])            # (0.805, 0.00707...): sample standard deviation, NaNs ignored

Per experiment: finished runs, test and best validation accuracy, training time, epochs and
seconds per epoch (mean ± std over seeds, from each run's summary.json), parameters and MACs
(`cnnlab models`'s count) and trainable parameters. The curves are the mean over seeds of
iterations.csv's loss (smoothed) and metrics.csv's validation accuracy (with a min-max band).
"""

from __future__ import annotations

import math

from cnnlab.config import TrainConfig
from cnnlab.dirs import RunDir
from cnnlab.workflows.study.schema import Study


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are ignored."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _cost(config: TrainConfig):
    from cnnlab.build import build_for
    from cnnlab.data.registry import dataset_input
    from cnnlab.models.summary import count_macs, count_params

    where = dataset_input(config.dataset)
    if where is None:
        return None, None
    try:  # the network as it trains: --resize / --input-channels run inside it
        model = build_for(config, where[0], where[1])
        return count_params(model), count_macs(model, tuple(where[0]))
    except Exception:  # a model that needs the real data to build: leave the cost cells empty
        return None, None


def collect(study: Study) -> dict:
    """experiment -> {'runs': [...], 'test_acc': (mean, std), ...} from the run directories."""
    results = {}
    for name in study.experiments:
        runs = [r for r in study.runs if r.experiment == name]
        summaries, curves = [], []
        for r in runs:
            rd = RunDir(r.run_dir)
            summary = rd.read_summary()
            if summary is None:
                continue
            summaries.append(summary)
            curves.append({"iterations": rd.read_iterations(), "metrics": rd.read_metrics()})
        params, macs = _cost(runs[0].config)
        if summaries and summaries[0].get("params") is not None:
            params = summaries[0]["params"]
        results[name] = {
            "runs": len(summaries),
            "test_acc": mean_std([s.get("test_acc") for s in summaries]),
            "best_val_acc": mean_std([s.get("best_val_acc") for s in summaries]),
            "train_seconds": mean_std([s.get("train_seconds") for s in summaries]),
            "epochs": mean_std([s.get("epochs_run") for s in summaries]),
            "params": params, "macs": macs, "curves": curves,
            "trainable_params": summaries[0].get("trainable_params") if summaries else None,
            "seconds_per_epoch": mean_std([s.get("seconds_per_epoch") for s in summaries]),
        }
    return results


def _pct(ms) -> str:
    m, s = ms
    return "-" if math.isnan(m) else f"{100 * m:.2f} ± {100 * s:.2f}"


def _count(n, unit="") -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M{unit}" if n >= 1e5 else f"{n / 1e3:.1f}K{unit}"


def write_table(study: Study, results: dict):
    seeds = len(study.seeds)
    equal = f"equal time ({study.budget_seconds:g} s per run)" if study.budget_seconds else "equal epochs"
    lines = [f"# Study: {study.path.stem}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += [f"{len(study.experiments)} experiments x {seeds} seed(s), {equal}; mean ± std over seeds.", "",
              "| experiment | runs | test acc % | best val acc % | train time s | epochs | params | MACs "
              "| trainable params | s/epoch |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        t, e, spe = r["train_seconds"], r["epochs"], r.get("seconds_per_epoch", (math.nan, math.nan))
        lines.append(f"| {name} | {r['runs']} | {_pct(r['test_acc'])} | {_pct(r['best_val_acc'])} | "
                     f"{'-' if math.isnan(t[0]) else f'{t[0]:.1f} ± {t[1]:.1f}'} | "
                     f"{'-' if math.isnan(e[0]) else f'{e[0]:g}'} | {_count(r['params'])} | {_count(r['macs'])} | "
                     f"{_count(r.get('trainable_params'))} | {'-' if math.isnan(spe[0]) else f'{spe[0]:.1f}'} |")
    header = ["experiment", "runs", "test_acc_mean", "test_acc_std", "best_val_acc_mean", "best_val_acc_std",
              "train_seconds_mean", "train_seconds_std", "epochs_mean", "params", "macs", "trainable_params",
              "seconds_per_epoch_mean"]
    rows = [[name, r["runs"], *r["test_acc"], *r["best_val_acc"], *r["train_seconds"], r["epochs"][0],
             r["params"], r["macs"], r.get("trainable_params"), r.get("seconds_per_epoch", (None,))[0]]
            for name, r in results.items()]
    study.dir.write_results("\n".join(lines) + "\n", header, rows)


def _mean_curve(curves, key_x, key_y):
    """Average y over the runs at each x they share (runs may differ in length)."""
    by_x = {}
    for rows in curves:
        for row in rows:
            if key_x in row and key_y in row:
                by_x.setdefault(row[key_x], []).append(row[key_y])
    xs = sorted(by_x)
    return xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs]


def _smooth(values, width):
    from cnnlab.workflows.report.figures import moving_mean

    return values if width <= 1 or len(values) < width else moving_mean(values, width)


def plot_curves(study: Study, results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        xs, ys, _, _ = _mean_curve([c["iterations"] for c in r["curves"]], "step", "loss")
        if xs:
            ax.plot(xs, _smooth(ys, max(1, len(xs) // 50)), label=name, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (mean over seeds, smoothed)")
    ax.set_yscale("log")
    ax.set_title(f"{study.path.stem}: training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(study.dir.loss_plot, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        xs, ys, lo, hi = _mean_curve([c["metrics"] for c in r["curves"]], "epoch", "val_acc")
        if xs:
            line, = ax.plot(xs, [100 * y for y in ys], marker="o", ms=3, label=name)
            ax.fill_between(xs, [100 * v for v in lo], [100 * v for v in hi], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy % (mean, min-max over seeds)")
    ax.set_title(f"{study.path.stem}: validation accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(study.dir.val_plot, dpi=100)
    plt.close(fig)
