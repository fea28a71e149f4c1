"""Cluster job scripts: golden files, shell syntax, and submission through stand-in schedulers.

No Slurm or LSF runs here, so `sbatch` and `bsub` are stand-in executables on PATH that record
their arguments and standard input and answer as the real ones do; the scripts' torchrun lines
are the ones tests/test_distributed.py runs for real (two agents, c10d rendezvous)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cnnlab.cli import main

GOLDEN = Path(__file__).parent / "data" / "cluster"
CASES = {
    "2x4gpu": (["--nodes", "2", "--gpus-per-node", "4", "--queue", "gpu", "--walltime", "02:30:00",
                "--cpus-per-node", "32", "--mem", "64G", "--job-name", "r20", "--python", "/opt/venv/bin/python"],
               ["cnnlab", "train", "--model", "resnet20", "--dataset", "cifar10", "--epochs", "30", "--out",
                "runs/r20 final"]),
    "3x2cpu": (["--nodes", "3", "--procs-per-node", "2"],
               ["cnnlab", "train", "--model", "lenet5", "--dataset", "mnist", "--batch-size", "132", "--set",
                "optimizer_args={betas: [0.9, 0.99]}"]),  # 132: a global batch that 6 processes split
}


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_scripts_match_golden_files_and_pass_bash_n(tmp_path, monkeypatch, scheduler, case):
    monkeypatch.chdir(tmp_path)
    opts, command = CASES[case]
    out = tmp_path / "job.sh"
    assert main(["cluster", scheduler, *opts, "--out", str(out), "--", *command]) == 0
    assert out.read_text() == (GOLDEN / f"{scheduler}_{case}.sh").read_text()
    assert subprocess.run(["bash", "-n", str(out)], capture_output=True).returncode == 0
    assert os.access(out, os.X_OK) and (tmp_path / "logs").is_dir()


def _stand_in(bin_dir: Path, name: str, answer: str):
    """An executable that records its argv and stdin to <name>.json and prints `answer`."""
    record = bin_dir / f"{name}.json"
    script = bin_dir / name
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
stdin = "" if sys.stdin.isatty() else sys.stdin.read()
json.dump({{"argv": sys.argv[1:], "stdin": stdin}}, open({str(record)!r}, "w"))
print({answer!r})
""")
    script.chmod(0o755)
    return record


@pytest.mark.parametrize("scheduler, tool, answer, job", [
    ("slurm", "sbatch", "Submitted batch job 4242", "4242"),
    ("lsf", "bsub", "Job <777> is submitted to queue <normal>.", "777"),
])
def test_submit_hands_the_script_to_the_scheduler(tmp_path, monkeypatch, capsys, scheduler, tool, answer, job):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = _stand_in(bin_dir, tool, answer)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", scheduler, "--nodes", "2", "--submit", "--json", "--", "cnnlab", "train"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["job_id"] == job
    seen = json.loads(record.read_text())
    script = Path(info["script"]).read_text()
    if tool == "sbatch":
        assert seen["argv"] == [info["script"]]
    else:  # bsub reads the script from standard input
        assert seen["argv"] == [] and seen["stdin"] == script


def test_a_missing_scheduler_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", "slurm", "--submit", "--", "cnnlab", "train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: sbatch not found") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--", "cnnlab", "evaluate", "runs/x"], "give the training command after --"),
    ([], "give the training command after --"),
    (["--", "cnnlab", "train", "--nproc", "2"], "drop --nproc"),
    (["--walltime", "2h", "--", "cnnlab", "train"], "bad --walltime '2h'"),
    (["--nodes", "0", "--", "cnnlab", "train"], "--nodes must be at least 1"),
    (["--mem", "lots", "--", "cnnlab", "train"], "bad --mem 'lots'"),
])
def test_bad_requests_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", "slurm", *args]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.sh"))


@pytest.mark.parametrize("opts, train, message", [
    ([], ["--bogus"], "in the training command after --: unrecognized arguments: --bogus"),
    ([], ["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    ([], ["--model", "nosuch"], "unknown model 'nosuch'"),
    ([], ["--lr", "-1"], "--lr must be a positive finite number"),
    ([], ["--resume", "runs/none"], "run directory runs/none does not exist"),
    ([], ["--resume", "runs/x", "--epochs", "3"], "--resume continues a run with its own config"),
    (["--nodes", "3", "--procs-per-node", "2"], ["--batch-size", "64"], "--batch-size 64 does not split evenly over 6 processes"),
    ([], ["--device", "cuda"], "the training command asks for --device cuda, but the job asks for no GPUs"),
])
def test_the_training_command_is_checked_before_the_script_is_written(tmp_path, monkeypatch, capsys, opts, train,
                                                                     message):
    """As `cnnlab train` checks it before reading data: its parser, its validation, and the job's processes."""
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", "slurm", "--nodes", "2", *opts, "--", "cnnlab", "train", *train]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # no script, no log folder


def test_a_stray_double_dash_elsewhere_is_refused(capsys):
    assert main(["models", "--", "x"]) == 2
    assert "unexpected '-- x'" in capsys.readouterr().err
