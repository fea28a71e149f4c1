"""Threads during training (cnnlab.device.choose_threads / set_threads) and where Numba caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import pytest
import torch

import cnnlab
from cnnlab import device
from cnnlab.config import TrainConfig
from cnnlab.device import choose_threads
from cnnlab.train.hooks import Hook
from cnnlab.train.loop import train
from tests.crash import DieAtCheckpoint, Killed, last_weights

PACKAGE = Path(cnnlab.__file__).resolve().parent
SYN = "synthetic:shape=3x16x16,classes=4,train=400,test=64"


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_CACHE_HOME", "CNNLAB_CACHE_DIR"))}
    return {**env, **extra}


def test_choose_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "_TORCH_DEFAULT_THREADS", 8)
    assert choose_threads(3) == 3  # --threads is taken as given
    # (cores, cores other work keeps busy at start, threads): an idle machine gets every core (never above
    # torch's own default), a core more than a quarter busy is left to its work, and at least one thread;
    # where the load cannot be read (None) one core is kept free
    for cpus, busy, expected in ((1, 0.0, 1), (2, 0.02, 2), (2, 0.2, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 2.0, 1),
                                 (4, 0.0, 4), (4, 1.6, 2), (16, 0.0, 8), (16, 9.0, 7), (2, None, 1), (4, None, 3)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)))
        monkeypatch.setattr(device, "_BUSY", [busy])
        assert choose_threads(None) == expected, (cpus, busy)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the user's choice stands
    assert choose_threads(None) == 8


def test_busy_cores_measures_other_work(monkeypatch):
    """Measured from /proc/stat while this process sleeps: a process spinning on a core of ours counts
    as (nearly) one busy core; the figure is measured once per process."""
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat on this system: choose_threads keeps one core free there")
    monkeypatch.setattr(device, "_BUSY", [])
    core = sorted(os.sched_getaffinity(0))[0]
    spin = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        busy = device.busy_cores(0.3)
    finally:
        spin.kill()
        spin.wait()
    assert 0.8 <= busy <= len(os.sched_getaffinity(0)) + 1e-9
    assert device.busy_cores() == busy  # once per process


class _Watch(Hook):
    def on_start(self, t):
        self.seen = set()

    def on_step(self, t, loss, n):
        self.seen.add((torch.get_num_threads(), numba.get_num_threads()))


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_thread_setting_holds_during_training(tmp_path, threads):
    """torch and the fused Numba loader (crop+flip runs it every batch) keep the chosen count at
    every step, and summary.json records it."""
    before = (torch.get_num_threads(), numba.get_num_threads())
    try:
        watch = _Watch()
        s = train(TrainConfig(dataset=SYN, model="lenet5", epochs=1, batch_size=32, augment="crop:2+flip", val_size=40,
                              threads=threads, device="cpu", out=str(tmp_path / "r")), quiet=True, hooks=[watch])
        n = choose_threads(threads)
        assert watch.seen == {(n, min(n, numba.config.NUMBA_NUM_THREADS))}
        assert s["threads"]["torch"] == n and s["threads"]["numba"] == min(n, numba.config.NUMBA_NUM_THREADS)
        assert s["threads"]["numba_layer"] == os.environ.get("NUMBA_THREADING_LAYER", "workqueue")
        assert json.loads((tmp_path / "r" / "summary.json").read_text())["threads"] == s["threads"]
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


@pytest.mark.parametrize("augment", ["crop:2+flip", "none"])
def test_threads_hold_with_numba_openmp_layer(tmp_path, augment):
    """With NUMBA_THREADING_LAYER=omp, starting Numba's threads calls omp_set_num_threads and would
    undo --threads 1: at the fused loader's first launch (crop+flip), or in set_threads itself
    when no kernel ran before it (no augmentation)."""
    code = f"""
import json, numba, torch
from cnnlab.config import TrainConfig
from cnnlab.train.hooks import Hook
from cnnlab.train.loop import train
class W(Hook):
    seen = set()
    def on_step(self, t, loss, n):
        W.seen.add((torch.get_num_threads(), numba.get_num_threads()))
s = train(TrainConfig(dataset={SYN!r}, model="lenet5", epochs=1, batch_size=32, augment={augment!r}, val_size=40,
                      threads=1, device="cpu", out={str(tmp_path / 'r')!r}), quiet=True, hooks=[W()])
print(json.dumps({{"seen": sorted(W.seen), "threads": s["threads"]}}))
"""
    env = _clean_env(NUMBA_THREADING_LAYER="omp", NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["seen"] == [[1, 1]]
    assert out["threads"] == {"torch": 1, "numba": 1, "numba_layer": "omp", "busy_cores_at_start": None}


def _kernel_files(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_numba_cache_goes_to_the_user_cache(tmp_path):
    """With XDG_CACHE_HOME set and no NUMBA_CACHE_DIR, the fused loader's compiled kernel lands in
    $XDG_CACHE_HOME/cnnlab/numba, and nothing is written into the package directory."""
    code = """
import torch
import cnnlab, numba
from cnnlab.data.augment import parse_augment
from cnnlab.data.fused import fused_batch
x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
fused_batch(x, parse_augment("crop:2+flip"), torch.Generator().manual_seed(0), torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
print(numba.config.CACHE_DIR)
print(numba.threading_layer())
"""
    before = _kernel_files(PACKAGE)
    start = time.time_ns()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_clean_env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert r.returncode == 0, r.stderr
    cache_dir, layer = r.stdout.split()
    assert Path(cache_dir) == tmp_path / "xdg" / "cnnlab" / "numba"
    assert layer == "workqueue"
    names = {p.name for p in Path(cache_dir).rglob("*")}
    assert any(n.startswith("fused._kernel") and n.endswith(".nbi") for n in names), names
    assert any(n.startswith("fused._kernel") and n.endswith(".nbc") for n in names), names
    after = _kernel_files(PACKAGE)
    assert [p for p, t in after.items() if before.get(p) != t and t >= start] == []


@pytest.mark.parametrize("numba_first", [False, True])
def test_numba_settings_respect_the_user(tmp_path, numba_first):
    """An explicit NUMBA_CACHE_DIR and NUMBA_THREADING_LAYER are kept; the defaults also apply when
    numba was imported before cnnlab."""
    code = ("import numba\n" if numba_first else "") + "import cnnlab, numba\nprint(numba.config.CACHE_DIR)\n" \
        "print(numba.config.THREADING_LAYER)\n"
    run = lambda **env: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                       env=_clean_env(**env)).stdout.split()
    assert run(NUMBA_CACHE_DIR=str(tmp_path / "mine"), NUMBA_THREADING_LAYER="omp") == [str(tmp_path / "mine"), "omp"]
    assert run(HOME=str(tmp_path / "home")) == [str(tmp_path / "home" / ".cache" / "cnnlab" / "numba"), "workqueue"]


def test_a_resumed_run_keeps_its_thread_count(tmp_path, monkeypatch):
    """Threads chosen by load are recorded in the checkpoint: a run started on an idle machine and resumed
    on a busy one continues on the count it started with (another count may add in another order)."""
    from cnnlab.checkpoint import load_checkpoint

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(device, "_TORCH_DEFAULT_THREADS", 2)
    before = (torch.get_num_threads(), numba.get_num_threads())
    try:
        monkeypatch.setattr(device, "_BUSY", [0.0])  # idle at the start
        config = dict(dataset=SYN, model="lenet5", epochs=2, batch_size=32, val_size=40, device="cpu", save_every_steps=5)
        whole = train(TrainConfig(**config, out=str(tmp_path / "whole")), quiet=True)
        assert whole["threads"]["torch"] == 2 and whole["threads"]["busy_cores_at_start"] == 0.0
        run = tmp_path / "killed"
        with pytest.raises(Killed):
            train(TrainConfig(**config, out=str(run)), quiet=True, hooks=[DieAtCheckpoint(15)])  # mid epoch 2
        assert load_checkpoint(run / "checkpoints" / "last.pt")["threads"] == 2
        monkeypatch.setattr(device, "_BUSY", [2.0])  # busy when it resumes
        assert choose_threads(None) == 1
        resumed = train(None, resume=run, quiet=True)
        assert resumed["threads"]["torch"] == 2 and resumed["threads"]["busy_cores_at_start"] is None
        a, b = last_weights(tmp_path / "whole"), last_weights(run)
        assert all(torch.equal(a[k], b[k]) for k in a), "resume is not exact"
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])
