"""No dead-end runs, no lost work, no traceback from the file system.

Every run directory can be resumed or restarted; a resume can lower the learning rate; one
trainer per run; file-system errors are one line; results honour the umask."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.dirs import RunDir
from cnnlab.train.hooks import Hook
from cnnlab.train.loop import Trainer, train

SYN = "synthetic:shape=3x12x12,classes=3,train=330,test=60,noise=0.5"
MODEL = "c6k3-relu-p2-fc3"


def cfg(out, **kw):
    return TrainConfig(**{**dict(dataset=SYN, model=MODEL, epochs=2, batch_size=30, seed=2, out=out and str(out), threads=1,
                                 device="cpu", optimizer="sgd", lr=0.05), **kw})


class _Die(Hook):
    """Stands in for a crash: raises `error` at step `step`, or after checkpoint `which` is written."""

    def __init__(self, error, step=None, which=None):
        self.error, self.step, self.which = error, step, which

    def on_step(self, t, loss, n):
        if self.step is not None and t.progress.step == self.step:
            raise self.error

    def on_checkpoint(self, t, path, which):
        if self.which == which:
            raise self.error


def _weights(run):
    return load_checkpoint(RunDir(run).last)["model_state"]


def test_a_run_killed_before_its_first_checkpoint_restarts_in_place(tmp_path, capsys):
    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        train(cfg(run), quiet=True, hooks=[_Die(KeyboardInterrupt(), step=2)])
    assert not RunDir(run).last.exists() and RunDir(run).config.exists()
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--out", str(run), "--quiet"]) == 2
    assert f"resume it with --resume {run}" in capsys.readouterr().err  # the advice works:
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    train(cfg(tmp_path / "ref"), quiet=True)
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_between_best_and_last_resumes_from_best(tmp_path):
    run = tmp_path / "r"
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        train(cfg(run), quiet=True, hooks=[_Die(full, which="best")])  # epoch 1: best.pt written, last.pt not
    assert RunDir(run).best.exists() and not RunDir(run).last.exists()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    train(cfg(tmp_path / "ref"), quiet=True)
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # nothing lost: best.pt was the newest state


def test_a_damaged_last_checkpoint_falls_back_to_best(tmp_path, capsys):
    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        train(cfg(run, epochs=3), quiet=True, hooks=[_Die(KeyboardInterrupt(), step=12)])  # epoch 2, after epoch 1's saves
    RunDir(run).last.write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "using the other checkpoint" in capsys.readouterr().err
    assert RunDir(run).finished()


def test_nan_then_resume_with_a_lower_lr_finishes(tmp_path, capsys):
    run = tmp_path / "nan"
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--optimizer", "sgd", "--lr", "1e12", "--epochs", "2", "--batch-size", "30",
                 "--device", "cpu", "--out", str(run), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "loss became" in err and f"cnnlab train --resume {run} --lr 1e+11" in err
    assert "no checkpoint was written before it" in err and "last good checkpoint" not in err
    assert "stopped: the loss became" in RunDir(run).log_file.read_text()
    assert main(["train", "--resume", str(run), "--lr", "0.05", "--quiet"]) == 0
    assert TrainConfig.load(RunDir(run).config).lr == 0.05
    assert "resumed with lr = 0.05 (was 1000000000000.0)" in RunDir(run).log_file.read_text()
    assert RunDir(run).read_summary()["test_acc"] > 0.5


def test_resume_with_a_new_lr_continues_from_the_checkpoint_on_the_new_scale(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        train(cfg(run, schedule="cosine", save_every_steps=3), quiet=True, hooks=[_Die(KeyboardInterrupt(), step=14)])
    t = Trainer(None, resume=run, quiet=True, overrides={"lr": 0.005})
    t.open()
    ref = Trainer(cfg(tmp_path / "ref", schedule="cosine"), quiet=True)
    ref.open()
    step = t.progress.step
    factor = 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / (2 * t.steps_per_epoch)))).item()
    assert t.engine.lr() == pytest.approx(0.005 * factor)  # the cosine curve, scaled to the new base
    t.close()
    ref.close()
    with pytest.raises(Exception, match="only lr and grad_clip may change"):
        Trainer(None, resume=run, overrides={"epochs": 9})


def test_resume_refuses_other_flags_and_says_which_may_change(tmp_path, capsys):
    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "only --lr and --grad-clip may change" in capsys.readouterr().err


def test_one_trainer_per_run(tmp_path, capsys):
    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        train(cfg(run), quiet=True, hooks=[_Die(KeyboardInterrupt(), step=5)])
    with RunDir(run).lock():  # another process (or another trainer) is training it
        assert main(["train", "--resume", str(run), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"run {run} is being trained by another process (pid {os.getpid()})" in err
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # the lock went with its holder
    assert len(RunDir(run).read_metrics()) == 2


def test_default_run_names_never_collide(tmp_path, monkeypatch):
    import cnnlab.train.loop as loop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop, "default_run_dir", lambda config: tmp_path / "runs" / "same-second")
    a = train(cfg(None, epochs=1), quiet=True)
    b = train(cfg(None, epochs=1), quiet=True)
    assert a["run_dir"] != b["run_dir"] and b["run_dir"].endswith("same-second-2")


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--out", str(blocker / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--out", str(blocker), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_results_are_shown_before_a_failed_write_and_the_message_names_the_file(tmp_path, capsys):
    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    blocked = RunDir(run).evaluation_files("test")[0]
    blocked.mkdir()  # the result cannot be written there
    assert main(["evaluate", str(run)]) == 2
    out, err = capsys.readouterr()
    assert "test accuracy" in out
    assert err.strip() == f"cnnlab: error: {blocked} is a directory: give a file name"
    assert main(["predict", str(run), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_honour_the_umask(tmp_path, umask, mode):
    from cnnlab.io import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == mode


def test_an_image_folder_run_can_be_evaluated_from_anywhere(tmp_path, monkeypatch):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("test", 4)):
        for c in ("a", "b"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(n):
                px = (torch.rand(8, 8, 3, generator=rng) * 255).to(torch.uint8).numpy()
                Image.fromarray(px).save(tmp_path / "imgs" / split / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    train(cfg(tmp_path / "r", dataset="imagefolder:imgs", model="c4k3-fc2", epochs=1, batch_size=8, val_size=4), quiet=True)
    assert TrainConfig.load(RunDir(tmp_path / "r").config).dataset == f"imagefolder:{tmp_path / 'imgs'}"
    monkeypatch.chdir(tmp_path / "imgs")
    assert main(["evaluate", str(tmp_path / "r"), "--json"]) == 0


def test_a_missing_run_path_for_cost_is_named_as_a_path(capsys):
    assert main(["cost", "runs/does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert "runs/does-not-exist is not a run directory" in err and "bad token" not in err


class _SendSignal(Hook):
    def __init__(self, step):
        self.step = step

    def on_step(self, t, loss, n):
        if t.progress.step == self.step:
            os.kill(os.getpid(), __import__("signal").SIGINT)


def test_an_interrupt_is_reported_as_a_stop_not_an_error(tmp_path, capsys, monkeypatch):
    import cnnlab.train.loop as loop

    real = loop.default_hooks
    monkeypatch.setattr(loop, "default_hooks", lambda config: real(config) + [_SendSignal(4)])
    run = tmp_path / "r"
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--device", "cpu", "--out", str(run), "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: stopped by SIGINT at epoch 2, batch 2") and "error:" not in err
    assert f"cnnlab train --resume {run}" in err and "stopped by SIGINT" in RunDir(run).log_file.read_text()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
