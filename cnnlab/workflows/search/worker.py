"""A search worker: sample a candidate, cost it, train it with the pruning hook, until the budget is met.

    study = work(search, storage=None, log=print, worker=0)   # until the study holds search.trials finished

One trial: the space gives a model spec and training overrides; with the base they make the
trial's full TrainConfig, and the network that config trains (`cnnlab.build.build_for`: its
resize / input_channels adapter and model_args included) is costed by `cnnlab.cost` first. A
candidate over a constraint, or whose spec does not fit the image, is recorded as infeasible (a
pruned trial with the reason) without training; a candidate equal to one already trained or in
training is recorded as a pruned trial with `duplicate` (that trial's number), not trained again;
with `bound_prune`, a candidate whose cycles / 300000 alone reach the best competition metric so
far (it could not win at 0 % error; with a final stage, the top_k-th best: it could not be a
finalist) is recorded as pruned with `bound`, and never trains. The
rest train with `cnnlab.train.loop.train` into SEARCH_DIR/trials/NNNN/, reporting each epoch to
Optuna's pruner (Hyperband, successive halving or the median rule) through `PruneReport`.

A trial stopped by Ctrl-C or SIGTERM fails and queues its retry at once (a killed worker's trial
is retried when its heartbeat goes stale, optuna_adapter); the retry, the first trial the next run
takes, moves the stopped trial's run directory to its own and continues it from its checkpoint
(`interrupted_run`), with the pruner's reported epochs and rungs inherited: no epoch is lost.

A run that predicts with test-time augmentation runs the network once per augmented view, so its
cycles, energy and MACs per image are the network's times the passes (`cnnlab.evaluate.tta_passes`:
2 for tta 1, 6 for tta 2), recorded with `tta_passes`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.cost.score import ranking_metric
from cnnlab.dirs.run import RunDir
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.train.hooks import Hook
from cnnlab.workflows.search.objectives import OBJECTIVES, needs_latency, objective_values
from cnnlab.workflows.search.optuna_adapter import (best_value, fail_dead, finished, load_optuna, mark_started,
                                                    open_storage, open_study, retried_trial, retry_interrupted,
                                                    running, trial_of)
from cnnlab.workflows.search.space import Search, sample

COST_FIGURES = ("cycles", "energy_mj", "macs", "params", "peak_activation")


def candidate_cost(config, shape, classes: int) -> dict:
    """The cost model's figures of the network `config` trains on images of `shape` (SpecError if
    its spec does not fit), built on the meta device: shapes only, no weights. Cycles, energy and
    MACs are per predicted image: times the test-time augmentation's passes (`tta_passes`, when > 1)."""
    from cnnlab.build import build_for
    from cnnlab.cost.report import analyze
    from cnnlab.evaluate import tta_passes

    rep = analyze(build_for(config, tuple(shape), classes, device="meta"), tuple(shape))
    t, n = rep.totals, tta_passes(config.tta)
    cost = {"cycles": int(t["cycles"]) * n, "energy_mj": float(t["energy_mj"]) * n, "macs": int(t["macs"]) * n,
            "params": int(t["params"]), "peak_activation": int(rep.peak_activation)}
    return {**cost, "tta_passes": n} if n > 1 else cost


def measure_latency_ms(config, shape, classes: int, repeats: int = 20) -> float:
    """Batch-1 CPU latency in ms (median of `repeats`) of the network `config` trains, measured as
    `cnnlab bench` measures it."""
    import torch

    from cnnlab.build import build_for
    from cnnlab.workflows.measure import latency_per_image

    net = build_for(config, tuple(shape), classes, device="cpu")
    return 1000 * latency_per_image(net, torch.randn(1, *shape), torch.device("cpu"), repeats=repeats, warmup=2)


def dataset_input(base: dict) -> tuple[tuple, int]:
    """((C, H, W), classes) of the base config's dataset, loaded once: an unknown name or a missing
    dataset is one line before the search writes anything."""
    from cnnlab.data import load_dataset
    from cnnlab.data.registry import check_dataset_name

    config = TrainConfig.from_dict({**base, "out": None})
    check_dataset_name(config.dataset)
    data = load_dataset(config.dataset, config.data_dir, config.val_size, config.seed, config.subset)
    return tuple(data.shape), data.num_classes


def open_search(search: Search, storage: str | None = None, worker: int = 0):
    """(rdb, study, shape, classes): the dataset checked first, then the storage and the study, so a
    search that cannot start leaves no directory and no search.db behind."""
    shape, classes = dataset_input(search.base)
    rdb = open_storage(search, storage)
    return rdb, open_study(search, rdb, worker), shape, classes


def twin_of(study, trial) -> int | None:
    """The number of another trial with `trial`'s parameters that finished, or that runs and is
    older (of two workers drawing the same candidate at once, the older trial trains); None if none.
    A trial recorded as a duplicate is no twin: the one it named may have failed since (stopped, or
    its worker killed), and its retry must train."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if t.number != trial.number and t.params == trial.params and "duplicate" not in t.user_attrs and \
                (t.state != TrialState.RUNNING or t.number < trial.number):
            return t.number
    return None


def bound_failure(search: Search, study, cost: dict) -> str | None:
    """Why a candidate cannot make the result even at 0 % error, or None: its cycles / 300000 alone
    reach the best complete trial's competition metric (with a final stage of top_k finalists, the
    top_k-th best's: a candidate that could still be a finalist trains). Only a competition search
    is bounded."""
    if not search.pruning.bound or search.objectives != ["competition"]:
        return None
    rank = search.final.top_k if search.final is not None else 1
    best = best_value(study, rank)
    floor = ranking_metric(0.0, cost["cycles"])
    if best is None or floor < best[0]:
        return None
    nth = f"{rank}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(rank if rank < 20 else rank % 10, 'th')}"
    which = "the best metric so far" if rank == 1 else f"the {nth} best metric so far, the last finalist's"
    return (f"cycles / 300000 = {floor:.4g} >= {best[0]:.4g}, {which} (trial {best[1]}): it cannot "
            f"{'win' if rank == 1 else 'be a finalist'} even at 0% error")


def constraint_failures(search: Search, cost: dict) -> list[str]:
    why = []
    if cost["peak_activation"] >= search.max_activation:
        why.append(f"peak activation {cost['peak_activation']:,} B >= {search.max_activation:,} B")
    if search.max_params is not None and cost["params"] > search.max_params:
        why.append(f"{cost['params']:,} parameters > {search.max_params:,}")
    return why


class PruneReport(Hook):
    """A trainer hook: after each epoch, the objective of the trial's best epoch so far (from the
    best validation error up to that epoch and the candidate's costs: the value the trial gets when
    it ends, which is its best epoch's) goes to Optuna's pruner, which may stop the trial (the run
    ends after that epoch, its directory complete; `pruned_at` records the epoch). Measured reason:
    with a one-cycle schedule the epoch at a rung can be the schedule's peak, where the epoch's error
    jumps (resnet20's lr search on CIFAR-10, 9-epoch trials, rung at 3: the objective at epoch 3 was
    +2.5, +2.6, +0.5 and -0.1 from epoch 2's in four trials); a rung judged on that one epoch ranks
    noise. After the trial's last epoch (`epochs`) the pruner is not asked: the trial has trained in
    full, and a rung at that epoch would throw its result away. Multi-objective studies are not
    pruned (Optuna's pruners take one value)."""

    def __init__(self, trial, search: Search, cost: dict, epochs: int | None = None, reported: dict | None = None):
        self.trial, self.search, self.cost, self.epochs = trial, search, cost, epochs
        self.reported = dict(reported or {})  # {epoch: value} a retried trial reported (Optuna keeps the first)
        self.pruned, self.pruned_at = False, None
        self.enabled = search.prune and len(search.objectives) == 1
        self.better = min if OBJECTIVES[search.objectives[0]].direction == "minimize" else max
        self.best = self.better(self.reported.values()) if self.reported else None

    def on_epoch_end(self, t, row):
        if not self.enabled:
            return
        value = objective_values(self.search.objectives, {**self.cost, "error": 100 * (1 - row["val_acc"]),
                                                          "latency_ms": 0.0})[0]
        self.best = value if self.best is None else self.better(self.best, value)
        epoch = int(row["epoch"])
        if epoch not in self.reported:
            self.trial.report(self.best, epoch)
        if (self.epochs is None or epoch < self.epochs) and self.trial.should_prune():
            self.pruned, self.pruned_at = True, epoch
            t.stop(f"pruned by the search after epoch {epoch} (objective {self.best:.4g})")


AGAIN = "run the same cnnlab search command again to continue where it stopped"


def interrupted_run(search: Search, frozen, config) -> Path | None:
    """trials/NNNN/ of the trial `frozen` (a FrozenTrial) retries (one stopped by a signal, or a
    killed worker's; see optuna_adapter) when that run has a checkpoint and trains `config`; None
    when there is nothing to continue (cut before its first checkpoint, or the search's base changed
    since). A run that had finished when its worker died is taken as it is."""
    number = retried_trial(frozen)
    if number is None:
        return None
    run = RunDir(search.dir.trial_dir(number))
    if not (run.finished() or run.last.exists() or run.best.exists()) or not run.config.exists():
        return None
    try:
        trained = TrainConfig.load(run.config)
    except CnnlabError:
        return None
    same = {**trained.to_dict(), "out": None} == {**config.to_dict(), "out": None}
    return run.path if same else None


def run_trial(search: Search, study, rdb, trial, shape, classes: int):
    """One trial's objective value(s); raises optuna.TrialPruned for infeasible, diverged or pruned ones."""
    optuna = load_optuna()
    from cnnlab.train.loop import Interrupted, TrainingDiverged, train

    mark_started(study, rdb, trial)
    model, overrides = sample(search, trial)
    trial.set_user_attr("model", model)
    trial.set_user_attr("worker", os.getpid())
    twin = twin_of(study, trial)
    if twin is not None:  # a candidate is trained once: this one is recorded, not trained
        trial.set_user_attr("duplicate", twin)
        raise optuna.TrialPruned()
    run_dir = search.dir.trial_dir(trial.number)
    config = TrainConfig.from_dict({**search.base, **overrides, "model": model, "out": str(run_dir)},
                                   where=f"trial {trial.number}")
    try:
        cost = candidate_cost(config, shape, classes)
    except SpecError as e:
        trial.set_user_attr("infeasible", f"spec does not fit: {e}")
        raise optuna.TrialPruned() from None
    for k, v in cost.items():
        trial.set_user_attr(k, v)
    why = constraint_failures(search, cost)
    if why:
        trial.set_user_attr("infeasible", "; ".join(why))
        raise optuna.TrialPruned()
    bound = bound_failure(search, study, cost)
    if bound:
        trial.set_user_attr("bound", bound)
        raise optuna.TrialPruned()
    if run_dir.exists():  # a stale directory of a trial number reused after a crash: start clean
        shutil.rmtree(run_dir)
    frozen = trial_of(study, trial.number)  # its retry history and reported epochs, which a Trial hides
    earlier = interrupted_run(search, frozen, config)
    report = PruneReport(trial, search, cost, config.epochs, frozen.intermediate_values)
    try:
        if earlier is not None:  # the run of the trial this one retries: moved here, continued exactly
            os.replace(earlier, run_dir)
            moved = RunDir(run_dir)
            summary = moved.read_summary() if moved.finished() else None
            if summary is None:
                summary = train(None, resume=str(run_dir), quiet=True, hooks=[report])
            elif summary["epochs_run"] < config.epochs:  # it had finished, stopped by the pruner
                report.pruned, report.pruned_at = True, summary["epochs_run"]
        else:
            summary = train(config, quiet=True, hooks=[report])
    except TrainingDiverged as e:  # these settings do not train: an outcome, not an error of the search
        trial.set_user_attr("diverged", str(e).split(":")[0])
        raise optuna.TrialPruned() from None
    except Interrupted as e:  # Ctrl-C or SIGTERM: the trial fails, its retry continues the run next time
        retry_interrupted(study, trial.number)
        raise Interrupted(f"{e.stopped} in trial {trial.number}; {AGAIN}", e.stopped) from None
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("val_acc", summary["best_val_acc"])
    trial.set_user_attr("train_seconds", summary["train_seconds"])
    if report.pruned:
        trial.set_user_attr("pruned_at", report.pruned_at)
        raise optuna.TrialPruned()
    figures = {**cost, "error": 100 * (1 - summary["best_val_acc"])}
    if needs_latency(search.objectives):
        figures["latency_ms"] = measure_latency_ms(config, shape, classes)
        trial.set_user_attr("latency_ms", figures["latency_ms"])
    trial.set_user_attr("error", figures["error"])
    values = objective_values(search.objectives, figures)
    return values[0] if len(values) == 1 else values


def work(search: Search, storage: str | None = None, log=print, worker: int = 0):
    """Run trials until the study holds `search.trials` finished ones (shared with other workers;
    `worker` numbers this one among them). Returns the Optuna study."""
    rdb, study, shape, classes = open_search(search, storage, worker)

    def objective(trial):
        return run_trial(search, study, rdb, trial, shape, classes)

    def said(study, trial):
        a = trial.user_attrs
        if "duplicate" in a:
            note = f"the candidate of trial {a['duplicate']}, not trained again"
        else:
            note = a.get("infeasible") or a.get("bound") or a.get("diverged") or (
                f"stopped after epoch {a['pruned_at']} (objective {trial.values[0]:.4g})" if "pruned_at" in a else
                f"values {trial.values}" if trial.values else trial.state.name.lower())
        log(f"trial {trial.number} {trial.state.name.lower()}: {a.get('model')}: {note}")

    # One trial at a time, until the study holds enough finished ones; while the other workers run
    # the last trials, this one waits (a trial of a killed worker comes back after stale_after s).
    # Ctrl-C or SIGTERM outside a trial's training (the trainer has its own handler there) is noted
    # and the loop stops before the next trial: a trial just finishing is recorded, not cut.
    from cnnlab.train.loop import Interrupted, StopSignals

    with StopSignals() as signals:
        while finished(study) < search.trials:
            if signals.stop:
                raise Interrupted(f"stopped by {signals.stop} between trials; {AGAIN}", f"stopped by {signals.stop}")
            fail_dead(study, search.stale_after)
            if finished(study) + running(study) >= search.trials:
                time.sleep(1.0)
                continue
            study.optimize(objective, n_trials=1, catch=(), callbacks=[said])
    return study
