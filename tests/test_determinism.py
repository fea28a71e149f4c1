"""Exact runs: the --deterministic settings, bitwise-equal same-seed and resumed runs, and the
provenance every summary.json records.

`test_deterministic_runs_and_resume_are_bitwise_equal` uses device `auto`: on a machine with a
GPU it runs on CUDA, which is where the settings matter (cuDNN chooses algorithms by timing)."""

from __future__ import annotations

import os
import re

import pytest
import torch

from cnnlab.config import TrainConfig
from cnnlab.device import CUBLAS_WORKSPACE, configure_determinism
from cnnlab.train.hooks import Hook
from cnnlab.train.loop import train
from tests.crash import DieAtCheckpoint, Killed, last_weights

SYN = "synthetic:shape=3x16x16,classes=4,train=400,test=64,noise=0.5"


def cfg(out, **kw):
    base = dict(dataset=SYN, model="c8k3-bn-relu-p2-c16k3-relu-gap", epochs=2, batch_size=32, augment="crop:2+flip",
                optimizer="sgd", schedule="cosine", seed=3, out=str(out), threads=1, deterministic=True,
                device="auto")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    configure_determinism(False)


def test_settings_are_set_and_cleared(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    on = configure_determinism(True)
    assert on == {"deterministic_algorithms": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
                  "cublas_workspace_config": CUBLAS_WORKSPACE}
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    off = configure_determinism(False)
    assert not off["deterministic_algorithms"] and not torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark


def test_a_user_setting_of_the_workspace_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert configure_determinism(True)["cublas_workspace_config"] == ":16:8"






def test_deterministic_runs_and_resume_are_bitwise_equal(tmp_path):
    a = train(cfg(tmp_path / "a"), quiet=True)
    b = train(cfg(tmp_path / "b"), quiet=True)
    wa, wb = last_weights(tmp_path / "a"), last_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test_acc"] == b["test_acc"] and a["deterministic"]["deterministic_algorithms"]
    with pytest.raises(Killed):
        train(cfg(tmp_path / "k", save_every_steps=5), quiet=True, hooks=[DieAtCheckpoint(15)])  # mid epoch 2
    train(None, resume=tmp_path / "k", quiet=True)
    wk = last_weights(tmp_path / "k")
    assert all(torch.equal(wa[k], wk[k]) for k in wa)


def test_summary_traces_the_run(tmp_path):
    s = train(cfg(tmp_path / "r", epochs=1, device="cpu", deterministic=False), quiet=True)
    from cnnlab import __version__

    assert s["cnnlab_version"] == __version__ and s["device"] == "cpu"
    assert s["environment"]["cpu_cores"] >= 1 and s["environment"]["torch"] == torch.__version__
    assert s["deterministic"]["deterministic_algorithms"] is False
    if (os.path.isdir(os.path.join(os.path.dirname(__file__), "..", ".git"))):  # running from a checkout
        assert re.fullmatch(r"[0-9a-f]{40}", s["git_commit"]) and isinstance(s["git_dirty"], bool)
    assert s["trainable_params"] == s["params"] > 0 and s["seconds_per_epoch"] > 0
    assert s["stop_reason"] == "trained 1 epochs"


class _Threads(Hook):
    def __init__(self):
        self.seen = set()

    def on_step(self, t, loss, n):
        self.seen.add(torch.get_num_threads())


def test_threads_hold_through_training(tmp_path):
    """--threads 1 stays 1 for the whole run: the fused loader's first Numba launch used to reset
    OpenMP to every core after the first batch (and made the first run of a process differ)."""
    before = torch.get_num_threads()
    try:
        watch = _Threads()
        train(cfg(tmp_path / "r", epochs=1, device="cpu", deterministic=False, threads=1), quiet=True, hooks=[watch])
        assert watch.seen == {1}
    finally:
        torch.set_num_threads(before)
