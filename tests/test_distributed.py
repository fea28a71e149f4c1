"""Data-parallel training on real torch.distributed processes (Gloo on loopback, CPU).

Two processes with the same global batch and seed train on exactly the images one process
would, batch by batch; DistributedDataParallel averages the two half-batch gradients, which adds
in another order than one process does, so weights agree to float rounding, not bitwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.dirs import RunDir

pytestmark = pytest.mark.realdata

ARGS = ["--model", "lenet5", "--dataset", "mnist", "--subset", "1536", "--val-size", "500", "--epochs", "1",
        "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--seed", "5",
        "--device", "cpu", "--quiet"]


def _args(data_dir, out, *extra):
    return [*ARGS, *(["--data-dir", data_dir] if data_dir else []), "--out", str(out), *extra]


def _weights(run):
    return load_checkpoint(RunDir(run).last)["model_state"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """One single-process run and one --nproc 2 run of the same config (shared by the tests below)."""
    from tests.conftest import _real, run_cli

    _real("mnist")
    base = tmp_path_factory.mktemp("dist")
    one = run_cli("train", *_args(data_dir, base / "one", "--threads", "1"), timeout=600)
    assert one.returncode == 0, one.stderr
    two = run_cli("train", *_args(data_dir, base / "two", "--nproc", "2"), timeout=600)
    assert two.returncode == 0, two.stderr
    return base


def test_two_processes_match_one_and_only_rank_0_writes(runs):
    one, two = RunDir(runs / "one"), RunDir(runs / "two")
    a, b = _weights(one.path), _weights(two.path)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    s1, s2 = one.read_summary(), two.read_summary()
    assert abs(s1["test_acc"] - s2["test_acc"]) <= 0.005 and s2["world_size"] == 2
    # the same batches: the per-step losses of the global batch agree
    l1, l2 = [r["loss"] for r in one.read_iterations()], [r["loss"] for r in two.read_iterations()]
    assert len(l1) == len(l2) == 1536 // 64 and max(abs(x - y) for x, y in zip(l1, l2)) < 1e-3
    # rank 0 alone wrote: no line twice, nothing but the run's own files
    log = two.log_file.read_text().splitlines()
    assert sum(line.startswith("test accuracy") for line in log) == 1 and "x 2 processes (gloo)" in log[0]
    assert sorted(p.name for p in two.path.iterdir()) == sorted(p.name for p in one.path.iterdir())


def test_two_torchrun_nodes_give_the_same_result(runs, data_dir, tmp_path):
    out, port = tmp_path / "nodes", _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "cnnlab-test",
           "-m", "cnnlab", "train", *_args(data_dir, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-2000:]
    a, b = _weights(runs / "two"), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # two nodes of one process = one node of two
    assert RunDir(out).read_summary()["test_acc"] == RunDir(runs / "two").read_summary()["test_acc"]


def _rank_pids(launcher_pid):
    """{rank: pid} of the training processes under a launcher."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(pid)
    return found


STEPS = 3 * (1536 // 64)  # the killed run's: 3 epochs of 24 steps


def _steps_written(out) -> int:
    try:
        return len(RunDir(out).read_iterations())
    except (OSError, ValueError):
        return 0


def _kill_rank_1_mid_run(args, out):
    """Start a 2-process run and SIGKILL rank 1 in epoch 2, after several checkpoints; return the
    launcher's return code and stderr, and whether the kill landed while the run was training.

    Rank 1 is stopped (SIGSTOP) before the decision: both ranks meet at every step's all-reduce, so
    once it stands still rank 0 can finish at most the step it is in, and the run cannot end under
    the check. Rows reach iterations.csv at each checkpoint (every 4 steps), so `written` lags the
    true step by at most 3: with written <= STEPS - 8, steps that need rank 1 are still ahead."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, killed = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None and not killed:
        if _steps_written(out) >= 30:
            rank1 = _rank_pids(proc.pid).get(1)
            if rank1 is None:  # both ranks train in every step: not yet seen, or already gone
                time.sleep(0.05)
                continue
            try:
                os.kill(rank1, signal.SIGSTOP)
            except ProcessLookupError:
                break
            written = _steps_written(out)
            if written > STEPS - 8 or RunDir(out).finished():
                os.kill(rank1, signal.SIGCONT)  # too late to kill mid-run: let this run end
                break
            os.kill(rank1, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err, killed


def test_a_killed_rank_fails_the_job_cleanly_and_resume_finishes(data_dir, tmp_path):
    for attempt in range(2):  # a second run when the first ended before rank 1 could be caught mid-run
        out = tmp_path / f"killed{attempt}"
        args = _args(data_dir, out, "--nproc", "2", "--save-every-steps", "4")
        args[args.index("--epochs") + 1] = "3"
        code, err, killed = _kill_rank_1_mid_run(args, out)
        if killed:
            break
    assert killed, "both runs ended before rank 1 could be killed mid-run"
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("cnnlab: error: training process 1 (rank 1) was killed by SIGKILL") and "--resume" in last
    assert "Traceback" not in err, err
    ckpt = load_checkpoint(RunDir(out).last)  # intact
    assert ckpt["progress"]["step"] >= 24 and not RunDir(out).finished()
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out), "--nproc", "2", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = RunDir(out).read_summary()
    assert s["epochs_run"] == 3 and s["world_size"] == 2
    assert [int(r["step"]) for r in RunDir(out).read_iterations()] == list(range(1, STEPS + 1))
