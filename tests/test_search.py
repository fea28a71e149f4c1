"""`cnnlab search`: the search file and the start checked before anything is written (one line,
no directory, no search.db), costing before training (as the network each trial trains), resuming
a killed search from its SQLite file, failing dead workers' trials and retrying each once, never
training a candidate twice, the objectives' registry, and two workers
sharing SQLite and a real PostgreSQL server (the `postgres` fixture of tests/conftest.py starts one
from Debian's postgresql package, which .ci/run installs; elsewhere the test says why it did not
run). Tiny synthetic data and nets. The study is read through Optuna's public API
(SearchDir.load_trials, open_study), never its tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna", reason="cnnlab search needs Optuna: pip install 'cnnlab[search]'")

from cnnlab.cli import main as cli  # noqa: E402
from cnnlab.dirs import RunDir  # noqa: E402
from cnnlab.dirs import SearchDir  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.workflows.search import load_search, open_study, spec_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:shape=3x8x8,classes=4,train=200,test=40"


def _search_file(tmp_path, **kw) -> Path:
    d = {
        "base": {"dataset": DATA, "epochs": 2, "batch_size": 40, "optimizer": "sgd", "lr": 0.05, "val_size": 40,
                 "threads": 1},
        "space": {"spec": "c{w}k3-relu-{pool}-fc4",
                  "params": {"w": {"choices": [2, 4, 8]}, "pool": {"choices": ["p2", ""]}},
                  "train": {"lr": {"float": [0.01, 0.1], "log": True}}},
        "constraints": {"max_params": 600},
        "trials": 6, "seed": 0, "stale_after": 3, "prune": False,
        "bound_prune": False,  # every cheap-enough candidate trains (tests/test_search_final.py tests the bound)
    }
    d.update(kw)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _trials(out, storage=None):
    search = load_search(_search_file_of(out), out)
    return open_study(search, storage).get_trials(deepcopy=False)


def _search_file_of(out):
    return Path(out).parent / "search.yaml"


def test_spec_text_drops_empty_choices():
    assert spec_text("c{w}k3-{pool}-[r[c{w}k3-{act}]]x2-fc4", {"w": 8, "pool": "", "act": ""}) == \
        "c8k3-[r[c8k3]]x2-fc4"


def test_bad_search_files_are_one_line(tmp_path):
    bad = [({"objective": "accuracy"}, "unknown objective 'accuracy'"),
           ({"space": {"spec": "c{w}k3", "params": {}}}, "the spec uses {w}"),
           ({"space": {"spec": "c8k3", "params": {"w": {"int": [3, 1]}}}}, "low > high"),
           ({"trials": 0}, "trials must be a positive integer"),
           ({"budget": 3}, "budget: unknown key")]
    for change, message in bad:
        with pytest.raises(CnnlabError, match=message.replace("{", r"\{").replace("[", r"\[")):
            load_search(_search_file(tmp_path, **change))


def test_pruning_sees_the_objective_lower_is_better(tmp_path):
    """The pruner gets the study's own objective (competition metric from the validation error and
    the candidate's cycles), not the accuracy: a minimising study would prune the best; and the
    objective of the best epoch so far, the value the trial ends with, so one bad epoch at a rung
    (a one-cycle schedule's peak) does not decide."""
    from cnnlab.workflows.search import PruneReport

    class Trial:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((value, step))

        def should_prune(self):
            return bool(self.reports) and self.reports[-1][0] > 2.0

    class Run:
        stopped = None

        def stop(self, reason, now=False):
            self.stopped = reason

    search = load_search(_search_file(tmp_path, prune=True))
    trial, run = Trial(), Run()
    hook = PruneReport(trial, search, {"cycles": 30000, "energy_mj": 0.1, "macs": 1, "params": 1})
    hook.on_epoch_end(run, {"epoch": 1, "val_acc": 0.85})
    assert trial.reports == [(pytest.approx(15 / 12 + 0.1), 1)] and not hook.pruned and run.stopped is None
    hook.on_epoch_end(run, {"epoch": 2, "val_acc": 0.70})  # worse: 30 % error -> 2.6, the best stays 1.35
    assert trial.reports[-1] == (pytest.approx(15 / 12 + 0.1), 2) and not hook.pruned
    worse = PruneReport(Trial(), search, {"cycles": 30000, "energy_mj": 0.1, "macs": 1, "params": 1})
    worse.on_epoch_end(run, {"epoch": 1, "val_acc": 0.70})
    assert worse.pruned and "after epoch 1" in run.stopped
    resumed = PruneReport(Trial(), search, {"cycles": 30000, "energy_mj": 0.1, "macs": 1, "params": 1},
                          reported={1: 1.35, 2: 1.35})  # a retry: epochs 1-2 were reported before
    resumed.on_epoch_end(run, {"epoch": 2, "val_acc": 0.5})
    resumed.on_epoch_end(run, {"epoch": 3, "val_acc": 0.88})
    assert resumed.trial.reports == [(pytest.approx(12 / 12 + 0.1), 3)]
    multi = load_search(_search_file(tmp_path, prune=True, objective=["error", "cycles"]))
    quiet = PruneReport(Trial(), multi, {"cycles": 1, "energy_mj": 0, "macs": 1, "params": 1})
    quiet.on_epoch_end(run, {"epoch": 1, "val_acc": 0.1})
    assert not quiet.trial.reports  # Optuna prunes single-objective studies only


def test_infeasible_candidates_never_train(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(["search", str(_search_file(tmp_path)), "--out", str(out)]) == 0
    trials = _trials(out)
    infeasible = [t for t in trials if "infeasible" in t.user_attrs]
    trained = [t for t in trials if t.state.name == "COMPLETE"]
    assert infeasible and trained
    for t in infeasible:  # costed, refused, and no run directory made
        assert t.state.name == "PRUNED" and t.user_attrs["params"] > 600 and "600" in t.user_attrs["infeasible"]
        assert not SearchDir(out).trial_dir(t.number).exists()
    for t in trained:
        assert t.user_attrs["params"] <= 600 and RunDir(SearchDir(out).trial_dir(t.number)).summary.is_file()
        assert t.value == pytest.approx(t.user_attrs["error"] / 12 + t.user_attrs["cycles"] / 300000)
    sd = SearchDir(out)
    assert sd.is_search() and sd.finished() and all(p.is_file() for p in sd.result_files)
    assert sd.pareto_png.read_bytes()[:4] == b"\x89PNG"
    from cnnlab.config import TrainConfig

    best = TrainConfig.load(sd.best_yaml)
    assert best.out is None and best.model in {t.user_attrs["model"] for t in trained}
    from cnnlab.workflows.report import report

    page = report([out], evaluate=False).path.read_text()  # the search's section in the HTML report
    assert page.count("Architecture search") >= 1 and 'id="search-trials"' in page
    assert "Pareto front" in page and page.count("data:image/png;base64") >= 2
    assert all(f"trial-{t.number:04d}" in page for t in trained)


def _finished(out):
    return [t for t in _trials(out) if t.state.name in ("COMPLETE", "PRUNED")]


def _count_finished(out: Path) -> int:
    """Finished trials, read through Optuna from the search's storage (0 until it exists)."""
    try:
        return sum(t.state.name in ("COMPLETE", "PRUNED") for t in SearchDir(out).load_trials())
    except Exception:  # search.db or its tables are not there yet
        return 0


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    path = _search_file(tmp_path, trials=12, constraints={})  # every trial trains (a second or so each)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and _count_finished(out) < 3:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # mid-way, most likely inside a trial
    proc.wait()
    before = {t.number: (t.state.name, dict(t.params)) for t in _finished(out)}
    assert 3 <= len(before) < 12
    stamps = {n: RunDir(SearchDir(out).trial_dir(n)).summary.stat().st_mtime_ns
              for n, (state, _) in before.items() if state == "COMPLETE"}
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    after = {t.number: (t.state.name, dict(t.params)) for t in _finished(out)}
    assert len(after) == 12 and all(after[n] == v for n, v in before.items())
    for n, stamp in stamps.items():  # finished trials were not trained again
        assert RunDir(SearchDir(out).trial_dir(n)).summary.stat().st_mtime_ns == stamp


def _check_shared(out, storage, trials):
    search = load_search(_search_file_of(out), out)
    got = open_study(search, storage).get_trials(deepcopy=False)
    done = [t for t in got if t.state.name in ("COMPLETE", "PRUNED")]
    assert trials <= len(done) <= trials + 1  # two workers may both start the last one
    assert len({t.number for t in got}) == len(got)  # no trial recorded twice
    proposals = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(proposals)) == len(proposals)  # and no candidate proposed twice (each worker its own seed)
    dirs = [t.user_attrs["run_dir"] for t in done if "run_dir" in t.user_attrs]
    assert len(dirs) == len(set(dirs))
    assert all(RunDir(d).summary.is_file() for d in dirs)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials


def test_two_workers_share_one_sqlite_search(tmp_path):
    path = _search_file(tmp_path, trials=8, constraints={})
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _check_shared(out, None, 8)


def test_two_workers_share_a_postgresql_search(tmp_path, postgres):
    path = _search_file(tmp_path, trials=6, constraints={})
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", "2",
                        "--storage", postgres], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not SearchDir(out).storage_file.exists()
    _check_shared(out, postgres, 6)


def _fails_writing_nothing(tmp_path, capsys, args, message):
    """`cnnlab search ARGS` is one error line holding `message`, exit 2, and writes nothing."""
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    assert cli(["search", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error: ") and "\n" not in err and message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # no search directory, no search.db


def test_unreachable_storage_is_one_line_and_leaves_no_directory(tmp_path, capsys):
    path = _search_file(tmp_path)
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s"), "--storage",
                                              "postgresql://nobody@127.0.0.1:1/none"],
                           "cannot open the search storage 127.0.0.1:1/none")


@pytest.mark.parametrize("storage, message", [
    ("foo", "--storage 'foo' is not a database URL: use sqlite:///"),
    ("foo://bar", "cannot open the search storage foo://bar"),
    ("sqlite:////no/such/folder/x.db", "check --storage"),
])
def test_a_bad_storage_url_is_one_line_and_writes_nothing(tmp_path, capsys, storage, message):
    path = _search_file(tmp_path)
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s"), "--storage", storage], message)


def test_a_missing_search_file_or_a_directory_is_one_line(tmp_path, capsys):
    _fails_writing_nothing(tmp_path, capsys, [str(tmp_path / "none.yaml")], "search file")
    (tmp_path / "runs").mkdir()
    _fails_writing_nothing(tmp_path, capsys, [str(tmp_path / "runs"), "--out", str(tmp_path / "s")],
                           "is a directory: give the search file (YAML)")


def test_an_unknown_or_missing_dataset_writes_nothing(tmp_path, capsys):
    """The dataset is checked before the storage is created: no search.db, no directory."""
    bad = _search_file(tmp_path, base={"dataset": "cifar-10", "epochs": 1})
    _fails_writing_nothing(tmp_path, capsys, [str(bad), "--out", str(tmp_path / "s")], "unknown dataset 'cifar-10'")
    mnist = _search_file(tmp_path, base={"dataset": "mnist", "epochs": 1})
    _fails_writing_nothing(tmp_path, capsys, [str(mnist), "--out", str(tmp_path / "s"), "--data-dir",
                                              str(tmp_path / "no-data"), "--workers", "2"], "data directory")


def test_trials_from_the_flag_are_blamed_on_the_flag(tmp_path, capsys):
    path = _search_file(tmp_path)
    for n in ("0", "-2"):
        _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s"), "--trials", n],
                               f"--trials must be a positive integer (finished trials to reach), got {n}")
    assert "search.yaml" not in capsys.readouterr().err


def _line_of(path, text):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("key, dist, message", [
    ("w", {"int": [8, 2]}, "int range [8, 2] has low > high: write it as [2, 8]"),
    ("lr", {"float": [-0.1, 0.1], "log": True}, "log: true needs a positive range"),
    ("lr", {"float": [0.0, 0.1], "log": True}, "log: true needs a positive range"),
    ("lr", {"float": [-0.1, 0.1]}, "lr must be a positive finite number, and this range holds -0.1"),
    ("w", {"int": [2, 8], "step": 16}, "step 16 is larger than the range [2, 8]"),
    ("w", {"int": [2, 9], "step": 2}, "not a whole number of steps of 2: use high = 8 or 10"),
    ("w", {"choices": []}, "choices must be a non-empty list"),
    ("lr", {"float": [0.01, "high"]}, "float must be [low, high], two numbers"),
    ("w", {"int": [2.5, 8]}, "int must be [low, high], two whole numbers"),
    ("w", {"int": [2, 8], "stpe": 2}, "unknown key 'stpe'"),
    ("lr", {"float": [0.01, 0.1], "log": True, "step": 0.01}, "step and log: true cannot go together"),
    ("epochs", {"float": [1, 3]}, "'epochs' in"),
])
def test_a_bad_distribution_is_one_line_naming_its_line_and_key(tmp_path, capsys, key, dist, message):
    """Every distribution is checked when the file loads: one line with the file's line and the key,
    exit 2, and no search directory or search.db."""
    space = {"spec": "c{w}k3-relu-fc4", "params": {"w": {"choices": [2, 4]}}, "train": {"lr": {"float": [0.01, 0.1]}}}
    group = "params" if key == "w" else "train"
    space[group][key] = dist
    path = _search_file(tmp_path, space=space)
    line = _line_of(path, f"    {key}:")
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s")],
                           f"search.yaml line {line}: space.{group}.{key}")
    _fails_writing_nothing(tmp_path, capsys, [str(path), "--out", str(tmp_path / "s")], message)


def test_a_candidate_is_trained_once(tmp_path):
    """A space of one candidate: the first trial trains, every later one is recorded as its
    duplicate (pruned, counted toward trials) and trains nothing."""
    space = {"spec": "c{w}k3-relu-fc4", "params": {"w": {"choices": [4]}}}
    path = _search_file(tmp_path, space=space, trials=3, constraints={}, sampler="random")
    out = tmp_path / "s"
    assert cli(["search", str(path), "--out", str(out)]) == 0
    trials = _trials(out)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [t.user_attrs.get("duplicate") for t in trials] == [None, 0, 0]
    assert not SearchDir(out).trial_dir(1).exists() and not SearchDir(out).trial_dir(2).exists()
    assert SearchDir(out).read_best()["duplicates"] == 2


def test_a_resumed_search_proposes_new_candidates(tmp_path):
    """Run again with a larger --trials, each worker's sampler gets a new seed: the first run's
    candidates are not proposed (and trained) again."""
    path = _search_file(tmp_path, trials=2, constraints={}, sampler="random")
    out = tmp_path / "s"
    assert cli(["search", str(path), "--out", str(out)]) == 0
    assert cli(["search", str(path), "--out", str(out), "--trials", "4"]) == 0
    trials = _trials(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4


def test_multi_objective_search_keeps_a_pareto_front_and_measures_latency(tmp_path):
    path = _search_file(tmp_path, trials=4, constraints={}, objective=["error", "cycles", "latency"])
    out = tmp_path / "s"
    assert cli(["search", str(path), "--out", str(out), "--json"]) == 0
    search = load_search(path, out)
    study = open_study(search, None)
    assert len(study.directions) == 3 and type(study.sampler).__name__ == "NSGAIISampler"
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert done and all(len(t.values) == 3 and t.values[2] == t.user_attrs["latency_ms"] > 0 for t in done)
    best = SearchDir(out).read_best()
    front = {t.number for t in study.best_trials}
    assert best["trial"] in front and best["values"] == [t.values for t in done if t.number == best["trial"]][0]


def test_a_candidate_is_costed_as_the_network_its_trial_trains(tmp_path, capsys):
    """With resize and input_channels in the base, the search costs the adapted network (3x12x12
    layers behind the adapter), exactly as `cnnlab cost RUN` costs the trial's trained model."""
    base = {"dataset": "synthetic:shape=1x8x8,classes=4,train=120,test=20", "resize": 12, "input_channels": 3,
            "epochs": 1, "batch_size": 40, "optimizer": "sgd", "lr": 0.05, "val_size": 20, "threads": 1}
    path = _search_file(tmp_path, base=base, trials=2, constraints={})
    out = tmp_path / "s"
    assert cli(["search", str(path), "--out", str(out)]) == 0
    trained = [t for t in _trials(out) if t.state.name == "COMPLETE"]
    assert trained
    import json

    from cnnlab.cost.report import analyze
    from cnnlab.models import create_model

    for t in trained:
        capsys.readouterr()
        assert cli(["cost", t.user_attrs["run_dir"], "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["input"] == [1, 8, 8]
        a = t.user_attrs
        assert (a["cycles"], a["macs"], a["params"], a["peak_activation"]) == (
            rep["totals"]["cycles"], rep["totals"]["macs"], rep["totals"]["params"], rep["peak_activation_bytes"])
        assert a["energy_mj"] == pytest.approx(rep["totals"]["energy_mj"])
        bare = analyze(create_model(a["model"], num_classes=4, in_channels=1, input_size=(8, 8)), (1, 8, 8))
        assert bare.totals["cycles"] != a["cycles"]  # the spec alone, on the raw images, is another network


def test_a_trial_left_running_without_a_heartbeat_is_failed(tmp_path):
    """A worker killed between Optuna creating a trial and the trial's first heartbeat leaves a
    RUNNING trial with no `started` mark: the next worker fails it (Study.tell), and leaves a
    marked one to Optuna's heartbeat check."""
    import warnings

    from cnnlab.workflows.search.optuna_adapter import fail_dead, mark_started, open_storage

    search = load_search(_search_file(tmp_path, stale_after=60), tmp_path / "s")  # no heartbeat goes stale here
    rdb = open_storage(search)
    study = open_study(search, rdb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna: heartbeats are meant for Study.optimize, which asks this way
        orphan, alive = study.ask(), study.ask()
    mark_started(study, rdb, alive)
    time.sleep(1.1)
    fail_dead(study, after=1)
    states = {t.number: t.state.name for t in SearchDir(search.out).load_trials()}
    assert states == {orphan.number: "FAIL", alive.number: "RUNNING"}


def test_a_retry_left_running_without_its_own_heartbeat_is_queued_again(tmp_path):
    """A retry carries the `started` mark of the trial it retries: one whose worker died before its
    own mark is still failed, and queued again with its parameters (its retry history names it)."""
    import warnings

    from cnnlab.workflows.search.optuna_adapter import fail_dead, mark_started, open_storage, retry_interrupted

    search = load_search(_search_file(tmp_path, stale_after=60), tmp_path / "s")
    rdb = open_storage(search)
    study = open_study(search, rdb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = study.ask({"w": optuna.distributions.CategoricalDistribution([2, 4, 8])})
        mark_started(study, rdb, first)
        retry_interrupted(study, first.number)
        time.sleep(1.1)
        retry = study.ask()  # the queued retry, taken by a worker that dies at once
    assert retry.params == first.params
    time.sleep(1.1)
    fail_dead(study, after=1)
    trials = {t.number: t for t in SearchDir(search.out).load_trials()}
    assert trials[retry.number].state.name == "FAIL" and trials[first.number].state.name == "RUNNING"
    again = [t for t in trials.values() if t.state.name == "WAITING"]
    assert len(again) == 1 and again[0].params == first.params
    assert again[0].system_attrs["retry_history"] == [first.number, retry.number]


def test_objectives_are_one_registry():
    from cnnlab.workflows.search import OBJECTIVES, objective, objective_values

    figures = {"error": 12.0, "cycles": 30000, "energy_mj": 0.5, "macs": 7, "params": 9, "latency_ms": 1.5}
    assert objective_values(list(OBJECTIVES), figures) == [pytest.approx(1.1), 12.0, 30000, 0.5, 7, 9, 1.5]
    assert all(o.direction == "minimize" for o in OBJECTIVES.values())

    @objective("accuracy", "validation accuracy, %", direction="maximize")
    def accuracy(f):
        return 100 - f["error"]

    try:
        assert objective_values(["accuracy"], figures) == [88.0]
        with pytest.raises(ValueError, match="direction"):
            objective("bad", "?", direction="lower")
    finally:
        del OBJECTIVES["accuracy"]


def _running_workers(out) -> dict:
    """{trial number: worker pid} of the RUNNING trials that have started (a heartbeat recorded)."""
    try:
        trials = SearchDir(out).load_trials()
    except Exception:  # search.db or its tables are not there yet
        return {}
    return {t.number: t.user_attrs["worker"] for t in trials
            if t.state.name == "RUNNING" and "started" in t.user_attrs and "worker" in t.user_attrs}


def test_a_killed_two_worker_search_retries_each_killed_trial_once(tmp_path):
    """Both workers SIGKILLed mid-trial, the command run again: each killed trial is retried once
    (not once per worker that saw it stale), and no candidate is trained twice."""
    base = {"dataset": "synthetic:shape=3x8x8,classes=4,train=640,test=40", "epochs": 3, "batch_size": 20,
            "optimizer": "sgd", "lr": 0.05, "val_size": 40, "threads": 1}  # a trial of a second or two
    path = _search_file(tmp_path, base=base, trials=4, constraints={}, stale_after=2)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        busy = {}
        while time.time() < deadline and len(set(busy.values())) < 2 and proc.poll() is None:
            busy = _running_workers(out)
        assert len(set(busy.values())) == 2, "both workers should be inside a trial"
        for pid in set(busy.values()):
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == 2  # the parent reports its killed workers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = list(_running_workers(out))  # left RUNNING by the killed workers
    assert killed
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    trials = SearchDir(out).load_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    proposals = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(proposals)) == len(proposals), "a candidate was trained twice"
    assert 4 <= sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) <= 5  # one may overshoot
    for n in killed:  # retried exactly once, with its parameters
        retries = [t for t in trials if t.system_attrs.get("retry_history", [])[-1:] == [n]]
        assert len(retries) == 1 and retries[0].params == next(t.params for t in trials if t.number == n)


def test_a_sqlite_transaction_holds_the_write_lock_from_its_first_read(tmp_path):
    """Optuna reads a trial's state and then writes it (failing a dead trial, taking a queued one)
    in one transaction; on SQLite that transaction begins IMMEDIATE, so a second worker cannot
    read the old state in between (it waits for the lock)."""
    import sqlite3

    from cnnlab.workflows.search.optuna_adapter import open_storage

    search = load_search(_search_file(tmp_path), tmp_path / "s")
    rdb = open_storage(search)
    with rdb.engine.connect() as conn:  # SQLAlchemy's own engine: how Optuna's sessions connect
        conn.exec_driver_sql("SELECT count(*) FROM trials").fetchall()
        other = sqlite3.connect(search.dir.storage_file, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()


def test_a_changed_objective_is_one_line_before_any_trial(tmp_path, capsys):
    """A study keeps the objectives it was created with: the same --out with another objective is
    refused when the study opens, not by a traceback in each trial."""
    out = tmp_path / "s"
    open_study(load_search(_search_file(tmp_path), out))
    changed = _search_file(tmp_path, objective=["error", "cycles"])
    assert cli(["search", str(changed), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "optimises competition, but" in err and "error, cycles" in err and "\n" not in err
    assert not SearchDir(out).trials.exists()


LONG = {"dataset": "synthetic:shape=3x8x8,classes=4,train=640,test=40", "epochs": 30, "batch_size": 20,
        "optimizer": "sgd", "lr": 0.05, "val_size": 40, "threads": 1}  # a trial of several seconds


def _epochs_done(run_dir) -> int:
    try:
        return len(RunDir(run_dir).read_metrics())
    except Exception:  # not written yet
        return 0


def _assert_continued(out, stopped: int, retry, pruned: bool = False, epochs: int = LONG["epochs"]) -> None:
    """`retry` (a FrozenTrial) continued trial `stopped`'s run: its directory moved, every one of
    its `epochs` trained once (and, in a `pruned` search, reported to the pruner once), the stopped
    run resumed from its checkpoint."""
    sd = SearchDir(out)
    assert retry.state.name == "COMPLETE" and retry.system_attrs["retry_history"][-1] == stopped
    assert not sd.trial_dir(stopped).exists()
    run = RunDir(sd.trial_dir(retry.number))
    assert [int(m["epoch"]) for m in run.read_metrics()] == list(range(1, epochs + 1))
    assert any(line.startswith("resumed at epoch") for line in run.read_log())
    assert sorted(retry.intermediate_values) == (list(range(1, epochs + 1)) if pruned else [])


def test_a_stopped_search_continues_its_trial_from_its_checkpoint(tmp_path):
    """SIGTERM in a trial: one line naming the trial and how to go on (no Optuna traceback), exit
    130; run again, the trial's retry moves its run directory and resumes it (no epoch trained or
    reported twice, the pruner's rung kept)."""
    path = _search_file(tmp_path, base=LONG, trials=1, constraints={}, prune="halving",
                        fidelity={"min_epochs": 2, "reduction_factor": 3})
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _epochs_done(SearchDir(out).trial_dir(0)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "in trial 0; run the same cnnlab search command again to continue" in err
    assert "completed_rung_0" in SearchDir(out).load_trials()[0].system_attrs  # epoch 2's rung passed
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stopped, retry = SearchDir(out).load_trials()
    assert stopped.state.name == "FAIL"
    _assert_continued(out, 0, retry, pruned=True)


def test_a_stopped_two_worker_search_stops_every_worker_and_continues(tmp_path):
    """SIGTERM to `cnnlab search --workers 2` while both workers train: the signal reaches each
    worker, every process has exited when the command returns 130, and the next run continues
    both stopped trials from their checkpoints."""
    # trials 3x LONG's: a worker slow to start (a cold machine's first imports) would otherwise find
    # the other's first trial done and both trials taken, and no moment would have both inside one
    epochs = 3 * LONG["epochs"]
    path = _search_file(tmp_path, base={**LONG, "epochs": epochs}, trials=2, constraints={},
                        stale_after=60)  # no trial seen as stale
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    busy = {}
    while time.time() < deadline and proc.poll() is None and not (
            len(busy) == 2 and all(_epochs_done(SearchDir(out).trial_dir(n)) >= 2 for n in busy)):
        busy = _running_workers(out)
        time.sleep(0.05)
    if len(busy) != 2:  # say why: the command had ended (its last lines say how), or its workers were slow
        running = proc.poll() is None
        proc.send_signal(signal.SIGTERM)  # forwarded to its workers
        said = proc.communicate(timeout=60)[1]
        pytest.fail(f"both workers should be inside a trial, {len(busy)} were after {time.time() - deadline + 120:.0f} "
                    f"s; the command {'was still running' if running else 'had exited'}: {said[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cnnlab: stopped by SIGTERM; run the same")
    for pid in busy.values():  # no worker left training on its own
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    trials = SearchDir(out).load_trials()
    for n in busy:  # continued by its retry, or (signalled as its last epoch ended) recorded as it finished
        if next(t for t in trials if t.number == n).state.name == "COMPLETE":
            continue
        retry = next(t for t in trials if t.system_attrs.get("retry_history", [])[-1:] == [n])
        _assert_continued(out, n, retry, epochs=epochs)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2


def test_a_retried_trial_whose_run_had_finished_is_not_trained_again(tmp_path):
    """A worker killed after its trial's run finished but before Optuna recorded the result: the
    retry takes the finished run as it is (moved to its number, no epoch trained) and completes."""
    import warnings

    from cnnlab.config import TrainConfig
    from cnnlab.train.loop import train
    from cnnlab.workflows.search import work
    from cnnlab.workflows.search.optuna_adapter import mark_started, open_storage, retry_interrupted
    from cnnlab.workflows.search.space import sample

    search = load_search(_search_file(tmp_path, trials=1, constraints={}, stale_after=60), tmp_path / "s")
    rdb = open_storage(search)
    study = open_study(search, rdb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dead = study.ask()
    mark_started(study, rdb, dead)
    model, overrides = sample(search, dead)
    run_dir = SearchDir(search.out).trial_dir(dead.number)
    train(TrainConfig.from_dict({**search.base, **overrides, "model": model, "out": str(run_dir)}), quiet=True)
    metrics = RunDir(run_dir).metrics.read_text()
    study.tell(dead.number, state=optuna.trial.TrialState.FAIL)  # as the stale check does for a killed worker
    retry_interrupted(study, dead.number)
    rdb.engine.dispose()
    work(search, log=lambda line: None)
    retry = [t for t in SearchDir(search.out).load_trials() if t.state.name == "COMPLETE"]
    assert len(retry) == 1 and retry[0].system_attrs["retry_history"] == [dead.number]
    moved = RunDir(SearchDir(search.out).trial_dir(retry[0].number))
    assert moved.metrics.read_text() == metrics and not run_dir.exists()
    assert not any(line.startswith("resumed") for line in moved.read_log())
    assert retry[0].user_attrs["error"] == pytest.approx(100 * (1 - moved.read_summary()["best_val_acc"]))


def test_each_of_n_workers_trains_on_its_share_of_the_cores(tmp_path):
    """`--workers 2` without `threads` in the base: every trial trains with cores // 2 threads (at
    least 1), not every core each (workers starting at once on an idle machine each saw no load)."""
    from cnnlab.envinfo import cpu_cores

    base = {"dataset": DATA, "epochs": 1, "batch_size": 40, "optimizer": "sgd", "lr": 0.05, "val_size": 40}
    path = _search_file(tmp_path, base=base, trials=4, constraints={})
    out = tmp_path / "s"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-m", "cnnlab", "search", str(path), "--out", str(out), "--workers", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    trained = [RunDir(SearchDir(out).trial_dir(t.number)) for t in SearchDir(out).load_trials()
               if "run_dir" in t.user_attrs]
    assert trained
    assert {rd.read_summary()["threads"]["torch"] for rd in trained} == {max(1, cpu_cores() // 2)}
