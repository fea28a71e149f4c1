"""The competition score and the device benchmark, end to end on a real short run."""

import json

import pytest
import torch

from cnnlab.cli import main
from cnnlab.cost.score import ranking_metric, rubric


def test_rubric_bands():
    r = rubric(error_percent=8.0, energy_mj=0.4, cycles=90_000, peak_activation=500_000)
    assert r["points_by_part"] == {"error": 70, "energy": 20, "latency": 20} and r["points"] == 110
    r = rubric(error_percent=45.0, energy_mj=1.9, cycles=999_999, peak_activation=10)
    assert r["points_by_part"] == {"error": 30, "energy": 5, "latency": 5}
    r = rubric(error_percent=4.9, energy_mj=2.0, cycles=1_000_000, peak_activation=10)
    assert r["points_by_part"] == {"error": 80, "energy": 0, "latency": 0}
    assert rubric(20.0, 1.2, 300_000, 10)["points_by_part"] == {"error": 50, "energy": 10, "latency": 10}


def test_error_band_on_exact_counts():
    """80.00 % accuracy is 20 % error exactly: the 20-29 % band (50 points), even though float32
    arithmetic makes it 19.9999988 %, which the 10-19 % band (60 points) would take."""
    error32 = 100 * (1 - float(torch.tensor(0.8, dtype=torch.float32)))
    assert error32 < 20
    assert rubric(error32, 1.2, 300_000, 10)["points_by_part"]["error"] == 60  # the float trap
    assert rubric(error32, 1.2, 300_000, 10, counts=(2000, 10000))["points_by_part"]["error"] == 50
    assert rubric(40.0, 1.2, 300_000, 10, counts=(4000, 10000))["points_by_part"]["error"] == 30
    assert rubric(39.99, 1.2, 300_000, 10, counts=(3999, 10000))["points_by_part"]["error"] == 40
    r = rubric(49.99, 1.2, 300_000, 10, counts=(5000, 10000))  # exactly 50 % error fails the hard limit
    assert r["points"] == 0 and "test error" in r["hard_constraints_failed"][0]


def test_hard_constraints_give_zero_points():
    r = rubric(error_percent=10.0, energy_mj=0.1, cycles=1000, peak_activation=1_000_000)
    assert r["points"] == 0 and "peak activation" in r["hard_constraints_failed"][0]
    r = rubric(error_percent=50.0, energy_mj=0.1, cycles=1000, peak_activation=10)
    assert r["points"] == 0 and "test error" in r["hard_constraints_failed"][0]
    assert rubric(10.0, 0.1, 1000, 999_999)["points"] > 0


def test_ranking_metric():
    assert ranking_metric(12.0, 300_000) == pytest.approx(2.0)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    from tests.realruns import mnist_lenet

    return mnist_lenet(tmp_path_factory, "--subset", "2000")


@pytest.mark.realdata
def test_score_end_to_end(short_run, capsys):
    assert main(["score", str(short_run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((short_run / "score.json").read_text())
    assert printed == saved
    summary = json.loads((short_run / "summary.json").read_text())
    assert saved["error_percent"] == pytest.approx(100 * (1 - summary["test_acc"]))
    assert saved["accuracy_source"] == "evaluated on the test split"
    assert saved["test_correct"] == round(summary["test_acc"] * saved["test_images"])
    # MNIST's 1x28x28 LeNet-5 pads conv1 by 2: (1*28*28 + 6*28*28) * 4 bytes.
    assert saved["peak_activation_bytes"] == (28 * 28 + 6 * 28 * 28) * 4
    assert saved["metric"] == pytest.approx(saved["error_percent"] / 12 + saved["cycles"] / 300_000)
    assert saved["cycles"] > 0 and saved["energy_mj"] > 0 and "note" in saved  # not CIFAR-10
    assert main(["score", str(short_run)]) == 0
    assert "metric" in capsys.readouterr().out


@pytest.mark.realdata
def test_score_ignores_a_hand_edited_summary(short_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(short_run, run)
    summary = json.loads((run / "summary.json").read_text())
    honest = summary["test_acc"]
    summary["test_acc"] = 0.999
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["score", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["test_accuracy"] == pytest.approx(honest, abs=1e-12)
    assert "summary.json says 99.90%" in s["note"]


@pytest.mark.realdata
def test_bench_end_to_end(short_run, capsys):
    assert main(["bench", str(short_run), "--devices", "cpu,cuda", "--batch-size", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    from cnnlab.workflows.export import auto_runtimes

    # a run is measured on every runtime installed here by default (PyTorch first), each device in turn
    assert [(r["device"], r["runtime"]) for r in rows] == [(d, rt) for d in ("cpu", "cuda") for rt in auto_runtimes()]
    cpu, cuda = rows[0], rows[len(auto_runtimes())]
    assert cpu["runtime"] == "torch" and cpu["device"] == "cpu" and cpu["status"] == "ok"
    for other in rows[1:len(auto_runtimes())]:  # converted runtimes agree within 1e-4: the same accuracy here
        assert other["status"] == "ok" and other["test_acc"] == pytest.approx(cpu["test_acc"], abs=5e-4)  # a near-tie may flip
    # the same best weights on the same test split as the run's own final evaluation: the same figures
    summary = json.loads((short_run / "summary.json").read_text())
    assert cpu["test_acc"] == pytest.approx(summary["test_acc"], abs=0.5 / summary["test_count"])
    assert cpu["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-4)
    assert cpu["test_acc"] > 0.5  # ten classes: far above chance after an epoch of LeNet-5
    assert cpu["latency_ms_batch1"] > 0 and cpu["latency_ms_per_image_batch"] > 0 and cpu["batch_size"] == 32
    assert cpu["score"] == pytest.approx(cpu["test_acc"] / (cpu["latency_ms_batch1"] / 1e3))
    assert cpu["best_val_acc"] is not None and cpu["best_train_loss"] is not None
    if torch.cuda.is_available():
        assert cuda["status"] == "ok"
    else:
        assert cuda["status"].startswith("unavailable:")
    assert (short_run / "bench.csv").read_text().splitlines()[0].startswith("device,status,")
    assert json.loads((short_run / "bench.json").read_text()) == rows


def test_bench_rejects_unknown_device(tmp_path, capsys):
    from cnnlab.workflows.measure.bench import device_unavailable
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="unknown device 'tpu'"):
        device_unavailable("tpu")
    assert device_unavailable("cpu") is None


def test_bench_rows_merge_by_device_runtime_batch_and_threads():
    """merge_bench, the rule behind every bench file: a row is (device, runtime, batch, threads), plus the
    source for an --out file that several models share."""
    from cnnlab.workflows.measure.bench import merge_bench

    def row(device, runtime="torch", status="ok", batch=8, threads=1, source="run", **kw):
        return {"device": device, "runtime": runtime, "status": status, "batch_size": batch if status == "ok" else None,
                "threads": threads if status == "ok" else None, "source": source, "measured_at": kw.pop("at", "t1"),
                "notes": None, "train_seconds_5_epochs": kw.pop("train", None), **kw}

    old = [row("cpu", train=9.0), row("cuda", status="unavailable: no GPU")]
    rows, kept = merge_bench(old, [row("cuda", status="unavailable: still no GPU", at="t2")])
    assert rows[1]["status"] == "unavailable: still no GPU" and len(rows) == 2 and kept == []  # replaced in place
    rows, kept = merge_bench(rows, [row("cuda", at="t3", threads=None)])
    assert [(r["device"], r["status"]) for r in rows] == [("cpu", "ok"), ("cuda", "ok")]  # measured replaces
    rows, kept = merge_bench(rows, [row("cuda", status="unavailable: gone", at="t4")])
    assert rows[1]["status"] == "ok" and rows[1]["measured_at"] == "t3" and "unavailable: gone" in rows[1]["notes"]
    assert len(kept) == 1 and "kept the figures measured at t3" in kept[0]
    rows, _ = merge_bench(rows, [row("cpu", at="t5"), row("cpu", batch=64, at="t5")])
    assert [(r["device"], r["batch_size"], r["measured_at"]) for r in rows] == [
        ("cpu", 8, "t5"), ("cuda", 8, "t3"), ("cpu", 64, "t5")]
    assert rows[0]["train_seconds_5_epochs"] == 9.0  # an earlier --train time outlives a bench without --train
    # an --out file shared by two model files keeps one row per file
    shared, _ = merge_bench([row("cpu", source="a.onnx")], [row("cpu", source="b.onnx")], by_source=True)
    assert [r["source"] for r in shared] == ["a.onnx", "b.onnx"]
    assert len(merge_bench([row("cpu", source="a.onnx")], [row("cpu", source="b.onnx")])[0]) == 1


def test_bench_devices_auto_and_empty():
    from cnnlab.errors import CnnlabError
    from cnnlab.workflows.measure.bench import parse_devices

    assert parse_devices("auto, CPU") == ("cpu",) + (("cuda",) if torch.cuda.is_available() else ()) + (
        ("mps",) if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else ())
    with pytest.raises(CnnlabError, match="--devices is empty"):
        parse_devices(" , ")
    with pytest.raises(CnnlabError, match="unknown device 'gpu'"):
        parse_devices("cpu,gpu")


@pytest.mark.realdata
def test_cost_of_a_run_directory(short_run, capsys):
    assert main(["cost", str(short_run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["input"] == [1, 28, 28] and rep["totals"]["params"] == 61706


def test_score_charges_each_test_time_augmentation_pass(tmp_path, capsys):
    """A run that evaluates with flips and shifts (tta 2) runs its network 6 times per image: score charges
    6x the cycles and energy of one pass (`cnnlab cost`), and says so; peak activation is one pass's."""
    from cnnlab.config import TrainConfig
    from cnnlab.train.loop import train

    run = tmp_path / "tta"
    train(TrainConfig(dataset="synthetic:shape=3x16x16,classes=4,train=128,test=32", model="c8k3-relu-p2-fc4",
                      epochs=1, batch_size=32, val_size=16, tta=2, threads=1, device="cpu", out=str(run)), quiet=True)
    assert main(["cost", str(run), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["score", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["passes_per_image"] == 6 and "runs the network 6 times per image" in s["note"]
    assert s["cycles"] == 6 * one["totals"]["cycles"]
    assert s["energy_mj"] == pytest.approx(6 * one["totals"]["energy_pj"] * 1e-9)
    assert s["peak_activation_bytes"] == one["peak_activation_bytes"]
    assert s["metric"] == pytest.approx(s["error_percent"] / 12 + s["cycles"] / 300_000)
