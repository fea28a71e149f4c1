import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cnnlab.config import TrainConfig
from cnnlab.checkpoint import load_checkpoint
from cnnlab.dirs import load_run
from cnnlab.train.loop import Trainer, train
from tests.crash import DieAtCheckpoint, Killed, last_weights

SYN = "synthetic:shape=3x16x16,classes=4,train=640,test=128,noise=0.5"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def cfg(out, **kw):
    base = dict(dataset=SYN, model="c8k3-relu-p2-c16k3-relu-p2-fc32-relu-d0.2", epochs=2, batch_size=32,
                augment="crop:2+flip", seed=1, out=str(out), threads=1, device="cpu")  # bitwise claims: CPU
    return TrainConfig(**{**base, **kw})


def test_run_directory_contract(tmp_path):
    s = train(cfg(tmp_path / "r"), quiet=True)
    run = tmp_path / "r"
    for name in ("config.yaml", "metrics.csv", "iterations.csv", "train.log", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    metrics = read_csv(run / "metrics.csv")
    assert [m["epoch"] for m in metrics] == ["1", "2"]
    assert list(metrics[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    assert len(read_csv(run / "iterations.csv")) == 2 * 18
    assert (run / "train.log").read_text().strip().splitlines()[-1].startswith("test accuracy: ")
    assert TrainConfig.load(run / "config.yaml").model == cfg(run).model
    assert s["test_acc"] > 0.5  # the synthetic classes are learnable
    loaded = load_run(run)
    assert sum(p.numel() for p in loaded.model.parameters()) == s["params"]


def test_same_seed_same_metrics(tmp_path):
    train(cfg(tmp_path / "a"), quiet=True)
    train(cfg(tmp_path / "b"), quiet=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(read_csv(tmp_path / "a/metrics.csv")) == strip(read_csv(tmp_path / "b/metrics.csv"))
    assert read_csv(tmp_path / "a/iterations.csv") == read_csv(tmp_path / "b/iterations.csv")
    wa = load_checkpoint(tmp_path / "a/checkpoints/last.pt")["model_state"]
    wb = load_checkpoint(tmp_path / "b/checkpoints/last.pt")["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _train_cmd(out, epochs=3):
    return [sys.executable, "-m", "cnnlab", "train", "--dataset", "synthetic:shape=3x24x24,classes=4,train=1100,test=64",
            "--model", "c16k3-bn-relu-c16k3-relu-p2-fc64-relu-d0.3", "--epochs", str(epochs), "--batch-size", "32",
            "--augment", "crop:2+flip+cutout:4", "--optimizer", "sgd", "--schedule", "cosine", "--seed", "7",
            "--threads", "1", "--save-every-steps", "5", "--device", "cpu", "--quiet", "--out", str(out)]


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref), check=True, capture_output=True, timeout=600)
    for attempt in range(5):
        run = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen(_train_cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = 30 + 7 * attempt + 3  # steps into epoch 2 (30 full batches per epoch)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            try:
                n = sum(1 for _ in open(run / "iterations.csv")) - 1
            except OSError:
                n = 0
            if n >= target:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and load_checkpoint(run / "checkpoints/last.pt")["progress"]["batch"] > 0:
            break
    else:
        pytest.fail("could not kill the run in the middle of an epoch")
    assert not (run / "summary.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(run), "--quiet"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(ref / "checkpoints/last.pt")
    b = load_checkpoint(run / "checkpoints/last.pt")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert read_csv(ref / "iterations.csv") == read_csv(run / "iterations.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(read_csv(ref / "metrics.csv")) == strip(read_csv(run / "metrics.csv"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cli):
    out = tmp_path / "nan"
    r = cli("train", "--dataset", SYN, "--model", "c8k3-relu-p2-fc10-relu", "--epochs", "3", "--optimizer", "sgd",
            "--lr", "0.01", "--schedule", "step", "--set", "schedule_args={step_epochs: 1, gamma: 1.0e+30}",
            "--quiet", "--out", out)
    assert r.returncode == 3
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "loss became nan" in r.stderr and f"cnnlab train --resume {out} --lr 0.001" in r.stderr
    assert "stopped: the loss became nan" in (out / "train.log").read_text()
    good = load_checkpoint(out / "checkpoints/last.pt")
    assert good["progress"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in good["model_state"].values() if v.is_floating_point())


def test_interrupt_saves_and_resume_finishes(tmp_path):
    """SIGINT mid-run saves checkpoints/last.pt where iterations.csv ends, exits 130 with the resume
    command, and the resumed run finishes every step exactly once. The signal is sent once
    iterations.csv shows a step well inside epoch 1 (the run saves every 5 steps), so it lands
    while training; a run that still finished first is retried, and never interrupting fails."""
    for attempt in range(5):
        out = tmp_path / f"int{attempt}"
        proc = subprocess.Popen(_train_cmd(out, epochs=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        target = 10 + 5 * attempt  # of 60 steps (30 per epoch)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            try:
                n = sum(1 for _ in open(out / "iterations.csv")) - 1
            except OSError:
                n = 0
            if n >= target:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.005)
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            break
    else:
        pytest.fail("every run finished before SIGINT arrived: could not interrupt training")
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and f"cnnlab train --resume {out}" in err
    assert not (out / "summary.json").exists()
    saved = load_checkpoint(out / "checkpoints/last.pt")["progress"]
    steps = [int(r["step"]) for r in read_csv(out / "iterations.csv")]
    assert target <= saved["step"] < 60 and steps == list(range(1, saved["step"] + 1))
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out), "--quiet"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "summary.json").exists()
    assert [int(r["step"]) for r in read_csv(out / "iterations.csv")] == list(range(1, 61))
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")] == ["1", "2"]


def test_predictions_match_evaluated_accuracy(tmp_path, cli):
    run = tmp_path / "p"
    train(cfg(run), quiet=True)
    r = cli("evaluate", run, "--json")
    assert r.returncode == 0, r.stderr
    import json
    acc = json.loads(r.stdout)["accuracy"]
    r = cli("predict", run, "--out", tmp_path / "predictions.csv")
    assert r.returncode == 0, r.stderr
    rows = read_csv(tmp_path / "predictions.csv")
    assert list(rows[0]) == ["id", "label"] and [int(x["id"]) for x in rows] == list(range(128))
    from cnnlab.data import load_dataset
    labels = load_dataset(SYN, seed=1).test.y.tolist()
    assert sum(int(x["label"]) == y for x, y in zip(rows, labels)) / len(labels) == pytest.approx(acc, abs=1e-9)
    assert (run / "confusion_matrix.csv").exists() and (run / "per_class.csv").exists()


def test_early_stop(tmp_path, monkeypatch):
    """`--early-stop P` ends the run exactly P epochs after its best validation epoch, as
    metrics.csv's val_acc history says (an epoch improves only when it beats every earlier one; a
    tie does not), says so in summary.json and train.log, and never stops a run that keeps improving
    within P epochs."""

    def expected(val_accs, patience):  # (the epoch it must stop after or None, the best epoch)
        best, best_epoch, bad = float("-inf"), None, 0
        for epoch, acc in enumerate(val_accs, 1):
            best, best_epoch, bad = (acc, epoch, 0) if acc > best else (best, best_epoch, bad + 1)
            if bad >= patience:
                return epoch, best_epoch
        return None, best_epoch

    def check(run, s, patience, epochs):
        val = [float(r["val_acc"]) for r in read_csv(run / "metrics.csv")]
        stop, best_epoch = expected(val, patience)
        log = (run / "train.log").read_text().splitlines()
        line = f"early stop: validation accuracy has not improved for {patience} epochs"
        assert s["epochs_run"] == len(val) and s["best_epoch"] == best_epoch and s["best_val_acc"] == max(val)
        if stop is None:
            assert len(val) == epochs and s["stop_reason"] == f"trained {epochs} epochs"
            assert not any("early stop" in x for x in log)
        else:
            assert len(val) == stop == best_epoch + patience  # not one epoch more or less
            assert s["stop_reason"] == line and line in log
        return val

    # Real training with a learning rate too small to change a prediction: epoch 1 is never beaten,
    # so patience 2 stops the run after epoch 3.
    s = train(cfg(tmp_path / "e", epochs=30, early_stop=2, lr=1e-7), quiet=True)
    val = check(tmp_path / "e", s, patience=2, epochs=30)
    assert s["epochs_run"] == 3 and s["best_epoch"] == 1 and len(set(val)) == 1

    # Scripted validation accuracies (the real evaluation's loss is kept): the stop epoch is known.
    cases = [
        # best 0.6 at epoch 4, tied at epoch 6: 3 epochs without improving end it after epoch 7
        ([0.3, 0.5, 0.5, 0.6, 0.55, 0.6, 0.58, 0.9, 0.9, 0.9], 3, 7),
        # never 3 epochs in a row without improving: it must not stop early
        ([0.3, 0.3, 0.3, 0.4, 0.4, 0.4, 0.5, 0.5], 3, None),
        # patience 1: the first epoch that does not improve ends it
        ([0.3, 0.4, 0.5, 0.5, 0.9], 1, 4),
    ]
    evaluate = Trainer.evaluate
    for i, (script, patience, stops_after) in enumerate(cases):
        def scripted(self, split, script=script):
            result = evaluate(self, split)
            if split is self.data.val:  # the epoch being ended is progress.epoch (0-based)
                result = {**result, "accuracy": script[self.progress.epoch]}
            return result

        monkeypatch.setattr(Trainer, "evaluate", scripted)
        run, epochs = tmp_path / f"scripted{i}", len(script)
        s = train(cfg(run, dataset="synthetic:shape=3x8x8,classes=4,train=160,test=32", model="c4k3-relu-p2-fc8-relu",
                      epochs=epochs, early_stop=patience, augment="none"), quiet=True)
        val = check(run, s, patience, epochs)
        assert val == script[:stops_after or epochs]  # metrics.csv holds the history the trainer saw
        assert s["epochs_run"] == (stops_after or epochs)


BAD = [
    (["train", "--data-dir", "{tmp}/nowhere"], "does not exist"),
    (["train", "--model", "c32k3-relu-foo-fc10", "--dataset", "synthetic"], "bad token 'foo'"),
    (["train", "--model", "resnet1000", "--dataset", "synthetic"], "unknown model 'resnet1000'"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--dataset", "synthetic", "--augment", "spin"], "unknown augmentation"),
    (["train", "--resume", "{tmp}"], "not a cnnlab run directory"),
    (["evaluate", "{tmp}/nowhere"], "does not exist"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_one_line_exit_2(tmp_path, cli, args, message):
    (tmp_path / "junk.txt").write_text("not a run")
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] == "train" and "--resume" not in args:
        args += ["--out", str(out)]
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_bad_data_files_from_the_cli(tmp_path, cli, damage):
    from tests.test_data import make_mnist_dir, write_idx
    import numpy as np

    d = make_mnist_dir(tmp_path / "data")
    f = d / "train-images-idx3-ubyte.gz"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:300])
    else:
        write_idx(f, np.zeros((3, 28, 28)), magic=0x0803 + 5)
    r = cli("train", "--dataset", "mnist", "--data-dir", tmp_path / "data", "--out", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(f) in r.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_existing_run_dir_is_not_overwritten(tmp_path, cli):
    train(cfg(tmp_path / "r", epochs=1), quiet=True)
    before = (tmp_path / "r/metrics.csv").read_text()
    r = cli("train", "--dataset", "synthetic", "--out", tmp_path / "r")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert (tmp_path / "r/metrics.csv").read_text() == before


def test_unknown_model_option_is_named():
    from cnnlab.errors import CnnlabError
    from cnnlab.models import create_model

    with pytest.raises(CnnlabError, match="model 'lenet5' has no option 'widht'.*activation"):
        create_model("lenet5", widht=2)


def test_time_budget_stops_the_run(tmp_path):
    s = train(cfg(tmp_path / "t", epochs=50, max_seconds=0.3), quiet=True)
    assert s["epochs_run"] < 50
    assert "time budget" in (tmp_path / "t/train.log").read_text()






@pytest.mark.parametrize("tricks", [dict(ema=0.9), dict(tta=True), dict(precision="bf16"),
                                    dict(channels_last=True), dict(ema=0.9, tta=True, channels_last=True),
                                    dict(compile=True)])
def test_training_tricks_run_resume_and_evaluate(tmp_path, cli, tricks):
    """Each trick takes effect (the result differs from a plain run, or the engine shows it), a run
    killed mid-epoch resumes to the same weights, and `cnnlab evaluate` reproduces the test figure."""
    model = "c8k3-bn-relu-p2-c16k3-relu-gap"
    plain = Trainer(cfg(tmp_path / "plain", model=model, epochs=2), quiet=True)
    s_plain = plain.fit()
    whole = Trainer(cfg(tmp_path / "whole", model=model, epochs=2, **tricks), quiet=True)
    s = whole.fit()
    run = tmp_path / "killed"
    with pytest.raises(Killed):
        train(cfg(run, model=model, epochs=2, save_every_steps=7, **tricks), quiet=True, hooks=[DieAtCheckpoint(7)])
    assert not (run / "summary.json").exists()
    resumed = train(None, resume=run, quiet=True)
    a, b = last_weights(tmp_path / "whole"), last_weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resume is not exact"
    assert resumed["test_acc"] == s["test_acc"]

    ckpt = load_checkpoint(tmp_path / "whole/checkpoints/last.pt")
    if "ema" in tricks:
        ema = ckpt["hooks"]["ema"]["module"]
        raw = ckpt["engine_state"]["model"]
        # the saved model is the average, not the last weights
        assert all(torch.equal(ckpt["model_state"][k], ema[k]) for k in ema)
        assert any(not torch.equal(ema[k], raw[k]) for k in ema if raw[k].is_floating_point())
    if tricks.get("tta"):  # the same weights score differently with flips averaged in
        x = torch.randn(8, 3, 16, 16)
        with torch.no_grad():
            assert not torch.allclose(whole.engine.eval_logits(x), whole.engine.torch_model().eval()(x))
    if tricks.get("precision") == "bf16" or tricks.get("ema"):  # the weights differ from a plain fp32 run
        p = last_weights(tmp_path / "plain")
        assert any(not torch.equal(a[k], p[k]) for k in a if a[k].is_floating_point())
    if tricks.get("channels_last"):
        assert whole.engine.model[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not plain.engine.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    if tricks.get("compile"):
        assert isinstance(whole.engine.forward, torch._dynamo.eval_frame.OptimizedModule)
    r = cli("evaluate", tmp_path / "whole", "--json")
    assert r.returncode == 0, r.stderr
    import json
    if not tricks.get("precision"):  # bf16 scores differ slightly from the fp32 evaluation
        assert json.loads(r.stdout)["accuracy"] == s["test_acc"]
    assert s_plain["test_count"] == s["test_count"] == 128


def test_fp16_needs_cuda(tmp_path):
    from cnnlab.errors import CnnlabError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is allowed")
    with pytest.raises(CnnlabError, match="fp16 training needs a CUDA device"):
        train(cfg(tmp_path / "f", precision="fp16", device="cpu"), quiet=True)


def test_resume_after_training_but_before_the_test_evaluation(tmp_path, cli):
    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    first = (run / "summary.json").read_text()
    (run / "summary.json").unlink()  # as if the process died during the final evaluation
    r = cli("train", "--resume", run, "--quiet")
    assert r.returncode == 0, r.stderr
    assert (run / "summary.json").read_text() == first
    assert len(read_csv(run / "metrics.csv")) == 1
    r = cli("train", "--resume", run, "--quiet")
    assert r.returncode == 2 and "already finished" in r.stderr


def test_nan_loss_in_the_scratch_engine_stops_the_same_way(tmp_path, cli):
    out = tmp_path / "nan"
    r = cli("train", "--engine", "scratch", "--dataset", SYN, "--model", "c4k3-relu-p2-fc10-relu", "--epochs", "3",
            "--optimizer", "sgd", "--lr", "0.01", "--schedule", "step",
            "--set", "schedule_args={step_epochs: 1, gamma: 1.0e+30}", "--backend", "numpy",
            "--quiet", "--out", out)
    assert r.returncode == 3, r.stderr
    assert "loss became" in r.stderr and "Traceback" not in r.stderr
    assert load_checkpoint(out / "checkpoints/last.pt")["progress"]["epoch"] == 1


def test_full_disk_is_one_line_and_leaves_no_partial_files(tmp_path):
    # A real failing write: the file-size limit makes the kernel refuse the checkpoint's bytes
    # (EFBIG), the same path as a full disk (ENOSPC).
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--dataset", "synthetic:train=200,test=20",
                        "--model", "c64k3-relu-p2-fc128-relu", "--epochs", "1", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "could not write" in r.stderr and "checkpoints" in r.stderr and "free space" in r.stderr
    assert list((out / "checkpoints").iterdir()) == []  # no torn or temporary checkpoint left behind


def test_the_first_line_says_how_many_parameters_train(tmp_path):
    small = dict(dataset="synthetic:shape=3x8x8,classes=3,train=90,test=30", model="c4k3-relu-p2-fc3", epochs=1,
                 batch_size=30, augment="none", val_size=30)
    base = train(cfg(tmp_path / "base", **small), quiet=True)
    opening = lambda run: next(l for l in (tmp_path / run / "train.log").read_text().splitlines()
                               if l.startswith("cnnlab: training"))
    first = opening("base")
    assert f"({base['params']:,} parameters)" in first and "trainable" not in first  # everything trains
    frozen = train(cfg(tmp_path / "frozen", **small, pretrained=str(tmp_path / "base"), freeze="backbone"), quiet=True)
    first = opening("frozen")
    assert 0 < frozen["trainable_params"] < frozen["params"]
    assert f"({frozen['params']:,} parameters ({frozen['trainable_params']:,} trainable))" in first
