"""`cnnlab score`, `bench`, `cost` and `profile` on a run trained here on synthetic data: no real
dataset, no network, so these run everywhere (the MNIST versions in tests/cost need the data)."""

import errno
import json

import pytest

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.dirs import RunDir
from cnnlab.train.loop import train

DATASET = "synthetic:shape=3x16x16,classes=4,train=320,test=64"
MODEL = "c8k3-relu-p2-c16k3-relu-p2-fc32-relu"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run: (run directory, its summary)."""
    out = tmp_path_factory.mktemp("offline") / "run"
    config = TrainConfig(dataset=DATASET, model=MODEL, epochs=2, batch_size=16, lr=1e-2, seed=1, threads=1,
                         device="cpu", out=str(out))
    summary = train(config, quiet=True)
    return out, summary


def cli_json(capsys, *argv):
    capsys.readouterr()  # drop anything printed before
    assert main([*map(str, argv), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def evaluated(run):
    """`cnnlab evaluate RUN --json` (test split, best weights), the independent reference."""
    from cnnlab.workflows.measure.evaluate import evaluate_run

    return evaluate_run(run[0], device="cpu", write=False)


def test_the_run_learned(run, evaluated):
    _, summary = run
    assert summary["test_count"] == 64 and evaluated["count"] == 64
    assert evaluated["accuracy"] == summary["test_acc"]
    # 4 classes, chance 0.25: the synthetic classes are learnable (0.75-0.98 over seeds 1-6 here)
    assert summary["test_acc"] >= 0.5


def test_evaluate_command_matches(run, evaluated, capsys):
    printed = cli_json(capsys, "evaluate", run[0], "--device", "cpu")
    assert printed["accuracy"] == evaluated["accuracy"] and printed["correct"] == evaluated["correct"]


def test_score(run, evaluated, capsys):
    out, summary = run
    printed = cli_json(capsys, "score", out)
    assert printed["test_accuracy"] == evaluated["accuracy"]
    assert (printed["test_correct"], printed["test_images"]) == (evaluated["correct"], 64)
    assert printed["error_percent"] == pytest.approx(100 * (64 - evaluated["correct"]) / 64)
    assert printed["accuracy_source"] == "evaluated on the test split"
    assert printed["input"] == [3, 16, 16] and printed["params"] == summary["params"]
    assert printed["metric"] == pytest.approx(printed["error_percent"] / 12 + printed["cycles"] / 300_000)
    assert printed["cycles"] > 0 and printed["energy_mj"] > 0
    assert "CIFAR-10" in printed["note"] and "summary.json says" not in printed["note"]  # agrees with summary
    rd = RunDir(out)
    assert rd.read_json(rd.score) == printed


def test_bench(run, evaluated, capsys):
    from cnnlab.workflows.measure.bench import COLUMNS

    out, _ = run
    rows = cli_json(capsys, "bench", out, "--devices", "cpu", "--batch-size", "16", "--runtimes", "torch")
    (cpu,) = rows
    assert list(cpu) == list(COLUMNS)
    assert cpu["device"] == "cpu" and cpu["status"] == "ok" and cpu["batch_size"] == 16
    assert cpu["latency_ms_batch1"] > 0 and cpu["latency_ms_per_image_batch"] > 0
    assert cpu["test_acc"] == evaluated["accuracy"]
    assert cpu["test_loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert cpu["score"] == pytest.approx(cpu["test_acc"] / (cpu["latency_ms_batch1"] / 1e3))
    metrics = RunDir(out).read_metrics()
    assert cpu["best_val_acc"] == max(m["val_acc"] for m in metrics)
    assert cpu["best_train_loss"] == min(m["train_loss"] for m in metrics)
    assert cpu["train_seconds_5_epochs"] is None  # only with --train
    rd = RunDir(out)
    assert rd.read_json(rd.bench_json) == rows
    lines = rd.bench_csv.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 2 and lines[1].startswith("cpu,ok,")


def test_cost_of_the_run(run, capsys):
    out, summary = run
    rep = cli_json(capsys, "cost", out)
    assert rep["input"] == [3, 16, 16]
    assert rep["layers"][0]["input"] == [1, 3, 16, 16] and rep["layers"][-1]["output"] == [1, 4]
    assert rep["totals"]["params"] == summary["params"]
    # the same figures as the spec built for that input and 4 classes
    by_spec = cli_json(capsys, "cost", MODEL, "--input", "3x16x16", "--classes", "4")
    assert rep["totals"] == by_spec["totals"] and rep["peak_activation_bytes"] == by_spec["peak_activation_bytes"]
    # the default input (3x32x32) or 10 classes would give other counts
    assert cli_json(capsys, "cost", MODEL, "--classes", "4")["totals"]["macs"] != rep["totals"]["macs"]
    assert cli_json(capsys, "cost", MODEL, "--input", "3x16x16")["totals"]["params"] != rep["totals"]["params"]


PROFILE = ["profile", "--model", "c4k3-relu-p2-fc10", "--batch-size", "4", "--input", "3x8x8", "--repeats", "1"]


def test_profile_json_file(tmp_path, capsys):
    printed = cli_json(capsys, *PROFILE, "--out", tmp_path)
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert saved == {k: v for k, v in printed.items() if k != "files"}
    assert printed["files"] == [str(tmp_path / "profile.png"), str(tmp_path / "profile.json")]


def test_profile_json_is_written_atomically(tmp_path, monkeypatch, capsys):
    """The disk fills while profile.json is written: one error line, and no torn or temporary file."""
    (tmp_path / "profile.json").write_text("{}")  # an older profile stays intact

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cnnlab.io.os.fsync", disk_full)
    assert main([*PROFILE, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "profile.json" in err and "the disk is full" in err
    assert (tmp_path / "profile.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json", "profile.png"]


def test_evaluate_an_exported_file_gives_the_runs_figures(run, evaluated, capsys, tmp_path):
    model = tmp_path / "model.onnx"
    assert main(["export", str(run[0]), "--format", "onnx", "--out", str(model)]) == 0
    printed = cli_json(capsys, "evaluate", model, "--device", "cpu")
    assert printed["runtime"] == "onnxruntime" and printed["count"] == evaluated["count"]
    assert printed["correct"] == evaluated["correct"]  # same predictions in ONNX Runtime as in PyTorch
    assert not list(tmp_path.glob("evaluation*"))  # a model file has no run directory to write into
