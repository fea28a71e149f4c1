"""Hardware-aware architecture search on Optuna: `cnnlab search SEARCH.yaml`.

A search file is YAML:

    description: small CIFAR-10 nets for the class competition       # optional
    base:                       # TrainConfig keys every trial trains with (or recipe: NAME, then keys)
      dataset: cifar10
      epochs: 4
      optimizer: sgd
    space:
      spec: "c{w1}k{k1}-bn-relu-{pool1}-[r[c{w2}k3-bn-relu-c{w2}k3-bn]-relu]x{d2}-gap"
      params:                   # each {name} in the spec: choices, or an int/float range
        w1: {choices: [8, 16, 24]}
        k1: {choices: [3, 5]}
        pool1: {choices: [p2, c16k3s2, ""]}   # "" drops the token: pooling placement is searched too
        w2: {int: [8, 32], step: 8}
        d2: {int: [1, 3]}
      train:                    # TrainConfig keys searched per trial
        lr: {float: [0.02, 0.2], log: true}
    objective: competition      # or error, cycles, energy, macs, params, latency, or a list (Pareto front)
    constraints: {max_activation: 1000000, max_params: 200000}
    trials: 30
    sampler: tpe                # tpe (one objective) | nsga2 (several) | random
    prune: true                 # stop weak trials early from their validation accuracy (median pruner)
    seed: 0
    stale_after: 30             # a trial whose worker went silent this long (killed) is run again

Every candidate is built and costed by `cnnlab.cost` first (cycles equal to Timeloop's, energy,
MACs, parameters, peak activation with skip tensors); one that breaks a constraint, or whose spec
does not fit the image, is recorded as infeasible (a pruned trial with the reason) without
training. The rest train with `cnnlab.train.loop.train` into OUT/trials/NNNN/, reporting
validation accuracy after each epoch to Optuna's pruner through a trainer hook. Scores use the
validation split; the chosen model is evaluated on the test split once, at the end.

Storage is Optuna's: an SQLite file OUT/search.db by default, so a killed search resumes where it
stopped (finished trials stay finished; a trial cut short by the kill is run again) and several
worker processes (`--workers N`) share it; `--storage postgresql://...` spreads workers over
machines. Outputs: OUT/trials.csv, OUT/pareto.png (error against cycles, coloured by energy),
OUT/best.yaml (a ready `cnnlab train --config` file) and OUT/best.json (its validation and test
figures and costs).
"""

from __future__ import annotations

import csv
import os
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path


from cnnlab.config import TrainConfig
from cnnlab.cost.report import DEFAULT_MAX_ACTIVATION
from cnnlab.cost.score import ranking_metric
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.io import atomic_write_text, load_yaml_mapping, write_csv
from cnnlab.train.hookbase import Hook

OBJECTIVES = {  # name -> (what it is, trial attribute)
    "competition": "error_percent / 12 + cycles / 300000 (the class competition's ranking metric)",
    "error": "validation error, %",
    "cycles": "accelerator cycles per image (cnnlab.cost)",
    "energy": "accelerator energy per image, mJ",
    "macs": "multiply-accumulates per image",
    "params": "parameters",
    "latency": "measured CPU latency per image, ms (batch 1, median of 20)",
}
SAMPLERS = ("tpe", "nsga2", "random")
KEYS = {"description", "base", "space", "objective", "constraints", "trials", "sampler", "prune", "seed", "stale_after"}


@dataclass
class Search:
    path: Path
    base: dict
    spec: str
    params: dict
    train: dict
    objectives: list
    max_activation: int = DEFAULT_MAX_ACTIVATION
    max_params: int | None = None
    trials: int = 20
    sampler: str = "tpe"
    prune: bool = True
    seed: int = 0
    description: str = ""
    stale_after: float = 30.0  # seconds without a heartbeat after which a worker's trial is run again
    out: Path = field(default=None)

    @property
    def directions(self):
        return ["minimize"] * len(self.objectives)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise CnnlabError("cnnlab search needs Optuna: pip install 'cnnlab[search]' (or pip install optuna)") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and stale-trial retries are marked experimental in Optuna; cnnlab relies on them on purpose
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _check_dist(name, d, where):
    if not isinstance(d, dict) or len({"choices", "int", "float"} & set(d)) != 1:
        raise CnnlabError(f"{where}: '{name}' must be {{choices: [...]}}, {{int: [lo, hi]}} or {{float: [lo, hi]}}")
    if "choices" in d:
        if not isinstance(d["choices"], list) or not d["choices"]:
            raise CnnlabError(f"{where}: '{name}' choices must be a non-empty list")
        return
    kind = "int" if "int" in d else "float"
    lo_hi = d[kind]
    if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(isinstance(v, (int, float)) for v in lo_hi)
            and lo_hi[0] <= lo_hi[1]):
        raise CnnlabError(f"{where}: '{name}' {kind} range must be [low, high] with low <= high, got {lo_hi!r}")
    if d.get("log") and lo_hi[0] <= 0:
        raise CnnlabError(f"{where}: '{name}' has log: true, so its range must be positive")


def load_search(path, out=None, trials: int | None = None) -> Search:
    """The search file, checked whole before anything runs (one line naming the problem)."""
    path = Path(path)
    d = load_yaml_mapping(path, "search file")
    unknown = sorted(set(d) - KEYS)
    if unknown:
        raise CnnlabError(f"{path}: unknown key '{unknown[0]}' (a search file has {', '.join(sorted(KEYS))})")
    base = dict(d.get("base") or {})
    if "recipe" in base:
        from cnnlab.recipes import load_recipe

        base = {**load_recipe(base.pop("recipe")), **base}
    space = d.get("space") or {}
    if not isinstance(space, dict) or not isinstance(space.get("spec"), str):
        raise CnnlabError(f"{path}: 'space' needs 'spec', a model spec with {{name}} placeholders")
    params, train = dict(space.get("params") or {}), dict(space.get("train") or {})
    for name, dist in {**params, **train}.items():
        _check_dist(name, dist, str(path))
    fields = {f for _, f, _, _ in string.Formatter().parse(space["spec"]) if f}
    if fields - set(params):
        raise CnnlabError(f"{path}: the spec uses {{{sorted(fields - set(params))[0]}}}, which space.params does not define")
    if set(params) - fields:
        raise CnnlabError(f"{path}: space.params defines '{sorted(set(params) - fields)[0]}', which the spec never uses")
    bad = sorted(set(train) - set(TrainConfig.__dataclass_fields__))
    if bad:
        raise CnnlabError(f"{path}: space.train searches '{bad[0]}', which is not a training config key")
    objectives = d.get("objective", "competition")
    objectives = [objectives] if isinstance(objectives, str) else list(objectives)
    for o in objectives:
        if o not in OBJECTIVES:
            raise CnnlabError(f"{path}: unknown objective '{o}': choose from {', '.join(OBJECTIVES)}")
    constraints = dict(d.get("constraints") or {})
    if set(constraints) - {"max_activation", "max_params"}:
        raise CnnlabError(f"{path}: constraints take max_activation (bytes) and max_params")
    sampler = d.get("sampler", "tpe" if len(objectives) == 1 else "nsga2")
    if sampler not in SAMPLERS:
        raise CnnlabError(f"{path}: unknown sampler '{sampler}': choose from {', '.join(SAMPLERS)}")
    n = trials if trials is not None else d.get("trials", 20)
    if not isinstance(n, int) or n < 1:
        raise CnnlabError(f"{path}: trials must be a positive integer, got {n!r}")
    stale = d.get("stale_after", 30)
    if not isinstance(stale, (int, float)) or stale < 2:
        raise CnnlabError(f"{path}: stale_after must be a number of seconds, at least 2, got {stale!r}")
    search = Search(path, base, space["spec"], params, train, objectives,
                    int(constraints.get("max_activation", DEFAULT_MAX_ACTIVATION)), constraints.get("max_params"),
                    n, sampler, bool(d.get("prune", True)), int(d.get("seed", 0)), str(d.get("description", "")),
                    float(stale))
    search.out = Path(out) if out else Path("runs") / f"search-{path.stem}"
    TrainConfig.from_dict({**base, "out": None}, where=f"{path} base")  # types of the base, now
    return search


# ---- one candidate ----------------------------------------------------------------------------

def _suggest(trial, name, d):
    if "choices" in d:
        return trial.suggest_categorical(name, d["choices"])
    if "int" in d:
        return trial.suggest_int(name, d["int"][0], d["int"][1], step=d.get("step", 1), log=bool(d.get("log")))
    return trial.suggest_float(name, float(d["float"][0]), float(d["float"][1]), log=bool(d.get("log")))


def spec_text(template: str, values: dict) -> str:
    """The template with its placeholders filled; empty tokens ("" choices) dropped."""
    text = template.format(**{k: "" if v is None else v for k, v in values.items()})
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"\[-", "[", re.sub(r"-\]", "]", text)).strip("-")
    return text


def candidate_cost(model: str, shape, classes: int) -> dict:
    """The cost model's figures for a spec (SpecError if it does not fit the image)."""
    from cnnlab.cost.report import analyze
    from cnnlab.models import create_model

    net = create_model(model, num_classes=classes, in_channels=shape[0], input_size=tuple(shape[1:]))
    rep = analyze(net, tuple(shape))
    t = rep.totals
    return {"cycles": int(t["cycles"]), "energy_mj": float(t["energy_mj"]), "macs": int(t["macs"]),
            "params": int(t["params"]), "peak_activation": int(rep.peak_activation)}


def measure_latency_ms(model: str, shape, classes: int, repeats: int = 20) -> float:
    """Batch-1 CPU latency in ms (median of `repeats`), measured as `cnnlab bench` measures it."""
    import torch

    from cnnlab.models import create_model
    from cnnlab.workflows.bench import latency_per_image

    net = create_model(model, num_classes=classes, in_channels=shape[0], input_size=tuple(shape[1:]))
    return 1000 * latency_per_image(net, torch.randn(1, *shape), torch.device("cpu"), repeats=repeats, warmup=2)


def objective_values(search: Search, attrs: dict) -> list[float]:
    values = {"competition": ranking_metric(attrs["error"], attrs["cycles"]), "error": attrs["error"],
              "cycles": attrs["cycles"], "energy": attrs["energy_mj"], "macs": attrs["macs"],
              "params": attrs["params"], "latency": attrs.get("latency_ms")}
    return [float(values[o]) for o in search.objectives]


class PruneReport(Hook):
    """A trainer hook: after each epoch, the objective as it stands (from that epoch's validation
    error and the candidate's costs; lower is better, as the study minimises) goes to Optuna's
    pruner, which may stop the trial (the run ends after that epoch, its directory complete).
    Multi-objective studies are not pruned (Optuna's pruners take one value)."""

    def __init__(self, trial, search: Search, cost: dict):
        self.trial, self.search, self.cost, self.pruned = trial, search, cost, False
        self.enabled = search.prune and len(search.objectives) == 1

    def on_epoch_end(self, t, row):
        if not self.enabled:
            return
        value = objective_values(self.search, {**self.cost, "error": 100 * (1 - row["val_acc"]),
                                               "latency_ms": 0.0})[0]
        self.trial.report(value, int(row["epoch"]))
        if self.trial.should_prune():
            self.pruned = True
            t.stop(f"pruned by the search after epoch {int(row['epoch'])} (objective {value:.4g})")


def _run_trial(search: Search, trial, data_shape, classes) -> list[float]:
    optuna = _optuna()
    from cnnlab.train.loop import TrainingDiverged, train

    storage = getattr(trial.study, "_storage", None)
    if hasattr(storage, "record_heartbeat"):  # a heartbeat now, before the mark: a marked trial can go stale
        storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("started", time.time())  # alive: see _fail_unstarted
    values = {name: _suggest(trial, name, d) for name, d in search.params.items()}
    overrides = {name: _suggest(trial, name, d) for name, d in search.train.items()}
    model = spec_text(search.spec, values)
    trial.set_user_attr("model", model)
    trial.set_user_attr("worker", os.getpid())
    try:
        cost = candidate_cost(model, data_shape, classes)
    except SpecError as e:
        trial.set_user_attr("infeasible", f"spec does not fit: {e}")
        raise optuna.TrialPruned() from None
    for k, v in cost.items():
        trial.set_user_attr(k, v)
    why = []
    if cost["peak_activation"] >= search.max_activation:
        why.append(f"peak activation {cost['peak_activation']:,} B >= {search.max_activation:,} B")
    if search.max_params is not None and cost["params"] > search.max_params:
        why.append(f"{cost['params']:,} parameters > {search.max_params:,}")
    if why:
        trial.set_user_attr("infeasible", "; ".join(why))
        raise optuna.TrialPruned()
    run_dir = search.out / "trials" / f"{trial.number:04d}"
    if run_dir.exists():  # a stale directory of a trial number reused after a crash: start clean
        import shutil

        shutil.rmtree(run_dir)
    config = TrainConfig.from_dict({**search.base, **overrides, "model": model, "out": str(run_dir)},
                                   where=f"trial {trial.number}")
    report = PruneReport(trial, search, cost)
    try:
        summary = train(config, quiet=True, hooks=[report])
    except TrainingDiverged as e:  # these settings do not train: an outcome, not an error of the search
        trial.set_user_attr("diverged", str(e).split(":")[0])
        raise optuna.TrialPruned() from None
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("val_acc", summary["best_val_acc"])
    trial.set_user_attr("train_seconds", summary["train_seconds"])
    if report.pruned:
        raise optuna.TrialPruned()
    attrs = {**cost, "error": 100 * (1 - summary["best_val_acc"])}
    if "latency" in search.objectives:
        attrs["latency_ms"] = measure_latency_ms(model, data_shape, classes)
        trial.set_user_attr("latency_ms", attrs["latency_ms"])
    trial.set_user_attr("error", attrs["error"])
    values = objective_values(search, attrs)
    return values[0] if len(values) == 1 else values


# ---- the study ----------------------------------------------------------------------------------

def storage_url(search: Search, storage: str | None) -> str:
    """The storage URL: SQLite in the search directory by default. A postgresql:// URL uses the
    psycopg (3) driver when psycopg2 is not installed."""
    if not storage:
        return f"sqlite:///{(search.out / 'search.db').resolve()}"
    for scheme in ("postgresql://", "postgres://"):
        if storage.startswith(scheme):
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                return "postgresql+psycopg://" + storage[len(scheme):]
    return storage


def open_study(search: Search, storage: str | None, worker: int = 0):
    """The Optuna study (created or loaded). Each worker's sampler has its own seed (seed + 1000 x
    worker): with the same seed, workers would propose the same candidates."""
    optuna = _optuna()
    url = storage_url(search, storage)
    if url.startswith("sqlite:///"):
        search.out.mkdir(parents=True, exist_ok=True)
    try:
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=2)} if retry else \
            {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}
        rdb = optuna.storages.RDBStorage(
            url, heartbeat_interval=max(1, int(search.stale_after / 4)), grace_period=int(search.stale_after),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}, **callback)
    except Exception as e:  # a bad URL, an unreachable server, a missing driver
        raise CnnlabError(f"cannot open the search storage {url.split('@')[-1]}: {str(e).splitlines()[0]}") from None
    seed = search.seed + 1000 * worker
    if len(search.objectives) > 1 or search.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    elif search.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, search.trials // 3)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if search.prune else \
        optuna.pruners.NopPruner()
    return optuna.create_study(study_name=search.path.stem, storage=rdb, sampler=sampler, pruner=pruner,
                               directions=search.directions, load_if_exists=True)


def finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _fail_unstarted(study, after: float):
    """Fail RUNNING trials that never started their objective (no `started` mark) for `after`
    seconds: a worker killed between creating a trial and its first heartbeat leaves one, which
    Optuna's heartbeat check cannot see (the objective records a heartbeat before the mark, so a
    marked trial is Optuna's to fail). They have no parameters yet, so nothing is retried."""
    import datetime

    from optuna.trial import TrialState

    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "started" not in t.user_attrs and t.datetime_start and (now - t.datetime_start).total_seconds() > after:
            try:
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except Exception:  # another worker failed it first
                pass


def running(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def work(search: Search, storage: str | None = None, log=print, worker: int = 0):
    """Run trials until the study holds `search.trials` finished ones (shared with other workers;
    `worker` numbers this one among them)."""
    optuna = _optuna()
    from cnnlab.data import load_dataset

    search.out.mkdir(parents=True, exist_ok=True)
    study = open_study(search, storage, worker)
    base = TrainConfig.from_dict({**search.base, "out": None})
    data = load_dataset(base.dataset, base.data_dir, base.val_size, base.seed, base.subset)
    shape, classes = tuple(data.shape), data.num_classes

    def objective(trial):
        return _run_trial(search, trial, shape, classes)

    def said(study, trial):
        a = trial.user_attrs
        note = a.get("infeasible") or a.get("diverged") or (f"values {trial.values}" if trial.values else
                                                             trial.state.name.lower())
        log(f"trial {trial.number} {trial.state.name.lower()}: {trial.user_attrs.get('model')}: {note}")

    # One trial at a time, until the study holds enough finished ones: a trial of a killed worker
    # goes stale after `stale_after` seconds, is marked failed and queued again (Optuna's heartbeat
    # and RetryFailedTrialCallback); while the others run the last trials, this worker waits.
    while finished(study) < search.trials:
        optuna.storages.fail_stale_trials(study)
        _fail_unstarted(study, search.stale_after)
        if finished(study) + running(study) >= search.trials:
            time.sleep(1.0)
            continue
        study.optimize(objective, n_trials=1, catch=(), callbacks=[said])
    return study


def finish(search: Search, storage: str | None = None, data_dir=None, log=print) -> dict:
    """Trials table, Pareto plot, the chosen model's test evaluation, best.yaml and best.json."""
    from optuna.trial import TrialState

    study = open_study(search, storage)
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(), "model": a.get("model", ""),
                     "params": a.get("params"), "macs": a.get("macs"), "cycles": a.get("cycles"),
                     "energy_mj": a.get("energy_mj"), "peak_activation": a.get("peak_activation"),
                     "val_error": a.get("error"), "metric": ranking_metric(a["error"], a["cycles"])
                     if a.get("error") is not None else None,
                     "values": ";".join(f"{v:.6g}" for v in (t.values or [])), "infeasible": a.get("infeasible", ""),
                     "train_seconds": a.get("train_seconds"), "worker": a.get("worker"),
                     "run_dir": a.get("run_dir", ""), **t.params})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(search.out / "trials.csv", keys, [["" if r.get(k) is None else r.get(k) for k in keys] for r in rows])
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        raise CnnlabError(f"no trial of the search in {search.out} finished: widen the space or the constraints")
    best = study.best_trials  # one objective: the best trial; several: Optuna's Pareto front
    chosen = min(best, key=lambda t: ranking_metric(t.user_attrs["error"], t.user_attrs["cycles"]))
    front = best if len(search.objectives) > 1 else error_cycles_front(done)
    plot_pareto(rows, {t.number for t in front}, search.out / "pareto.png")
    from cnnlab.dirs import RunDir

    config = TrainConfig.load(RunDir(chosen.user_attrs["run_dir"]).config)
    config.out = None
    atomic_write_text(search.out / "best.yaml",
                      f"# the best trial ({chosen.number}) of the search {search.path.name}: train it with\n"
                      f"# cnnlab train --config {search.out / 'best.yaml'}\n" + config.to_yaml())
    from cnnlab.workflows.evaluate import evaluate_run

    test = evaluate_run(chosen.user_attrs["run_dir"], "test", data_dir=data_dir, write=True)
    a = chosen.user_attrs
    best = {"trial": chosen.number, "model": a["model"], "params": dict(chosen.params), "val_error": a["error"],
            "test_error": 100 * (1 - test["accuracy"]), "test_count": test["count"], "cycles": a["cycles"],
            "energy_mj": a["energy_mj"], "macs": a["macs"], "parameters": a["params"],
            "peak_activation": a["peak_activation"], "val_metric": ranking_metric(a["error"], a["cycles"]),
            "test_metric": ranking_metric(100 * (1 - test["accuracy"]), a["cycles"]),
            "objectives": search.objectives, "values": chosen.values, "run_dir": a["run_dir"],
            "trials": len(trials), "complete": len(done),
            "pruned": sum(t.state == TrialState.PRUNED and "infeasible" not in t.user_attrs for t in trials),
            "infeasible": sum("infeasible" in t.user_attrs for t in trials),
            "pareto": [t.number for t in front]}
    atomic_write_text(search.out / "best.json", _json(best))
    log(f"best trial {chosen.number}: {a['model']} - validation error {a['error']:.2f}%, test error "
        f"{best['test_error']:.2f}%, {a['cycles']:,} cycles, {a['energy_mj']:.3f} mJ, metric {best['test_metric']:.3f}")
    return best


def error_cycles_front(trials) -> list:
    """The trained trials no other beats on both validation error and cycles."""
    pts = [(t.user_attrs["error"], t.user_attrs["cycles"], t) for t in trials]
    return [t for e, c, t in pts if not any(e2 <= e and c2 <= c and (e2, c2) != (e, c) for e2, c2, _ in pts)]


def _json(d) -> str:
    import json

    return json.dumps(d, indent=2, default=str) + "\n"


def plot_pareto(rows, front: set, path):
    from cnnlab.workflows.plots import save_png

    return save_png(pareto_figure(rows, front), path)


def pareto_figure(rows, front: set):
    """Validation error against cycles for every trained trial, coloured by energy; the Pareto front
    (error against cycles) ringed and joined. `rows` as in trials.csv (numbers may be strings)."""
    from cnnlab.workflows.plots import _figure

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    rows = [{**r, "trial": int(r["trial"]), "val_error": num(r.get("val_error")), "cycles": num(r.get("cycles")),
             "energy_mj": num(r.get("energy_mj"))} for r in rows]
    pts = [r for r in rows if r["val_error"] is not None and r["cycles"] is not None]
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    if pts:
        sc = ax.scatter([r["cycles"] for r in pts], [r["val_error"] for r in pts],
                        c=[r["energy_mj"] for r in pts], cmap="viridis", s=28, zorder=3)
        fig.colorbar(sc, ax=ax, label="energy per image (mJ)")
        edge = sorted((r for r in pts if r["trial"] in front), key=lambda r: r["cycles"])
        ax.plot([r["cycles"] for r in edge], [r["val_error"] for r in edge], "-o", mfc="none", color="crimson",
                ms=9, lw=1, label="Pareto front", zorder=4)
        ax.legend(loc="upper right")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    ax.set_xlabel("cycles per image (cost model)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"{len(pts)} trained trials")
    ax.grid(alpha=0.3)
    return fig


def is_search_dir(path) -> bool:
    return (Path(path) / "best.json").is_file() and (Path(path) / "trials.csv").is_file()


def read_search(path) -> dict:
    """best.json and trials.csv of a finished search (for reports)."""
    import json

    path = Path(path)
    with open(path / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    return {"best": json.loads((path / "best.json").read_text()), "trials": trials,
            "pareto_png": path / "pareto.png"}
