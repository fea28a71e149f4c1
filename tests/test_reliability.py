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
    status, why = RunDir(run).status()  # from state.json, which the trainer wrote as it stopped
    assert status == "stopped" and why.startswith("stopped by SIGINT at epoch 2, batch 2") and "--resume" in why
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert RunDir(run).status() == ("finished", None)
    assert RunDir(run).read_json(RunDir(run).state) == {"status": "finished", "reason": None}


def _resave(path, ckpt, **changes):
    """Write `ckpt` with `changes` to `path`, as a checkpoint copied or edited by hand would be."""
    from cnnlab.checkpoint import save_checkpoint

    save_checkpoint(path, {**ckpt, **changes})


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    return err


def test_another_runs_checkpoint_is_one_line_and_nothing_is_written(tmp_path, capsys):
    run, other = tmp_path / "r", tmp_path / "other"
    train(cfg(run, epochs=1), quiet=True)
    train(cfg(other, epochs=1, model="c4k3-relu-p2-fc4", dataset=SYN.replace("classes=3", "classes=4")), quiet=True)
    theirs = load_checkpoint(RunDir(other).best)
    _resave(RunDir(run).best, theirs)  # best.pt copied from the other run
    _resave(RunDir(run).last, theirs, progress={**theirs["progress"], "done": False, "step": 99})
    before = _files(run)
    best, last = RunDir(run).best, RunDir(run).last
    assert main(["evaluate", str(run)]) == 2
    _one_line_error(capsys, f"checkpoint {best} was written by another run", "its model is 'c4k3-relu-p2-fc4'")
    assert main(["export", str(run), "--format", "safetensors"]) == 2
    _one_line_error(capsys, f"checkpoint {best} was written by another run")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2  # a finished run, another run's unfinished last.pt
    _one_line_error(capsys, f"checkpoint {last} was written by another run", "put back this run's own checkpoint")
    assert main(["cost", str(run)]) == 2
    _one_line_error(capsys, f"checkpoint {best} was written by another run")
    assert _files(run) == before  # train.log, metrics, config.yaml: byte for byte; no exports/, no evaluation


def test_weights_that_do_not_fit_their_config_are_one_line_and_nothing_is_written(tmp_path, capsys):
    run, other = tmp_path / "r", tmp_path / "other"
    train(cfg(run, epochs=1), quiet=True)
    train(cfg(other, epochs=1, model="c4k3-relu-p2-fc3"), quiet=True)
    mine, foreign = load_checkpoint(RunDir(run).best), load_checkpoint(RunDir(other).best)["model_state"]
    _resave(RunDir(run).best, mine, model_state=foreign)  # this run's config, another network's weights
    _resave(RunDir(run).last, mine, model_state=foreign, engine_state={**mine["engine_state"], "model": foreign},
            progress={**mine["progress"], "done": False})
    before = _files(run)
    assert main(["evaluate", str(run)]) == 2
    _one_line_error(capsys, f"checkpoint {RunDir(run).best} does not fit the model its config builds",
                    "0.weight is 4x3x3x3 in the checkpoint but 6x3x3x3 in the model")
    assert main(["export", str(run), "--format", "safetensors"]) == 2
    _one_line_error(capsys, "does not fit the model its config builds")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    _one_line_error(capsys, f"checkpoint {RunDir(run).last} does not fit the model its config builds")
    assert _files(run) == before


def test_a_damaged_csv_file_is_named_with_its_line_not_called_missing(tmp_path, capsys):
    from cnnlab.errors import CnnlabError

    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    rd = RunDir(run)
    rows = rd.read_iterations()
    assert len(rows) == 9 and rows[0] == {"step": 1.0, "epoch": 1.0, "loss": rows[0]["loss"], "lr": 0.05}
    rd.iterations.write_text("step,epoch,loss,lr\n1,1,0.5,0.1\n2,1,abc,0.1\n")
    with pytest.raises(CnnlabError, match=r"iterations.csv cannot be read: line 3 has 'abc' as its loss, which is not"):
        rd.read_iterations()
    rd.metrics.write_bytes(b"\xff\xfe garbage\nzz\n")
    with pytest.raises(CnnlabError, match="metrics.csv cannot be read: it is not text"):
        rd.read_metrics()
    assert main(["plot", str(run)]) == 0  # the other figures are still drawn
    said = "".join(capsys.readouterr())
    assert "no loss.png: " in said and "line 3 has 'abc' as its loss" in said and "missing or empty" not in said
    assert "no accuracy.png: " in said and "metrics.csv cannot be read: it is not text" in said
    rd.metrics.write_text("nonsense\n1\n")
    with pytest.raises(CnnlabError, match="metrics.csv cannot be read: its header has no 'epoch' column"):
        rd.read_metrics()


def test_a_path_under_a_file_names_the_file_and_only_advises_options_the_command_has(tmp_path, capsys):
    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    RunDir(run).plots.write_text("not a folder")  # `cnnlab plot` writes into plots/, and has no --out
    assert main(["plot", str(run)]) == 2
    err = _one_line_error(capsys, f"could not write {RunDir(run).plot_file('loss')}: {RunDir(run).plots} is a file, "
                                  "not a folder")
    assert "--out" not in err and "File exists" not in err
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["predict", str(run), "--out", str(blocker / "sub" / "p.csv")]) == 2  # predict has --out
    _one_line_error(capsys, f"could not write {blocker / 'sub' / 'p.csv'}: {blocker} is a file, not a folder",
                    "(e.g. with --out)")
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--out", str(blocker / "run"), "--quiet"]) == 2
    _one_line_error(capsys, f"{blocker} is a file, not a folder", "(e.g. with --out)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "r"]


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys")
def test_a_folder_that_cannot_be_written_names_the_target_and_the_cause(capsys):
    # /sys refuses new files even to root, where the tests run here and chmod would not stop a write
    from cnnlab.io import WriteError, atomic_write_text

    for target in ("/sys/kernel/cnnlab-test.json", "/sys/kernel/cnnlab-test/deeper/x.json"):
        with pytest.raises(WriteError) as e:
            atomic_write_text(target, "{}")
        assert str(e.value).startswith(f"could not write {target}: ") and ".tmp" not in str(e.value)
        assert e.value.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and e.value.filename == target
        assert "choose a folder you can write to" in str(e.value)
    assert main(["cluster", "slurm", "--out", "/sys/kernel/job.sh", "--", "cnnlab", "train"]) == 2
    _one_line_error(capsys, "could not write /sys/kernel/job.sh: ", "choose a folder you can write to (e.g. with --out)")


def test_a_full_disk_names_the_target_removes_what_it_made_and_advises_per_command(tmp_path, capsys, monkeypatch):
    # a full disk cannot be made here without mounting a file system: fsync stands in for the write
    # that fails (as test_workflows_offline does)
    from cnnlab.io import WriteError, atomic_write_text

    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    before = _files(run)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cnnlab.io.os.fsync", disk_full)
    target = tmp_path / "new" / "deeper" / "x.json"
    with pytest.raises(WriteError, match=f"could not write {target}: the disk is full; free space and run again"):
        atomic_write_text(target, "{}")
    assert not (tmp_path / "new").exists()  # the folders made for it are gone again
    assert main(["evaluate", str(run)]) == 2  # evaluate has no --out, and nothing to resume
    err = _one_line_error(capsys, f"could not write {RunDir(run).evaluation_files()[0]}: the disk is full")
    assert "--out" not in err and "--resume" not in err
    assert _files(run) == before  # no temporary file left beside it
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    err = _one_line_error(capsys, "the disk is full", "free space and run again")
    assert "--resume" not in err and not (tmp_path / "r2").exists()  # nothing to resume: no run was made


def test_a_full_disk_mid_run_names_the_runs_resume_command(tmp_path, capsys, monkeypatch):
    import cnnlab.train.loop as loop

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    class FillDisk(Hook):  # after config.yaml: the run exists, its first checkpoint meets a full disk
        def on_start(self, t):
            monkeypatch.setattr("cnnlab.io.os.fsync", disk_full)

    real = loop.default_hooks
    monkeypatch.setattr(loop, "default_hooks", lambda config: real(config) + [FillDisk()])
    run = tmp_path / "r"
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--device", "cpu", "--out", str(run), "--quiet"]) == 2
    err = _one_line_error(capsys, "the disk is full", f"free space, then continue with: cnnlab train --resume {run}")
    assert "RUN_DIR" not in err and RunDir(run).config.exists()


def test_resuming_a_run_whose_checkpoints_are_all_damaged_keeps_its_results(tmp_path, capsys):
    run = tmp_path / "r"
    train(cfg(run, epochs=1), quiet=True)
    for pt in (RunDir(run).last, RunDir(run).best):
        pt.write_bytes(b"\xff\xfe\x00 not a checkpoint")
    before = _files(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2  # not a silent restart from scratch
    _one_line_error(capsys, f"cannot resume {run}: ", "are damaged", f"delete {RunDir(run).checkpoints}")
    assert _files(run) == before and RunDir(run).finished()


def test_a_new_run_whose_first_write_fails_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """A full disk at a new run's first write (config.yaml) must not leave an empty run folder behind,
    which a rerun with the same --out would call taken and --resume would call no run."""
    # a full disk cannot be made here without mounting a file system: fsync stands in for the write
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cnnlab.io.os.fsync", disk_full)
    run = tmp_path / "runs" / "new"
    code = main(["train", "--dataset", SYN, "--model", MODEL, "--epochs", "1", "--device", "cpu", "--out", str(run),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "the disk is full" in err and "RUN_DIR" not in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
    monkeypatch.undo()
    assert main(["train", "--dataset", SYN, "--model", MODEL, "--epochs", "1", "--device", "cpu", "--out", str(run),
                 "--quiet"]) == 0
