"""Study files: whole-file validation with line numbers, the runner's skip/resume logic,
the table and the plots (with a fake trainer), and real end-to-end studies."""

import argparse
import csv
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from cnnlab.errors import CnnlabError
from cnnlab.workflows.study import load_study, mean_std, run_study

GOOD = """\
description: two optimizers
base:
  model: c4k3-relu-p2-fc8-relu
  dataset: "synthetic:shape=1x8x8,classes=3,train=120,test=30"
  epochs: 2
  batch_size: 32
experiments:
  sgd:
    optimizer: sgd
    lr: 0.05
  adam:
    optimizer: adam
seeds: 2
"""


def _write(tmp_path, text, name="study.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_expands_to_runs(tmp_path):
    study = load_study(_write(tmp_path, GOOD), out=tmp_path / "out")
    assert [(r.experiment, r.seed) for r in study.runs] == [("sgd", 0), ("sgd", 1), ("adam", 0), ("adam", 1)]
    sgd1 = study.runs[1].config
    assert sgd1.optimizer == "sgd" and sgd1.lr == 0.05 and sgd1.seed == 1 and sgd1.epochs == 2
    assert sgd1.out == str(tmp_path / "out" / "runs" / "sgd" / "seed1")
    assert study.runs[2].config.lr is None
    assert len(load_study(study.path, seeds=3).seeds) == 3


@pytest.mark.parametrize("old,new,line,message", [
    ("seeds: 2", "seedz: 2", 13, "unknown key 'seedz' in the study file"),
    ("  epochs: 2", "  epoch: 2", 5, "unknown key 'epoch' in base (did you mean 'epochs'?)"),
    ("    lr: 0.05", "    learning_rate: 0.05", 10, "unknown key 'learning_rate' in experiment 'sgd'"),
    ("    lr: 0.05", "    lr: fast", 10, "'lr' in experiment 'sgd' must be float or null, got 'fast'"),
    ("  epochs: 2", "  epochs: 2.5", 5, "'epochs' in base must be int"),
    ("    optimizer: adam", "    optimizer: adamax", 11, "experiment 'adam': unknown optimizer 'adamax'"),
    ("    optimizer: adam", "    schedule: cyclical", 11, "experiment 'adam': unknown schedule 'cyclical'"),
    ("    optimizer: adam", "    schedule_args: {gamma: 0.5}", 11, "experiment 'adam': bad argument for schedule 'none'"),
    ("    optimizer: adam", "    model: resnet21", 11, "experiment 'adam': unknown model 'resnet21' (did you mean"),
    ("    optimizer: adam", "    model: c4k3-relu-q2", 11, "experiment 'adam': bad token 'q2'"),
    ("    optimizer: adam", "    optimizer_args: {lookahead_k: 0}", 11, "experiment 'adam': bad optimizer_args"),
    ("    optimizer: adam", "    out: somewhere", 12, "'out' cannot be set in a study"),
    ("  batch_size: 32", "  seed: 3", 6, "'seed' cannot be set in a study"),
    ("seeds: 2", "seeds: [1, two]", 13, "`seeds:` must be a count"),
    ("seeds: 2", "budget_seconds: -5", 13, "`budget_seconds:` must be a positive number"),
    ("  adam:\n    optimizer: adam", "  adam: [adam]", 11, "experiment 'adam' must be a mapping"),
    ("  sgd:", "  s g d:", 8, "experiment name 's g d'"),
])
def test_bad_files_are_rejected_with_their_line(tmp_path, old, new, line, message):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    trained = []
    with pytest.raises(CnnlabError) as e:
        run_study(load_study(path, out=tmp_path / "out"), trainer=lambda *a, **k: trained.append(a))
    assert f"line {line}" in str(e.value) and message in str(e.value), str(e.value)
    assert not trained and not (tmp_path / "out").exists()


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(CnnlabError, match=r"line 5 \(in what starts on line 4\): not valid YAML"):
        load_study(_write(tmp_path, "base:\n  model: lenet5\nexperiments:\n  a: {optimizer: sgd\n"))


def test_budget_seconds_gives_every_run_a_time_limit(tmp_path):
    path = _write(tmp_path, GOOD + "budget_seconds: 30\n")
    study = load_study(path)
    assert study.budget_seconds == 30
    assert all(run.config.max_seconds == 30 for run in study.runs)


def test_shipped_examples_are_valid():
    """Every example file: a study (or, with a `space:`, a search file, checked whole the same way)."""
    from cnnlab.workflows.search import load_search

    examples = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        if "space" in yaml.safe_load(path.read_text()):
            search = load_search(path)
            assert search.trials >= 1 and search.params
            continue
        study = load_study(path)
        assert study.runs


def fake_trainer(calls):
    """Writes what the real trainer writes, with made-up numbers that depend on the run."""

    def train(config, resume=None):
        if resume is not None:
            calls.append(("resume", resume))
            out = Path(resume)
        else:
            calls.append(("train", config.out))
            out = Path(config.out)
            out.mkdir(parents=True)
        acc = (0.8 if "sgd" in str(out) else 0.6) + 0.01 * (1 if str(out).endswith("1") else 0)
        (out / "iterations.csv").write_text("step,epoch,loss,lr\n" + "".join(
            f"{s},{1 + (s - 1) // 5},{2.0 / s:.4f},0.1\n" for s in range(1, 11)))
        (out / "metrics.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                         f"1,1.0,0.5,1.0,{acc - 0.1},0.1,1.5\n2,0.5,0.7,0.8,{acc},0.1,1.5\n")
        summary = {"test_acc": acc, "best_val_acc": acc + 0.02, "train_seconds": 3.0, "epochs_run": 2,
                   "params": 1234}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    return train


def test_table_and_plots(tmp_path):
    calls = []
    study = load_study(_write(tmp_path, GOOD), out=tmp_path / "out")
    results = run_study(study, trainer=fake_trainer(calls), log=lambda s: None)
    assert len(calls) == 4
    assert results["sgd"]["test_acc"] == pytest.approx(mean_std([0.80, 0.81]))
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| sgd | 2 | 80.50 ± 0.71 | 82.50 ± 0.71 | 3.0 ± 0.0 | 2 | 1.2K |" in md
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [r["experiment"] for r in rows] == ["sgd", "adam"]
    assert float(rows[1]["test_acc_mean"]) == pytest.approx(0.605) and int(rows[0]["macs"]) > 0
    for png in ("train_loss.png", "val_acc.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_killed_study_skips_finished_runs_and_resumes_the_partial_one(tmp_path):
    calls = []
    inner = fake_trainer(calls)

    def dies_on_third(config, resume=None):
        if len(calls) == 2:  # killed mid-run after its first checkpoint
            Path(config.out, "checkpoints").mkdir(parents=True)
            Path(config.out, "checkpoints", "last.pt").write_bytes(b"")
            raise KeyboardInterrupt
        return inner(config, resume)

    study = load_study(_write(tmp_path, GOOD), out=tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_study(study, trainer=dies_on_third, log=lambda s: None)
    assert len(calls) == 2
    calls.clear()
    log = []
    run_study(load_study(study.path, out=tmp_path / "out"), trainer=inner, log=log.append)
    out = tmp_path / "out" / "runs"
    assert calls == [("resume", str(out / "adam" / "seed0")), ("train", str(out / "adam" / "seed1"))]
    assert sum("skipped" in line for line in log) == 2


def _cli(argv):
    from cnnlab.commands import study

    parser = argparse.ArgumentParser()
    study.add_parser(parser.add_subparsers())
    args = parser.parse_args(["study", *argv])
    return args.func(args)


def test_end_to_end_with_the_real_trainer_on_synthetic_data(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("seeds: 2", "seeds: 1"))
    assert _cli([str(path), "--out", str(tmp_path / "out"), "--check"]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert _cli([str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| sgd | 1 |" in out and "| adam | 1 |" in out
    summary = json.loads((tmp_path / "out" / "runs" / "adam" / "seed0" / "summary.json").read_text())
    import csv

    with open(tmp_path / "out" / "results.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["experiment"] == "adam")
    assert float(row["test_acc_mean"]) == pytest.approx(summary["test_acc"]) and summary["test_count"] == 30


@pytest.mark.realdata
def test_mnist_study_end_to_end_then_restart_skips(tmp_path, real_dataset, data_dir):
    real_dataset("mnist")  # skips (or fails under CNNLAB_REQUIRE_DATA=1) when MNIST is unavailable
    from cnnlab.workflows.study import default_trainer

    path = _write(tmp_path, f"""\
        base:
          model: c8k3-relu-p2-fc32-relu
          dataset: mnist
          data_dir: {json.dumps(data_dir)}
          subset: 2000
          val_size: 500
          epochs: 1
          batch_size: 64
          threads: 1
        experiments:
          sgd: {{optimizer: sgd, lr: 0.05}}
          adam: {{optimizer: adam}}
        seeds: 2
        """)
    calls = []

    def killed_after_two(config, resume=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(config.out)
        return default_trainer(config, resume)

    study = load_study(path, out=tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_study(study, trainer=killed_after_two, log=lambda s: None)
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").glob("*/*/summary.json")}
    assert len(finished) == 2

    calls.clear()

    def counting(config, resume=None):
        calls.append(config.out)
        return default_trainer(config, resume)

    results = run_study(load_study(path, out=tmp_path / "out"), trainer=counting, log=lambda s: None)
    assert [Path(c).parts[-2:] for c in calls] == [("adam", "seed0"), ("adam", "seed1")]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert results["sgd"]["runs"] == results["adam"]["runs"] == 2
    assert results["sgd"]["test_acc"][0] > 0.5 and results["adam"]["test_acc"][0] > 0.5  # chance is 0.1
    for name in ("results.md", "results.csv", "train_loss.png", "val_acc.png"):
        assert (tmp_path / "out" / name).exists()


def test_the_study_directory_names_its_files_and_reads_its_state(tmp_path):
    from cnnlab.dirs import StudyDir

    out = tmp_path / "out"
    sd = StudyDir(out)
    assert not sd.is_study() and sd.progress() == {} and sd.read_results() == []
    with pytest.raises(CnnlabError, match="does not exist"):
        sd.check()
    study = load_study(_write(tmp_path, GOOD), out=out)
    assert study.dir.path == out and [r.run_dir for r in study.runs][:2] == [sd.run_dir("sgd", 0), sd.run_dir("sgd", 1)]
    assert StudyDir.default_for(study.path).path == Path("runs") / "study-study"
    calls = []
    inner = fake_trainer(calls)

    def two_then_stop(config, resume=None):
        if len(calls) == 3:
            raise KeyboardInterrupt
        inner(config, resume)
        Path(config.out, "config.yaml").write_text("{}\n")
        Path(config.out, "checkpoints").mkdir()

    with pytest.raises(KeyboardInterrupt):
        run_study(study, trainer=two_then_stop, log=lambda s: None)
    assert sd.check() is sd and sd.study_file.read_text() == study.path.read_text()
    assert [label for label, _ in sd.list_runs()] == ["adam/seed0", "sgd/seed0", "sgd/seed1"]
    assert sd.progress() == {"adam": {"runs": 1, "finished": 1}, "sgd": {"runs": 2, "finished": 2}}
    assert sd.read_results() == []
    (tmp_path / "plain").mkdir()
    with pytest.raises(CnnlabError, match="not a cnnlab study directory"):
        StudyDir(tmp_path / "plain").check()
