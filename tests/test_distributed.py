"""Data-parallel training on real torch.distributed processes (Gloo on loopback, CPU).

Two processes with the same global batch and seed train on exactly the images one process
would, batch by batch; DistributedDataParallel averages the two half-batch gradients, which adds
in another order than one process does, so weights agree to float rounding, not bitwise.

The launcher's checks, signals and failures run on a small synthetic dataset (seconds a run);
the process that dies inside DDP's backward pass is killed by its own model's forward, so the
other one meets the failure exactly in the gradient all-reduce."""

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
from cnnlab.cli import main
from cnnlab.dirs import RunDir
from cnnlab.envinfo import cpu_cores

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
    # one line for the job: rank 0 loses rank 1 in whichever exchange it is in (DDP's backward
    # all-reduce included) and stays quiet; the launcher names rank 1 and the real run directory
    assert "Traceback" not in err, err
    said = [line for line in err.strip().splitlines() if not line.startswith("cnnlab: warning: ")]  # e.g. data files
    assert len(said) == 1, err
    last = said[0]
    assert last.startswith("cnnlab: error: training process 1 (rank 1) was killed by SIGKILL")
    assert last.endswith(f"continue the run with: cnnlab train --resume {out} --nproc 2"), last
    ckpt = load_checkpoint(RunDir(out).last)  # intact
    assert ckpt["progress"]["step"] >= 24 and not RunDir(out).finished()
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out), "--nproc", "2", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = RunDir(out).read_summary()
    assert s["epochs_run"] == 3 and s["world_size"] == 2
    assert [int(r["step"]) for r in RunDir(out).read_iterations()] == list(range(1, STEPS + 1))


# ---- the launcher's checks, signals and failures (a small synthetic dataset, no real data) ----

SYNTH = ["--model", "c4k3-relu-p2-fc4", "--dataset", "synthetic:shape=1x8x8,classes=4,train=3000,test=100",
         "--val-size", "88", "--batch-size", "16", "--device", "cpu", "--quiet", "--save-every-steps", "4"]
SYNTH_STEPS = (3000 - 88) // 16  # per epoch: two epochs take 2-3 s on 2 cores, long enough to be signalled


def _two_cores():
    if cpu_cores() < 2:
        pytest.skip("--nproc 2 needs 2 CPU cores")


@pytest.mark.parametrize("extra, message", [
    (["--nproc", str(cpu_cores() + 1)], f"--nproc {cpu_cores() + 1} is more processes than the {cpu_cores()} CPU "
                                        f"cores this process may use: use --nproc {cpu_cores()} or fewer"),
    (["--nproc", "0"], "--nproc must be at least 1, got 0"),
    (["--nproc", "2", "--batch-size", "3"], "--batch-size 3 does not split evenly over 2 processes"),
    (["--nproc", "2", "--subset", "50"], "the 50 training images are fewer than one --batch-size 128 batch"),
    (["--nproc", "2", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["--nproc", "2", "--engine", "scratch", "--model", "c4k3-relu-fc10"], "the scratch engine trains in one process"),
])
def test_nproc_is_checked_before_any_process_starts(tmp_path, monkeypatch, capsys, extra, message):
    if extra[1] == "2":
        _two_cores()
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "synthetic", "--device", "cpu", "--out", "run", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # no run directory, nothing else


def test_nproc_is_one_process_per_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["train", "--dataset", "synthetic", "--device", "cuda", "--nproc", str(gpus + 1)]) == 2
    err = capsys.readouterr().err
    expected = (f"--nproc {gpus + 1} needs one GPU per process, and this machine has {gpus}" if gpus else
                "--device cuda asked for a GPU, but PyTorch sees no CUDA device")
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _all_gone(pids, within_s) -> bool:
    deadline = time.time() + within_s
    while any(_alive(p) for p in pids):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_the_launcher_stops_every_process_and_the_run_resumes(tmp_path, sig):
    """SIGTERM: torchrun passes it on; SIGKILL: the processes see their launcher gone
    (cnnlab.train.launch.follow_launcher). Either way each process stops at the same step with a
    checkpoint, none is left running, and --resume ends exactly as an uninterrupted run would."""
    _two_cores()
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *SYNTH, "--epochs", "2", "--nproc", "2",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ranks, deadline = {}, time.time() + 120
        while proc.poll() is None and time.time() < deadline and not (len(ranks) == 2 and RunDir(out).last.exists()):
            ranks = _rank_pids(proc.pid)
            time.sleep(0.05)
        assert proc.poll() is None and len(ranks) == 2, "the run ended before it could be signalled"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=90)  # the processes hold its stderr open until they end
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _all_gone(ranks.values(), within_s=45), "training processes outlived their launcher"
    assert "Traceback" not in err, err
    status, why = RunDir(out).status()
    assert status == "stopped" and why.endswith(f"continue with: cnnlab train --resume {out} --nproc 2"), (status, why)
    if sig == signal.SIGTERM:  # rank 0 says it, once; the launcher adds nothing
        assert proc.returncode == 130 and err.strip().splitlines() == [f"cnnlab: {why}"], err
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out), "--nproc", "2", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert RunDir(out).read_summary()["epochs_run"] == 2
    assert [int(row["step"]) for row in RunDir(out).read_iterations()] == list(range(1, 2 * SYNTH_STEPS + 1))


DIES_IN_FORWARD = """
import os, signal, sys
import torch
from cnnlab.models.registry import register_model

class DiesOnRank1(torch.nn.Module):  # a linear classifier; its rank-1 copy is SIGKILLed in its 6th training forward
    def __init__(self, features, classes):
        super().__init__()
        self.net, self.calls = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, classes)), 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if os.environ["RANK"] == "1" and self.calls == 6:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)

@register_model("dies_on_rank_1")
def dies_on_rank_1(num_classes=10, in_channels=1, input_size=8, **_):
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    return DiesOnRank1(in_channels * h * w, num_classes)

from cnnlab.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_rank_lost_in_ddps_backward_all_reduce_is_one_line(tmp_path):
    """Rank 1 dies in its forward pass, so rank 0's next exchange is DDP's gradient all-reduce in
    loss.backward(): it ends with cnnlab's one line and the command that continues the run (two
    processes started by hand, as torchrun would, so that rank 0's own stderr is seen)."""
    script = tmp_path / "dies.py"
    script.write_text(DIES_IN_FORWARD)
    out = tmp_path / "run"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(script), "train", *SYNTH, "--model", "dies_on_rank_1", "--epochs", "1",
            "--out", str(out)]
    procs = [subprocess.Popen(args, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for r in (0, 1)]
    (_, err0), (_, err1) = [p.communicate(timeout=300) for p in procs]
    assert procs[1].returncode == -signal.SIGKILL, err1
    assert "Traceback" not in err0, err0
    assert procs[0].returncode == 4 and len(err0.strip().splitlines()) == 1, err0
    assert err0.startswith("cnnlab: error: lost contact with another training process") and err0.strip().endswith(
        f"continue the run with: torchrun (with the same options) -m cnnlab train --resume {out}"), err0
