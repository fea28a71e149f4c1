"""A search's results: trials.csv, the Pareto front and pareto.png, the chosen model's best.yaml and best.json.

    best = finish(search, storage=None, data_dir=None, log=print)   # writes them; returns best.json's dict
    fig = pareto_figure(SearchDir(out).read_trials(), front)        # the plot, for reports

A finished search's files are read back through `cnnlab.dirs.SearchDir` (finished(), read()).

With a final stage (`final` in the search file), the chosen model is the finalist with the lowest
competition metric on the validation split after its final training (mean over its seeds); each
final run's test error was measured once by its trainer, and best.json holds, for every finalist,
its search (proxy) figures and its final ones (`finalists`), the winner's at the top
(`stage: final`). Without one, the chosen model is the best trial on the competition metric among
Optuna's best trials (one objective: the best trial; several: the Pareto front), evaluated on the
test split once, here (`stage: search`). Choices use the validation split only.
"""

from __future__ import annotations

from cnnlab.config import TrainConfig
from cnnlab.dirs.run import RunDir
from cnnlab.errors import CnnlabError
from cnnlab.workflows.search.objectives import OBJECTIVES
from cnnlab.workflows.search.optuna_adapter import open_study
from cnnlab.workflows.search.space import Search


def metric(attrs: dict) -> float:
    """The competition metric of a trained trial's user attributes."""
    return OBJECTIVES["competition"].value(attrs)


def trial_rows(trials, sd) -> list[dict]:
    """One row per trial, as trials.csv holds it (None where a figure is missing); `sd` the search's folder."""
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(), "model": a.get("model", ""),
                     "params": a.get("params"), "macs": a.get("macs"), "cycles": a.get("cycles"),
                     "energy_mj": a.get("energy_mj"), "peak_activation": a.get("peak_activation"),
                     "val_error": a.get("error"), "metric": metric(a) if a.get("error") is not None else None,
                     "values": ";".join(f"{v:.6g}" for v in (t.values or [])), "infeasible": a.get("infeasible", ""),
                     "bound": a.get("bound", ""), "pruned_at": a.get("pruned_at"), "tta_passes": a.get("tta_passes"),
                     "duplicate_of": a.get("duplicate"),
                     "train_seconds": a.get("train_seconds"), "worker": a.get("worker"),
                     "run_dir": str(sd.trained_dir(t) or ""), **t.params})
    return rows


def error_cycles_front(trials) -> list:
    """The trained trials no other beats on both validation error and cycles."""
    pts = [(t.user_attrs["error"], t.user_attrs["cycles"], t) for t in trials]
    return [t for e, c, t in pts if not any(e2 <= e and c2 <= c and (e2, c2) != (e, c) for e2, c2, _ in pts)]


def trial_counts(trials) -> dict:
    from optuna.trial import TrialState

    refused = {"infeasible", "duplicate", "bound"}
    return {"trials": len(trials), "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED and not refused & set(t.user_attrs) for t in trials),
            "infeasible": sum("infeasible" in t.user_attrs for t in trials),
            "duplicates": sum("duplicate" in t.user_attrs for t in trials),
            "bound_pruned": sum("bound" in t.user_attrs for t in trials)}


def finish(search: Search, storage: str | None = None, data_dir=None, log=print) -> dict:
    """Trials table, Pareto plot, then the chosen model: after a final stage (`search.final`) the
    finalist with the best final validation metric, else the search's best trial (evaluated on the
    test split once, here); best.yaml and best.json."""
    from optuna.trial import TrialState

    sd = search.dir
    study = open_study(search, storage)
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, search.dir)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    sd.write_trials(keys, [["" if r.get(k) is None else r.get(k) for k in keys] for r in rows])
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        raise CnnlabError(f"no trial of the search in {search.out} finished: widen the space or the constraints")
    best = study.best_trials  # one objective: the best trial; several: Optuna's Pareto front
    front = best if len(search.objectives) > 1 else error_cycles_front(done)
    plot_pareto(rows, {t.number for t in front}, sd.pareto_png)
    common = {"objectives": search.objectives, **trial_counts(trials), "pareto": [t.number for t in front]}
    if search.final is not None:
        result = final_result(search, trials, log)
    else:
        result = search_result(search, min(best, key=lambda t: metric(t.user_attrs)), data_dir, log)
    result = {**result, **common}
    sd.write_best(result)
    return result


def search_result(search: Search, chosen, data_dir, log) -> dict:
    """best.json's figures for the search's own best trial: its validation figures, and its test
    split evaluated once, here."""
    from cnnlab.workflows.measure.evaluate import evaluate_run

    sd = search.dir
    run_dir = sd.trained_dir(chosen)
    config = TrainConfig.load(RunDir(run_dir).config)
    config.out = None
    sd.write_best_config(config.to_yaml(), f"the best trial ({chosen.number}) of the search {search.path.name}: "
                                           f"train it with\ncnnlab train --config {sd.best_yaml}")
    test = evaluate_run(run_dir, "test", data_dir=data_dir, write=True)
    a = chosen.user_attrs
    test_error = 100 * (1 - test["accuracy"])
    best = {"stage": "search", "trial": chosen.number, "model": a["model"], "params": dict(chosen.params),
            "val_error": a["error"], "test_error": test_error, "test_count": test["count"], "cycles": a["cycles"],
            "energy_mj": a["energy_mj"], "macs": a["macs"], "parameters": a["params"],
            "peak_activation": a["peak_activation"], "val_metric": metric(a),
            "test_metric": metric({**a, "error": test_error}), "values": chosen.values, "run_dir": str(run_dir)}
    log(f"best trial {chosen.number}: {a['model']} - validation error {a['error']:.2f}%, test error "
        f"{best['test_error']:.2f}%, {a['cycles']:,} cycles, {a['energy_mj']:.3f} mJ, metric {best['test_metric']:.3f}")
    return best


def final_result(search: Search, trials, log) -> dict:
    """best.json's figures after the final stage: every finalist's search (proxy) and final figures,
    and the winner by final validation metric (the test split is reported, never used to choose)."""
    from cnnlab.workflows.search.final import chosen as chosen_row
    from cnnlab.workflows.search.final import final_jobs, finalist_figures
    from cnnlab.workflows.search.worker import dataset_input

    shape, classes = dataset_input(search.base)
    jobs = final_jobs(search, trials, shape, classes)
    rows = finalist_figures(search, trials, jobs, shape, classes)
    win = chosen_row(search, jobs, rows)  # chosen on its selection runs
    if win is None:
        raise CnnlabError(f"no final run of the search in {search.out} finished: run the same command again to "
                          "continue the final stage")
    for r in rows:
        if r["final"]["finished"] < r["final"]["seeds"]:
            log(f"trial {r['trial']}: {r['final']['finished']} of {r['final']['seeds']} final runs finished "
                "(a diverged run has no figures); its figures are over those")
    job = next(j for j in jobs if j.trial == win["trial"])
    config = TrainConfig.from_dict({**job.config.to_dict(), "out": None})
    sd = search.dir
    sd.write_best_config(config.to_yaml(), f"the final stage's winner (trial {win['trial']}) of the search "
                                           f"{search.path.name}: train it with\ncnnlab train --config {sd.best_yaml}")
    f, chosen = win["final"], next(t for t in trials if t.number == win["trial"])
    best = {"stage": "final", "trial": win["trial"], "model": win["model"], "params": win["params"],
            "val_error": f["val_error"], "val_error_std": f["val_error_std"], "test_error": f["test_error"],
            "test_error_std": f["test_error_std"], "test_count": f["runs"][0]["test_count"],
            "cycles": win["cycles"], "energy_mj": win["energy_mj"], "macs": win["macs"],
            "parameters": win["parameters"], "peak_activation": win["peak_activation"],
            "val_metric": f["val_metric"], "test_metric": f["test_metric"], "test_metric_std": f["test_metric_std"],
            "seeds": f["finished"], "epochs": f["epochs"], "values": chosen.values, "run_dir": f["runs"][0]["run_dir"],
            "search": win["search"], "final": f, "finalists": rows}
    std = f" ± {f['test_error_std']:.2f}" if f["finished"] > 1 else ""
    log(f"final stage: trial {win['trial']} wins of {len(rows)} finalists: {win['model']} - {f['epochs']} epochs, "
        f"validation error {f['val_error']:.2f}%, test error {f['test_error']:.2f}%{std} ({f['finished']} seed(s)), "
        f"{win['cycles']:,} cycles, metric {f['test_metric']:.3f} on test (the search's "
        f"{win['search']['epochs']}-epoch trial: {win['search']['val_metric']:.3f} on validation)")
    return best


def plot_pareto(rows, front: set, path):
    from cnnlab.workflows.report.figures import save_png

    return save_png(pareto_figure(rows, front), path)


def pareto_figure(rows, front: set):
    """Validation error against cycles for every trained trial, coloured by energy; the Pareto front
    (error against cycles) ringed and joined. `rows` as in trials.csv (numbers may be strings)."""
    from matplotlib.ticker import FuncFormatter

    from cnnlab.workflows.report.figures import new_figure

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    rows = [{**r, "trial": int(r["trial"]), "val_error": num(r.get("val_error")), "cycles": num(r.get("cycles")),
             "energy_mj": num(r.get("energy_mj"))} for r in rows]
    pts = [r for r in rows if r["val_error"] is not None and r["cycles"] is not None]
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    if pts:
        sc = ax.scatter([r["cycles"] for r in pts], [r["val_error"] for r in pts],
                        c=[r["energy_mj"] for r in pts], cmap="viridis", s=28, zorder=3)
        fig.colorbar(sc, ax=ax, label="energy per image (mJ)")
        edge = sorted((r for r in pts if r["trial"] in front), key=lambda r: r["cycles"])
        ax.plot([r["cycles"] for r in edge], [r["val_error"] for r in edge], "-o", mfc="none", color="crimson",
                ms=9, lw=1, label="Pareto front", zorder=4)
        ax.legend(loc="upper right")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    ax.set_xlabel("cycles per image (cost model)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"{len(pts)} trained trials")
    ax.grid(alpha=0.3)
    return fig

