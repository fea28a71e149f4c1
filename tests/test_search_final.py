"""`cnnlab search`'s fidelity and final stage: Hyperband stopping trials at its rungs, a candidate
over the bound never training, the final stage retraining the top candidates (resumed after a kill
without retraining a finished run, both figure sets in best.json and the report), the new keys'
one-line errors, the whitening stem token and the cost of test-time augmentation. Tiny synthetic
data and nets; the study is read through Optuna's public API."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna", reason="cnnlab search needs Optuna: pip install 'cnnlab[search]'")

from cnnlab.cli import main as cli  # noqa: E402
from cnnlab.config import TrainConfig  # noqa: E402
from cnnlab.dirs import RunDir, SearchDir  # noqa: E402
from cnnlab.workflows.search import load_search, open_study  # noqa: E402
from tests.test_search import ROOT, _fails_writing_nothing, _search_file  # noqa: E402

HARD = "synthetic:shape=3x8x8,classes=4,train=200,test=40,noise=0.97"  # errors far from 0: the metric is the error's
BASE = {"dataset": HARD, "epochs": 4, "batch_size": 40, "optimizer": "sgd", "lr": 0.05, "val_size": 40, "threads": 1}
SPACE = {"spec": "{stem}-c{w}k3-relu-{pool}-fc4",
         "params": {"stem": {"choices": ["wh2-relu", ""]}, "w": {"choices": [2, 4, 8]},
                    "pool": {"choices": ["p2", ""]}},
         "train": {"lr": {"float": [0.001, 0.5], "log": True}}}


def _trials(path, out):
    return open_study(load_search(path, out)).get_trials(deepcopy=False)


def test_hyperband_stops_trials_at_its_rungs(tmp_path):
    """Rungs at 1 and 2 epochs of 4 (reduction factor 2): every trial the pruner stopped trained
    exactly a rung's epochs, the others all 4; the study's pruner is Optuna's HyperbandPruner."""
    path = _search_file(tmp_path, base=BASE, space=SPACE, trials=8, sampler="random", constraints={},
                        prune="hyperband", fidelity={"min_epochs": 1, "reduction_factor": 2}, bound_prune=False)
    out = tmp_path / "s"
    assert cli(["search", str(path), "--out", str(out)]) == 0
    search = load_search(path, out)
    assert search.pruning.rungs == [1, 2]
    assert type(open_study(search).pruner).__name__ == "HyperbandPruner"
    trials = _trials(path, out)
    stopped = [t for t in trials if "pruned_at" in t.user_attrs]
    assert stopped, "Hyperband stopped no trial"
    for t in trials:
        epochs = len(RunDir(t.user_attrs["run_dir"]).read_metrics())
        if t in stopped:
            assert t.state.name == "PRUNED" and t.user_attrs["pruned_at"] in (1, 2)
            assert epochs == t.user_attrs["pruned_at"] and max(t.intermediate_values) == epochs
        else:
            assert t.state.name == "COMPLETE" and epochs == 4
    rows = {int(r["trial"]): r for r in SearchDir(out).read_trials()}
    assert all(rows[t.number]["pruned_at"] == str(t.user_attrs["pruned_at"]) for t in stopped)
    assert SearchDir(out).read_best()["pruned"] == len(stopped)


def test_a_candidate_over_the_bound_never_trains(tmp_path):
    """A 2048-channel candidate's cycles / 300000 alone exceed the first trial's metric: it is
    recorded as pruned with the bound, and has no run directory (no epoch ran)."""
    space = {"spec": "c{w}k3-relu-c{w}k3-relu-fc4", "params": {"w": {"choices": [2, 2048]}}}
    path = _search_file(tmp_path, base=BASE, space=space, trials=2, sampler="random",
                        constraints={"max_activation": 100_000_000})
    d = yaml.safe_load(path.read_text())
    del d["bound_prune"]  # on unless the file says otherwise
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "s"
    study = open_study(load_search(path, out))
    study.enqueue_trial({"w": 2})
    study.enqueue_trial({"w": 2048})
    assert cli(["search", str(path), "--out", str(out)]) == 0
    first, big = _trials(path, out)
    assert first.state.name == "COMPLETE" and big.state.name == "PRUNED"
    assert big.user_attrs["cycles"] / 300000 >= first.value and "cannot win even at 0% error" in big.user_attrs["bound"]
    assert "run_dir" not in big.user_attrs and not SearchDir(out).trial_dir(big.number).exists()
    assert SearchDir(out).read_best()["bound_pruned"] == 1
    from dataclasses import replace

    from cnnlab.workflows.search.stages import Final
    from cnnlab.workflows.search.worker import bound_failure

    search, cost = load_search(path, out), dict(big.user_attrs)
    study = open_study(search)
    assert "(trial 0)" in bound_failure(search, study, cost)
    search.final = Final(top_k=2, epochs=1)  # one complete trial: the candidate could still be the 2nd finalist
    assert bound_failure(search, study, cost) is None
    search.pruning = replace(search.pruning, bound=False)
    search.final = None
    assert bound_failure(search, study, cost) is None


def test_near_twins_of_a_better_trial_are_not_finalists(tmp_path):
    """A trial of the same model whose searched numbers are within final.same_within of a better
    trial's, or that differs only at test time (tta), would train the same network again: the slot
    goes to the next distinct candidate. A categorical difference, or a number further apart, is a
    candidate of its own; same_within 0 keeps every value apart; a final stage already begun keeps
    its finalists."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from cnnlab.workflows.search.final import finalists

    def trial(number, model, error, lr, optimizer="sgd", tta=False):
        return optuna.trial.create_trial(
            params={"lr": lr, "optimizer": optimizer, "tta": tta}, value=error / 12 + 0.1,
            distributions={"lr": FloatDistribution(0.01, 1, log=True),
                           "optimizer": CategoricalDistribution(["sgd", "muon"]),
                           "tta": CategoricalDistribution([False, True])},
            user_attrs={"model": model, "error": error, "cycles": 30000})

    trials = [trial(0, "a", 10.0, 0.122), trial(1, "a", 10.1, 0.1224, tta=True), trial(2, "a", 10.2, 0.13),
              trial(3, "a", 10.3, 0.2), trial(4, "a", 10.4, 0.122, optimizer="muon"), trial(5, "b", 10.5, 0.122)]
    for i, t in enumerate(trials):
        t.number = i
    space = {"spec": "c{w}k3-relu-fc4", "params": {"w": {"choices": [2, 4]}},
             "train": {"lr": {"float": [0.01, 1], "log": True}, "optimizer": {"choices": ["sgd", "muon"]},
                       "tta": {"choices": [False, True]}}}

    def chosen(final, out):
        search = load_search(_search_file(tmp_path, space=space, final=final), tmp_path / out)
        return [t.number for t in finalists(search, trials)]

    assert chosen({"top_k": 4}, "s1") == [0, 3, 4, 5]  # 1: 0.3 % and tta; 2: 6 % apart in lr
    assert chosen({"top_k": 4, "same_within": 0.05}, "s2") == [0, 2, 3, 4]
    assert chosen({"top_k": 6, "same_within": 0}, "s3") == [0, 1, 2, 3, 4, 5]
    begun = SearchDir(tmp_path / "s4")
    for number in (0, 1):  # an earlier rule chose the near-twins 0 and 1: their final runs stay finalists
        begun.final_dir(number, 0).mkdir(parents=True)
    assert chosen({"top_k": 2}, "s4") == [0, 1]


def _final_summaries(out):
    return {p.name: p / "summary.json" for p in sorted(SearchDir(out).final_runs.iterdir()) if p.is_dir()}


def _kill_when_a_final_run_finishes(cmd, out):
    """Start `cnnlab search` (cmd) and SIGKILL it as soon as one final run in `out` has its summary."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(
            s.exists() for s in (_final_summaries(out).values() if SearchDir(out).final_runs.is_dir() else [])):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_the_final_stage_retrains_the_top_candidates_and_resumes_after_a_kill(tmp_path):
    """Killed in the final stage and run again: finished final runs are not trained again, every
    final run trains exactly final.epochs epochs, the finalists are the two best trials by validation
    metric, and best.json (and the report) hold their search and final figures; the winner has the
    best final validation metric."""
    final = {"top_k": 2, "epochs": 3, "seeds": 2, "train": {"batch_size": 20}}
    path = _search_file(tmp_path, base=BASE, space=SPACE, trials=4, sampler="random", constraints={},
                        bound_prune=False, final=final)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out)]
    _kill_when_a_final_run_finishes(cmd, out)
    done = {n: s.stat().st_mtime_ns for n, s in _final_summaries(out).items() if s.exists()}
    assert 1 <= len(done) < 4 and not SearchDir(out).best_json.exists(), "the kill should fall in the final stage"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summaries = _final_summaries(out)
    assert all(summaries[n].stat().st_mtime_ns == stamp for n, stamp in done.items())  # not trained again

    trials = [t for t in _trials(path, out) if t.state.name == "COMPLETE"]
    top = sorted(trials, key=lambda t: (t.user_attrs["error"] / 12 + t.user_attrs["cycles"] / 300000, t.number))[:2]
    assert sorted(summaries) == sorted(f"{t.number:04d}-s{s}" for t in top for s in (0, 1))
    for name in summaries:
        rd = RunDir(SearchDir(out).final_runs / name)
        assert [int(m["epoch"]) for m in rd.read_metrics()] == [1, 2, 3]
        assert TrainConfig.load(rd.config).batch_size == 20

    best = SearchDir(out).read_best()
    assert best["stage"] == "final" and [f["trial"] for f in best["finalists"]] == [t.number for t in top]
    for f in best["finalists"]:
        t = next(t for t in top if t.number == f["trial"])
        assert f["search"]["val_error"] == pytest.approx(t.user_attrs["error"]) and f["search"]["epochs"] == 4
        runs = f["final"]["runs"]
        assert len(runs) == 2 and f["final"]["epochs"] == 3
        for run in runs:
            s = json.loads((SearchDir(out).final_dir(f["trial"], run["seed"]) / "summary.json").read_text())
            assert run["test_error"] == pytest.approx(100 * (1 - s["test_acc"]))
        assert f["final"]["test_error"] == pytest.approx(sum(r["test_error"] for r in runs) / 2)
        assert f["final"]["val_metric"] == pytest.approx(f["final"]["val_error"] / 12 + f["cycles"] / 300000)
    winner = min(best["finalists"], key=lambda f: (f["final"]["val_metric"], f["trial"]))
    assert best["trial"] == winner["trial"] and best["test_metric"] == winner["final"]["test_metric"]
    assert best["search"] == winner["search"]
    chosen = TrainConfig.load(SearchDir(out).best_yaml)
    assert (chosen.model, chosen.epochs, chosen.batch_size, chosen.out) == (winner["model"], 3, 20, None)

    from cnnlab.workflows.report import report

    page = report([out], evaluate=False).path.read_text()
    assert 'id="search-finalists"' in page and "final stage" in page.lower()


def test_a_moved_search_folder_finds_its_trials(tmp_path):
    """A finished search moved to another folder and run again there (as benchmarks/search_vs_zoo.py
    reuses one): best.json's search figures still come from the trial's run (its epochs and test
    error), and every run directory named is under the new folder."""
    final = {"top_k": 1, "epochs": 1, "seeds": 1}
    path = _search_file(tmp_path, base={**BASE, "epochs": 2}, space=SPACE, trials=2, sampler="random",
                        constraints={}, bound_prune=False, final=final)
    first, moved = tmp_path / "s", tmp_path / "elsewhere" / "s"
    assert cli(["search", str(path), "--out", str(first)]) == 0
    moved.parent.mkdir()
    first.rename(moved)
    assert cli(["search", str(path), "--out", str(moved)]) == 0
    best = SearchDir(moved).read_best()
    assert best["search"]["epochs"] == 2 and best["search"]["test_error"] is not None
    assert Path(best["search"]["run_dir"]) == SearchDir(moved).trial_dir(best["trial"])
    rows = SearchDir(moved).read_trials()
    assert all(Path(r["run_dir"]).parent == SearchDir(moved).trials for r in rows if r["run_dir"])


def test_selection_runs_choose_the_winner_and_only_it_trains_the_other_seeds(tmp_path):
    """final.select_seeds 1 of seeds 3, two worker processes: each finalist trains seed 0, the one
    with the better validation metric on it then trains seeds 1 and 2 (the worker that finished its
    selection run first waits for the other's), and best.json reports its 3 runs and the rival's 1."""
    final = {"top_k": 2, "epochs": 2, "seeds": 3, "select_seeds": 1}
    path = _search_file(tmp_path, base=BASE, space=SPACE, trials=4, sampler="random", constraints={},
                        bound_prune=False, final=final)
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    best = SearchDir(out).read_best()
    rows = best["finalists"]
    assert len(rows) == 2
    chosen = min(rows, key=lambda f: (f["final"]["runs"][0]["val_metric"], f["trial"]))  # seed 0 decides
    rival = next(f for f in rows if f is not chosen)
    assert best["trial"] == chosen["trial"] and best["seeds"] == 3
    assert [run["seed"] for run in chosen["final"]["runs"]] == [0, 1, 2]
    assert [run["seed"] for run in rival["final"]["runs"]] == [0] and rival["final"]["selection_seeds"] == 1
    assert sorted(_final_summaries(out)) == sorted([f"{chosen['trial']:04d}-s{s}" for s in (0, 1, 2)]
                                                   + [f"{rival['trial']:04d}-s0"])
    assert best["test_error"] == pytest.approx(sum(run["test_error"] for run in chosen["final"]["runs"]) / 3)
    assert "then the winner's other 2" in r.stdout

    from cnnlab.workflows.report import report

    page = report([out], evaluate=False).path.read_text()
    assert "with 1 seed(s), the winner then with 3" in page


def test_a_killed_selection_stage_resumes_its_selection_runs_before_choosing(tmp_path):
    """Killed once the first selection run has finished: run again, the other finalist's selection
    run is trained (or resumed) before the winner is chosen, so the winner is the better of both on
    seed 0 and only it has seeds 1 and 2."""
    final = {"top_k": 2, "epochs": 3, "seeds": 3, "select_seeds": 1, "train": {"batch_size": 20}}
    path = _search_file(tmp_path, base=BASE, space=SPACE, trials=4, sampler="random", constraints={},
                        bound_prune=False, final=final)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out)]
    _kill_when_a_final_run_finishes(cmd, out)
    assert len([s for s in _final_summaries(out).values() if s.exists()]) == 1, "the kill should fall in selection"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # the second selection run went out in a list of the 2 selection runs, before any winner's seed was known
    assert re.search(r"final \[2/2\] trial \d+ seed 0: (training|resuming)", r.stdout), r.stdout
    best = SearchDir(out).read_best()
    chosen = min(best["finalists"], key=lambda f: (f["final"]["runs"][0]["val_metric"], f["trial"]))
    rival = next(f for f in best["finalists"] if f is not chosen)
    assert best["trial"] == chosen["trial"]
    assert [run["seed"] for run in chosen["final"]["runs"]] == [0, 1, 2]
    assert [run["seed"] for run in rival["final"]["runs"]] == [0]


def test_a_zoo_model_s_options_are_searched_through_its_call_form(tmp_path):
    """space.spec may be a registered model written as a call: each trial trains and is costed as
    that model with the drawn options, and the final stage retrains it with them."""
    from cnnlab.models.summary import count_params

    base = {**BASE, "dataset": "synthetic:shape=3x16x16,classes=4,train=120,test=40,noise=0.5", "epochs": 2}
    space = {"spec": "fastnet(widths=[{w1}, 8, 8], depth={d})",
             "params": {"w1": {"choices": [4, 8]}, "d": {"int": [1, 2]}}}
    path = _search_file(tmp_path, base=base, space=space, trials=3, sampler="random", constraints={},
                        bound_prune=False, final={"top_k": 1, "epochs": 1})
    out = tmp_path / "s"
    assert cli(["search", str(path), "--out", str(out)]) == 0
    for t in _trials(path, out):
        model = t.user_attrs["model"]
        assert model == f"fastnet(widths=[{t.params['w1']}, 8, 8], depth={t.params['d']})"
        from cnnlab.models import create_model

        assert t.user_attrs["params"] == count_params(create_model(model, num_classes=4, input_size=16))
    best = SearchDir(out).read_best()
    assert best["stage"] == "final" and best["model"].startswith("fastnet(widths=[")
    assert TrainConfig.load(SearchDir(out).best_yaml).model == best["model"]


@pytest.mark.parametrize("change, message", [
    ({"prune": "asha"}, "unknown pruner 'asha'"),
    ({"prune": "median", "fidelity": {"min_epochs": 1}}, "fidelity sets the rungs of prune: hyperband or halving"),
    ({"prune": "hyperband", "fidelity": {"min_epochs": 0}}, "fidelity.min_epochs must be a whole number of at least 1"),
    ({"prune": "hyperband", "fidelity": {"reduction_factor": 1}},
     "reduction_factor must be a whole number of at least 2"),
    ({"prune": "hyperband", "fidelity": {"min_epochs": 2}}, "must come before the trials' last epoch (2)"),
    ({"prune": "halving", "fidelity": {"rungs": 3}}, "fidelity.rungs: unknown key"),
    ({"prune": "hyperband", "objective": ["error", "cycles"]}, "prune: hyperband needs one objective"),
    ({"bound_prune": "yes"}, "bound_prune must be true or false"),
    ({"final": 3}, "final must be a mapping"),
    ({"final": {"top_k": 0}}, "final.top_k must be a whole number of at least 1"),
    ({"final": {"epochs": "long"}}, "final.epochs must be a whole number"),
    ({"final": {"train": {"lr": 0.1}}}, "lr is searched (space.train.lr)"),
    ({"final": {"train": {"seed": 3}}}, "the final stage sets seed itself"),
    ({"final": {"train": {"bogus": 1}}}, "final.train.bogus: not a training config key"),
    ({"final": {"runs": 2}}, "final.runs: unknown key"),
    ({"final": {"seeds": 2, "select_seeds": 3}}, "final.select_seeds: 3 is more than final.seeds (2)"),
    ({"final": {"select_seeds": 0}}, "final.select_seeds must be a whole number of at least 1"),
    ({"final": {"same_within": 1.5}}, "final.same_within must be a fraction from 0"),
    ({"final": {"same_within": "close"}}, "final.same_within must be a fraction from 0"),
])
def test_bad_stage_keys_are_one_line(tmp_path, capsys, change, message):
    path = _search_file(tmp_path, **change)
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s")], message)


def test_bad_final_flags_are_one_line(tmp_path, capsys):
    path = _search_file(tmp_path)
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s"), "--final-top-k", "2"],
                           "--final-top-k needs a final stage")
    path = _search_file(tmp_path, final={"top_k": 2})
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s"), "--final-top-k", "0"],
                           "--final-top-k must be a whole number of at least 1, got 0")
    assert load_search(path, tmp_path / "s", final_top_k=5).final.top_k == 5


def test_the_whitening_stem_is_a_spec_token_fitted_to_the_data(tmp_path):
    """wh2: 2*C*2*2 fixed filters fitted to the training patches by the trainer on a new run; the
    spec's own size count agrees with the module, and the NumPy engine refuses it in one line."""
    import torch

    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.models import create_model
    from cnnlab.models.spec import parse_spec, resolve, spec_size
    from cnnlab.train.loop import train

    net = create_model("wh2-relu-c4k3-relu-fc4", num_classes=4, in_channels=3, input_size=8)
    assert type(net[0]).__name__ == "PatchWhitening" and net[0].out_channels == 24 and not net[0].weight.requires_grad
    params, _ = spec_size(resolve(parse_spec("wh2-relu-c4k3-relu-fc4"), (3, 8, 8), 4))
    assert params == sum(p.numel() for p in net.parameters())
    config = TrainConfig.from_dict({**BASE, "epochs": 1, "model": "wh2-relu-c4k3-relu-fc4", "out": str(tmp_path / "r")})
    train(config, quiet=True)
    assert any("PatchWhitening" in line and "fitted 1 layer" in line for line in RunDir(tmp_path / "r").read_log())
    weight = load_checkpoint(RunDir(tmp_path / "r").best)["model_state"]["0.weight"]
    assert torch.equal(weight[12:], -weight[:12])  # fitted: each whitening filter and its negative
    assert not torch.equal(net[0].weight[12:], -net[0].weight[:12])  # (a new layer's random filters are not)
    assert cli(["train", "--model", "wh2-relu-fc4", "--dataset", BASE["dataset"], "--engine", "scratch",
                "--epochs", "1", "--out", str(tmp_path / "numpy")]) == 2


def test_test_time_augmentation_multiplies_the_cost_per_image():
    from cnnlab.workflows.search import candidate_cost

    costs = {}
    for tta in (0, 1, 2):
        config = TrainConfig.from_dict({**BASE, "model": "c4k3-relu-fc4", "tta": tta, "out": None})
        costs[tta] = candidate_cost(config, (3, 8, 8), 4)
    assert costs[1]["cycles"] == 2 * costs[0]["cycles"] and costs[2]["cycles"] == 6 * costs[0]["cycles"]
    assert costs[2]["tta_passes"] == 6 and "tta_passes" not in costs[0]
    assert costs[2]["params"] == costs[0]["params"] and costs[2]["peak_activation"] == costs[0]["peak_activation"]


def _holder(sd, runs):
    """A live process that holds the claim of each of `runs` (final run folders of SearchDir `sd`)
    until it is killed."""
    runs = [str(r) for r in runs]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from cnnlab.dirs import SearchDir; "
                               f"cs = [SearchDir({str(sd.path)!r}).claim(r) for r in {runs!r}]; "
                               "assert all(c.__enter__() for c in cs); print('held', flush=True); time.sleep(300)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_final_run_is_held_by_one_live_process(tmp_path):
    """SearchDir.claim: while another process holds a final run, this one is refused it; once that
    process has exited (even killed), the run is free again."""
    sd = SearchDir(tmp_path / "s")
    run = sd.final_dir(3, 0)
    holder = _holder(sd, [run])
    try:
        with sd.claim(run) as mine:
            assert mine is False
    finally:
        holder.kill()
        holder.wait()
    with sd.claim(run) as mine:
        assert mine is True
        with SearchDir(sd.path).claim(run) as again:  # another open file of this process: refused too
            assert again is False


def test_a_command_with_no_final_run_left_waits_for_the_others_before_writing_best_json(tmp_path):
    """Two commands share one study: while another process holds a final run (here a process that
    holds seed 1's claim, as a second `cnnlab search` training it would), this command, its own
    seed done, waits instead of writing best.json over one seed; when that process dies, it takes
    the run over and best.json holds both seeds."""
    final = {"top_k": 1, "epochs": 2, "seeds": 2}
    path = _search_file(tmp_path, base=BASE, space=SPACE, trials=2, sampler="random", constraints={},
                        bound_prune=False, final=final)
    sd = SearchDir(tmp_path / "s")
    holder = _holder(sd, [sd.final_dir(number, 1) for number in (0, 1)])  # seed 1 of either trial: the finalist's
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(sd.path), "--json"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        for line in proc.stderr:  # the log; best.json's dict comes on stdout at the end
            said.append(line)
            if "waiting for 1 final run(s) another process trains" in line:
                break
        assert proc.poll() is None and not sd.best_json.exists(), "".join(said)
        assert any(re.search(r"final \[1/2\] trial \d+ seed 0: validation error", s) for s in said), "".join(said)
    finally:
        holder.kill()
        holder.wait()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    best = json.loads(out)
    assert best["seeds"] == 2 and [r["seed"] for r in best["final"]["runs"]] == [0, 1]
    assert re.search(r"final \[2/2\] trial \d+ seed 1: training", err), err
    assert SearchDir(sd.path).read_best()["seeds"] == 2


def _search_vs_zoo():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_vs_zoo", ROOT / "benchmarks" / "search_vs_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_vs_zoo_gives_each_zoo_model_the_same_stages_and_keeps_them(tmp_path):
    """benchmarks/search_vs_zoo.py: each zoo contender's file has the search file's trials, pruner
    and final stage, its own model and the tuned training values; one whose search has begun is
    never rewritten with other content (a changed search file is one line, nothing written)."""
    bench = _search_vs_zoo()
    final = {"top_k": 2, "epochs": 3, "seeds": 1}
    path = _search_file(tmp_path, base=BASE, space=SPACE, trials=4, sampler="random", constraints={},
                        prune="halving", fidelity={"min_epochs": 1, "reduction_factor": 2}, final=final)
    out = tmp_path / "cmp"
    files = bench.contender_files(path, out, ["lenet5"], 3, None)
    zoo = yaml.safe_load(files["zoo-lenet5"].read_text())
    mine = yaml.safe_load(path.read_text())
    assert zoo["space"] == {"spec": "lenet5", "train": SPACE["train"]}
    assert zoo["final"] == {**final, "seeds": 3} and zoo["trials"] == 4 and zoo["prune"] == "halving"
    assert zoo["fidelity"] == mine["fidelity"] and zoo["base"] == mine["base"]
    (out / "zoo-lenet5").mkdir()  # its search has begun
    assert bench.contender_files(path, out, ["lenet5"], 3, None) == files  # the same flags: kept
    before = {name: p.read_text() for name, p in files.items()}
    with pytest.raises(SystemExit, match="zoo-lenet5.yaml differs from what these files and flags give now"):
        bench.contender_files(path, out, ["lenet5"], 2, None)
    assert {name: p.read_text() for name, p in files.items()} == before
