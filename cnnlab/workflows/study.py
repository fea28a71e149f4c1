"""Studies: several training configurations, several seeds, one table and one set of curves.

A study file is YAML:

    description: SGD vs Adam on a small ConvNet        # optional
    base:                                              # TrainConfig keys shared by every run
      model: c32k3-relu-p2-c64k3-relu-p2-fc128-relu
      dataset: cifar10
      epochs: 10
    experiments:                                       # name -> overrides of the base
      sgd:  {optimizer: sgd, lr: 0.05}
      adam: {optimizer: adam}
    seeds: 3                                           # a count (0, 1, 2) or a list [0, 7, 42]
    budget_seconds: 120                                # optional: equal training time, not epochs

The whole file is checked before anything runs: an unknown key, a value of the wrong type,
an unknown model, optimizer or schedule, or schedule/optimizer arguments those do not
accept is an error naming its line. Each run trains into OUT/runs/<experiment>/seed<k>/;
a run whose directory holds summary.json is finished and skipped when the study runs
again, and a run killed midway resumes from its last checkpoint.

Results: OUT/results.md and OUT/results.csv (mean ± std over seeds of test accuracy and
best validation accuracy, training time, parameters, MACs, trainable parameters, seconds per
epoch), OUT/train_loss.png (training loss against iteration) and OUT/val_acc.png (validation
accuracy against epoch).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnnlab.config import TrainConfig, check_type
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text, write_csv
from cnnlab.dirs import RunDir

STUDY_KEYS = ("base", "description", "experiments", "seeds", "budget_seconds")
SET_BY_STUDY = {"out": "the study places every run under its --out directory",
                "seed": "the study sets seeds: use the top-level `seeds:` key"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# the study directory's own files (each run's files are cnnlab.dirs's)
STUDY_FILE, RESULTS_MD, RESULTS_CSV = "study.yaml", "results.md", "results.csv"
LOSS_PLOT, VAL_PLOT = "train_loss.png", "val_acc.png"


@dataclass
class StudyRun:
    experiment: str
    seed: int
    config: TrainConfig
    run_dir: Path


@dataclass
class Study:
    path: Path
    out: Path
    description: str
    base: dict
    experiments: dict  # name -> overrides (plain dicts)
    seeds: list
    budget_seconds: float | None
    runs: list = field(default_factory=list)

    def file(self, name: str) -> Path:
        return self.out / name


# ---- validation -------------------------------------------------------------------------

def _where(path, node) -> str:
    return f"{path}, line {node.start_mark.line + 1}"


def _mapping(node, path, what):
    if not isinstance(node, yaml.MappingNode):
        raise CnnlabError(f"{_where(path, node)}: {what} must be a mapping of keys to values")
    out = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise CnnlabError(f"{_where(path, k)}: keys in {what} must be plain names")
        if k.value in out:
            raise CnnlabError(f"{_where(path, k)}: '{k.value}' appears twice in {what}")
        out[k.value] = (k, v)
    return out


def _value(node):
    return yaml.safe_load(yaml.serialize(node))


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _check_settings(settings: dict, path, what):
    """Each key of a base/experiment mapping: known, not study-owned, right type."""
    for key, (knode, vnode) in settings.items():
        if key in SET_BY_STUDY:
            raise CnnlabError(f"{_where(path, knode)}: '{key}' cannot be set in a study ({SET_BY_STUDY[key]})")
        if key not in _FIELDS:
            import difflib

            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise CnnlabError(f"{_where(path, knode)}: unknown key '{key}' in {what}{hint}; "
                              f"valid keys are {', '.join(sorted(set(_FIELDS) - set(SET_BY_STUDY)))}")
        try:
            check_type(key, _value(vnode), what)
        except CnnlabError as e:
            raise CnnlabError(f"{_where(path, vnode)}: {e}") from None


def check_config(config: TrainConfig):
    """The one validation every run gets (cnnlab.train.validate), before anything trains."""
    from cnnlab.train.validate import validate

    validate(config, new_run=False)


def load_study(path, seeds: int | None = None, out=None) -> Study:
    """Parse and check a whole study file; raise CnnlabError naming the line of the first problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CnnlabError(f"study file {path} not found") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        if mark and context and context.line != mark.line:
            line += f" (in what starts on line {context.line + 1})"
        raise CnnlabError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if root is None:
        raise CnnlabError(f"{path} is empty: a study needs `base:` and `experiments:`")
    top = _mapping(root, path, "the study file")
    for key, (knode, _) in top.items():
        if key not in STUDY_KEYS:
            hint = " (TrainConfig keys go under `base:` or an experiment)" if key in _FIELDS else ""
            raise CnnlabError(f"{_where(path, knode)}: unknown key '{key}' in the study file{hint}; "
                              f"valid keys are {', '.join(STUDY_KEYS)}")
    if "experiments" not in top:
        raise CnnlabError(f"{path}: the study has no `experiments:` (name -> overrides of `base:`)")

    base_nodes = _mapping(top["base"][1], path, "base") if "base" in top else {}
    _check_settings(base_nodes, path, "base")
    base = {k: _value(v) for k, (_, v) in base_nodes.items()}

    exp_nodes = _mapping(top["experiments"][1], path, "experiments")
    if not exp_nodes:
        raise CnnlabError(f"{_where(path, top['experiments'][1])}: `experiments:` is empty")
    experiments, exp_lines = {}, {}
    for name, (knode, vnode) in exp_nodes.items():
        if not _NAME.match(name):
            raise CnnlabError(f"{_where(path, knode)}: experiment name '{name}' must be letters, digits, _ . + -")
        if isinstance(vnode, yaml.ScalarNode) and vnode.value in ("", "~", "null"):
            settings = {}  # `name:` alone runs the base unchanged
        else:
            settings = _mapping(vnode, path, f"experiment '{name}'")
        _check_settings(settings, path, f"experiment '{name}'")
        experiments[name] = {k: _value(v) for k, (_, v) in settings.items()}
        exp_lines[name] = (knode, settings)

    seed_list = [0]
    if "seeds" in top:
        snode = top["seeds"][1]
        value = _value(snode)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            seed_list = list(range(value))
        elif isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            if len(set(value)) != len(value):
                raise CnnlabError(f"{_where(path, snode)}: `seeds:` lists a seed twice")
            seed_list = value
        else:
            raise CnnlabError(f"{_where(path, snode)}: `seeds:` must be a count (e.g. 3) or a list of integers, got {value!r}")
    if seeds is not None:
        if seeds < 1:
            raise CnnlabError(f"--seeds must be at least 1, got {seeds}")
        seed_list = list(range(seeds))

    budget = None
    if "budget_seconds" in top:
        bnode = top["budget_seconds"][1]
        budget = _value(bnode)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise CnnlabError(f"{_where(path, bnode)}: `budget_seconds:` must be a positive number of seconds, got {budget!r}")

    description = _value(top["description"][1]) if "description" in top else ""
    out = Path(out) if out else Path("runs") / f"study-{path.stem}"
    study = Study(path, out, str(description or ""), base, experiments, seed_list, budget)

    # Every merged config must build: check each experiment against its own lines.
    for name, overrides in experiments.items():
        knode, settings = exp_lines[name]
        merged = {**base, **overrides}
        try:
            config = TrainConfig.from_dict(merged, where=str(path))
            if budget is not None:
                config.max_seconds = float(budget)
            check_config(config)
        except CnnlabError as e:
            raise CnnlabError(f"{_where(path, knode)}: experiment '{name}': {e}") from None
        for seed in seed_list:
            run_config = dataclasses.replace(config, seed=seed, model_args=dict(config.model_args),
                                             optimizer_args=dict(config.optimizer_args),
                                             schedule_args=dict(config.schedule_args))
            run_dir = out / "runs" / name / f"seed{seed}"
            run_config.out = str(run_dir)
            study.runs.append(StudyRun(name, seed, run_config, run_dir))
    return study


# ---- running ----------------------------------------------------------------------------

def check_sources(study: Study):
    """Every --pretrained source a run still to start needs is there and fits its model, before the
    first run trains (a base still to be trained is named at once, not after the other experiments;
    a run to resume has the weights in its checkpoints)."""
    from cnnlab.train.validate import validate

    for run in study.runs:
        rd = RunDir(run.run_dir)
        if run.config.pretrained and not (rd.finished() or rd.is_run() or rd.last.exists()):
            try:
                validate(dataclasses.replace(run.config), new_run=False, read_source=True)
            except CnnlabError as e:
                raise CnnlabError(f"{study.path}: experiment '{run.experiment}': {e}") from None


def default_trainer(config: TrainConfig | None, resume=None) -> dict:
    from cnnlab.train.loop import train

    return train(config, resume=resume, quiet=True)


def run_study(study: Study, trainer=None, log=print) -> dict:
    """Train every unfinished run, then write the table and the plots. Returns the results."""
    trainer = trainer or default_trainer
    check_sources(study)
    study.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.file(STUDY_FILE), study.path.read_text())
    total = len(study.runs)
    for i, run in enumerate(study.runs, 1):
        label = f"[{i}/{total}] {run.experiment} seed {run.seed}"
        rd = RunDir(run.run_dir)
        if rd.finished():
            log(f"{label}: finished earlier, skipped")
            continue
        if rd.is_run() or rd.last.exists():
            log(f"{label}: resuming {run.run_dir}")
            trainer(None, resume=str(run.run_dir))
        else:
            if run.run_dir.exists():  # killed before its first checkpoint: nothing to keep
                shutil.rmtree(run.run_dir)
            run.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log(f"{label}: training into {run.run_dir}")
            trainer(run.config)
    results = collect(study)
    write_table(study, results)
    plot_curves(study, results)
    log(f"results: {', '.join(str(study.file(n)) for n in (RESULTS_MD, RESULTS_CSV, LOSS_PLOT, VAL_PLOT))}")
    return results


# ---- finding a study's runs again ----------------------------------------------------------

def is_study_dir(path) -> bool:
    """A directory `cnnlab study` wrote: its copy of the study file, or runs/<experiment>/seed<k>/."""
    path = Path(path)
    return path.is_dir() and ((path / STUDY_FILE).is_file() or bool(study_runs(path)))


def study_runs(out) -> list:
    """(label 'experiment/seedK', run directory) of every run directory under a study directory,
    experiments in name order and seeds in number order."""
    root = Path(out) / "runs"
    if not root.is_dir():
        return []
    seed_number = lambda p: (int(p.name[4:]) if p.name[4:].isdigit() else 1 << 30, p.name)  # noqa: E731
    found = []
    for exp in sorted(p for p in root.iterdir() if p.is_dir()):
        for run in sorted((p for p in exp.iterdir() if p.is_dir()), key=seed_number):
            if RunDir(run).is_run():
                found.append((f"{exp.name}/{run.name}", run))
    return found


def study_description(out) -> str:
    """The `description:` of the study file kept in a study directory ('' when there is none)."""
    try:
        data = yaml.safe_load((Path(out) / STUDY_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return ""
    return str(data.get("description") or "") if isinstance(data, dict) else ""


# ---- results ----------------------------------------------------------------------------

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
    from cnnlab.data.registry import dataset_input
    from cnnlab.models.adapt import model_input_shape
    from cnnlab.models.summary import model_summary

    where = dataset_input(config.dataset)
    if where is None:
        return None, None
    try:  # what the layers see: after --resize / --input-channels
        shape = model_input_shape(where[0], config.resize, config.input_channels)
        s = model_summary(config.model, shape, where[1], **config.model_args)
    except Exception:  # a model that needs the real data to build: leave the cost cells empty
        return None, None
    return s["params"], s["macs"]


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
    atomic_write_text(study.file(RESULTS_MD), "\n".join(lines) + "\n")
    write_csv(study.file(RESULTS_CSV),
              ["experiment", "runs", "test_acc_mean", "test_acc_std", "best_val_acc_mean", "best_val_acc_std",
               "train_seconds_mean", "train_seconds_std", "epochs_mean", "params", "macs", "trainable_params",
               "seconds_per_epoch_mean"],
              [[name, r["runs"], *r["test_acc"], *r["best_val_acc"], *r["train_seconds"], r["epochs"][0],
                r["params"], r["macs"], r.get("trainable_params"), r.get("seconds_per_epoch", (None,))[0]]
               for name, r in results.items()])


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
    from cnnlab.workflows.plots import moving_mean

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
    fig.savefig(study.file(LOSS_PLOT), dpi=100)
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
    fig.savefig(study.file(VAL_PLOT), dpi=100)
    plt.close(fig)
