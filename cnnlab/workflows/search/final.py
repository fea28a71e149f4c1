"""The final stage: the search's best candidates retrained with the full budget, each tested once.

    jobs = final_jobs(search, study.get_trials())    # [FinalJob]: top_k finalists x seeds, best first
    run_final(search, jobs, log=print)                # trains what is not finished, resumes what was cut
    rows = finalist_figures(search, jobs, shape, classes)   # each finalist: its search and final figures
    win = chosen(search, jobs, rows)                  # the winner's row, chosen on the selection runs

The finalists are the `final.top_k` complete trials with the lowest competition metric on the
validation split (their search figures), distinct candidates: a trial that would train the network of
a better one again (the same model spec and searched training values, numbers within
`final.same_within` of each other, test-time keys such as tta aside) gives its slot to the next.
Each is retrained `final.seeds` times into an ordinary run directory,
SEARCH_DIR/final_runs/NNNN-sS/ (`SearchDir.final_dir`), with the trial's own config (the search's
base, its searched values and its model), `final.epochs`, seed base + S, and `final.train`'s keys.
With `final.select_seeds` below `final.seeds`, each finalist first trains `select_seeds` runs (the
selection runs); once every one of them has finished (or diverged: a mark beside it says so), the
winner on those alone trains its remaining seeds, so compute goes to the seeds of the model that is
reported rather than to those of its rivals. A selection run cut by a kill is resumed before the
winner is chosen, never skipped.

Resuming: a finished final run (summary.json) is never trained again; one cut after its first
checkpoint resumes from it exactly (as `cnnlab train --resume`); one cut before starts over.
Several processes may run the stage at once: each takes the next run no other live process holds
(`SearchDir.claim`), so the `--workers` of a search share its final runs, and each waits until
every run is in (a run whose process died is taken over), so no process reports a stage half done.

The trainer evaluates each final run on the test split once, with its best-validation weights
(summary.json's test_acc); `finalist_figures` reads that number and never evaluates again. The
winner is chosen on the selection runs' validation figures alone (`winner`).
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.cost.score import ranking_metric
from cnnlab.dirs.run import RunDir
from cnnlab.workflows.search.objectives import OBJECTIVES
from cnnlab.workflows.search.space import Search
from cnnlab.workflows.search.stages import TEST_TIME
from cnnlab.workflows.search.worker import AGAIN, candidate_cost


@dataclass(frozen=True)
class FinalJob:
    trial: int  # the search trial whose candidate this retrains
    seed: int
    run_dir: Path
    config: TrainConfig


def search_metric(attrs: dict) -> float:
    return OBJECTIVES["competition"].value(attrs)


def same_candidate(a, b, train_keys, within: float) -> bool:
    """Trials `a` and `b` would train one network twice: the same model spec, the same value of each
    searched training key that is not test-time (TEST_TIME), and every numeric one within `within`
    of each other (relative to the larger). A search's sampler proposes such near-twins around its
    best point (two trials 0.3 % apart in learning rate, one with flip TTA, took both finalist slots
    of a 2-finalist FastNet search); a finalist slot is worth a different network."""
    if a.user_attrs["model"] != b.user_attrs["model"]:
        return False
    for k in train_keys:
        if k in TEST_TIME:
            continue
        x, y = a.params.get(k), b.params.get(k)
        if x == y:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if not numeric or abs(x - y) > within * max(abs(x), abs(y)):
            return False
    return True


def finalists(search: Search, trials) -> list:
    """The top_k complete trials by competition metric on validation, distinct candidates (no two
    `same_candidate` within final.same_within), best first. A final stage already begun keeps its
    finalists (the trials with a final run directory), whatever the rule said when it began."""
    from optuna.trial import TrialState

    def rank(t):
        return search_metric(t.user_attrs), t.number

    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and "error" in t.user_attrs), key=rank)
    begun = search.dir.final_trials()
    chosen = [t for t in done if t.number in begun]
    for t in done:
        if t.number not in begun and not any(same_candidate(t, c, search.train, search.final.same_within)
                                             for c in chosen):
            chosen.append(t)
    return sorted(chosen[:search.final.top_k], key=rank)


def final_config(search: Search, trial, seed: int, run_dir) -> TrainConfig:
    """The trial's candidate as the final stage trains it: base, searched values, model, then final's keys."""
    overrides = {k: trial.params[k] for k in search.train if k in trial.params}
    return TrainConfig.from_dict({**search.base, **overrides, "model": trial.user_attrs["model"], **search.final.train,
                                  "epochs": search.final.epochs, "seed": seed, "out": str(run_dir)},
                                 where=f"final run of trial {trial.number}")


def _base_seed(search: Search) -> int:
    return TrainConfig.from_dict({**search.base, "out": None}).seed


def selection_jobs(search: Search, trials) -> list[FinalJob]:
    """Every finalist's selection runs (its first `final.screening` seeds), best finalist first."""
    base_seed = _base_seed(search)
    jobs = []
    for t in finalists(search, trials):
        for s in range(base_seed, base_seed + search.final.screening):
            jobs.append(_job(search, t, s))
    return jobs


def _job(search: Search, trial, seed: int) -> FinalJob:
    run_dir = search.dir.final_dir(trial.number, seed)
    return FinalJob(trial.number, seed, run_dir, final_config(search, trial, seed, run_dir))


def _diverged_mark(run_dir) -> Path:
    """The file run_final leaves beside a final run that diverged: it has no figures, and is done."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.diverged"


def settled(jobs: list[FinalJob]) -> bool:
    """Every run of `jobs` finished or diverged: one not started, training, or cut (resumable) is not."""
    return all(RunDir(j.run_dir).finished() or _diverged_mark(j.run_dir).exists() for j in jobs)


def winner(rows: list[dict]) -> dict | None:
    """The finalist row (finalist_figures) with the lowest mean competition metric on validation
    over its finished runs, ties to the earlier trial; None when no run finished."""
    ranked = [r for r in rows if r["final"]["finished"]]
    return min(ranked, key=lambda r: (r["final"]["val_metric"], r["trial"])) if ranked else None


def chosen(search: Search, jobs: list[FinalJob], rows: list[dict]) -> dict | None:
    """The winner's row among `rows` (finalist_figures of final_jobs' `jobs`): the finalist that
    final_jobs gave the seeds after the selection runs, else the winner of `rows`, which then hold
    the selection runs alone (every seed is one, or the selection is not settled yet)."""
    rest = [j for j in jobs if j.seed >= _base_seed(search) + search.final.screening]
    return next(r for r in rows if r["trial"] == rest[0].trial) if rest else winner(rows)


def final_jobs(search: Search, trials, shape=None, classes: int | None = None) -> list[FinalJob]:
    """Every final run known so far, finalist by finalist (best first), seed by seed: all of them
    when each finalist trains every seed; else the selection runs, and, once those are settled, the
    winner's remaining seeds (choosing it costs the finalists on the cost model: `shape` and
    `classes` of the dataset, read from it when not given)."""
    jobs, f = selection_jobs(search, trials), search.final
    if f.screening >= f.seeds or not settled(jobs):
        return jobs
    if shape is None:
        from cnnlab.workflows.search.worker import dataset_input

        shape, classes = dataset_input(search.base)
    win = winner(finalist_figures(search, trials, jobs, shape, classes))
    if win is None:
        return jobs
    base_seed = _base_seed(search)
    t = next(t for t in trials if t.number == win["trial"])
    return jobs + [_job(search, t, s) for s in range(base_seed + f.screening, base_seed + f.seeds)]


def default_trainer(config, resume=None) -> dict:
    from cnnlab.train.loop import train

    return train(config, resume=resume, quiet=True)


def run_final(search: Search, jobs: list[FinalJob], log=print, trainer=None) -> int:
    """Train every final run no one has finished and no other live process holds; returns how many
    this call trained or resumed. A run that diverges is logged, marked and left (it has no summary)."""
    from cnnlab.train.loop import Interrupted, TrainingDiverged

    trainer = trainer or default_trainer
    trained = 0
    for i, job in enumerate(jobs, 1):
        rd = RunDir(job.run_dir)
        label = f"final [{i}/{len(jobs)}] trial {job.trial} seed {job.seed}"
        if settled([job]):  # finished, or diverged (delete its .diverged mark to try it again)
            continue
        with search.dir.claim(job.run_dir) as mine:
            if not mine or settled([job]):  # another process trains it, or has just finished it
                continue
            try:
                if rd.is_run() or rd.last.exists():
                    log(f"{label}: resuming {job.run_dir}")
                    trainer(None, resume=str(job.run_dir))
                else:
                    if job.run_dir.exists():  # cut before its first checkpoint: nothing to keep
                        shutil.rmtree(job.run_dir)
                    log(f"{label}: training {job.config.model} for {job.config.epochs} epochs into {job.run_dir}")
                    trainer(job.config)
            except TrainingDiverged as e:
                log(f"{label}: diverged ({str(e).split(':')[0]}); it has no final figures")
                _diverged_mark(job.run_dir).touch()
                continue
            except Interrupted as e:  # resumed from its checkpoint when the search runs again
                raise Interrupted(f"{e.stopped} in the final run {job.run_dir}; {AGAIN}", e.stopped) from None
            trained += 1
            s = rd.read_summary() or {}
            log(f"{label}: validation error {100 * (1 - s.get('best_val_acc', 0)):.2f}%")
    return trained


def _mean_std(values: list) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _figures(prefix: str, values: list) -> dict:
    mean, std = _mean_std(values)
    return {prefix: mean, f"{prefix}_std": std}


def finalist_figures(search: Search, trials, jobs: list[FinalJob], shape, classes: int) -> list[dict]:
    """One dict per finalist, in the jobs' order: its search (proxy) figures and its final runs'
    figures (mean and standard deviation over the seeds that finished), costed as the final config
    trains it (e.g. a final `tta` changes its cycles)."""
    by_number = {t.number: t for t in trials}
    rows = []
    for number in dict.fromkeys(j.trial for j in jobs):
        t, mine = by_number[number], [j for j in jobs if j.trial == number]
        a = t.user_attrs
        trained = search.dir.trained_dir(t)
        trial_summary = RunDir(trained).read_summary() if trained else None
        proxy_test = 100 * (1 - trial_summary["test_acc"]) if trial_summary else None
        search_fig = {"val_error": a["error"], "val_metric": search_metric(a), "test_error": proxy_test,
                      "test_metric": ranking_metric(proxy_test, a["cycles"]) if proxy_test is not None else None,
                      "epochs": trial_summary["epochs_run"] if trial_summary else None, "cycles": a["cycles"],
                      "run_dir": str(trained) if trained else None}
        cost = candidate_cost(mine[0].config, shape, classes)
        cost["parameters"] = cost.pop("params")  # "params" is the trial's searched values, as in best.json
        runs = []
        for j in mine:
            s = RunDir(j.run_dir).read_summary()
            if not s:
                continue
            val, test = 100 * (1 - s["best_val_acc"]), 100 * (1 - s["test_acc"])
            runs.append({"seed": j.seed, "run_dir": str(j.run_dir), "val_error": val, "test_error": test,
                         "test_count": s["test_count"], "val_metric": ranking_metric(val, cost["cycles"]),
                         "test_metric": ranking_metric(test, cost["cycles"]), "train_seconds": s["train_seconds"],
                         "epochs_run": s["epochs_run"]})
        final = {"epochs": search.final.epochs, "seeds": len(mine), "finished": len(runs), "runs": runs}
        if len(mine) < search.final.seeds:  # a finalist the selection runs did not choose
            final["selection_seeds"] = search.final.screening
        for key in ("val_error", "test_error", "val_metric", "test_metric"):
            final.update(_figures(key, [r[key] for r in runs]))
        rows.append({"trial": number, "model": a["model"], "params": dict(t.params), **cost,
                     "search": search_fig, "final": final})
    return rows


def final_stage(search: Search, storage: str | None = None, log=print, poll: float = 10.0) -> int:
    """The final stage of a search whose trials are all in: its finalists' runs trained or resumed
    (this process's share, with other processes running it at once); returns the runs it trained.
    It returns once every final run is settled: a run another live process trains is waited for,
    and taken over (resumed from its checkpoint) if that process dies. So a process with nothing
    left to take never reports a stage half done: with selection runs it waits for the others'
    before the winner is chosen, and two `cnnlab search` commands sharing one study each end with
    every seed in (best.json is written over all of them, by both)."""
    from cnnlab.workflows.search.optuna_adapter import open_study

    trials = open_study(search, storage).get_trials(deepcopy=False)
    f, first = search.final, selection_jobs(search, trials)
    if first:
        if f.screening < f.seeds:
            log(f"final stage: {len(first) // f.screening} finalist(s) x {f.screening} seed(s) to choose the winner, "
                f"then the winner's other {f.seeds - f.screening}; {f.epochs} epochs each")
        else:
            log(f"final stage: {len(first) // f.seeds} finalist(s) x {f.seeds} seed(s), {f.epochs} epochs each")
    trained, told, jobs = 0, None, final_jobs(search, trials)
    while True:
        trained += run_final(search, jobs, log)
        left = [j for j in jobs if not settled([j])]  # each held by another live process: run_final took the rest
        if not left:
            more = final_jobs(search, trials)  # once the selection runs are settled, the winner's seeds join them
            if len(more) == len(jobs):
                return trained
            jobs = more
            continue
        if told != len(left):
            log(f"final stage: waiting for {len(left)} final run(s) another process trains")
            told = len(left)
        time.sleep(poll)
