"""The benchmark scripts a user runs to choose settings for their machine: they run end to end on a
tiny model here (their timings are BENCHMARKS.md's, never asserted)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_precision_step_times_every_precision_and_format_side_by_side():
    proc = _run("precision_step.py", "--model", "c8k3-bn-relu-p2", "--batch-size", "8", "--rounds", "2", "--profile")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["fp32"], ["bf16"])]
    assert [r[:2] for r in rows] == [["fp32", "channels_last"], ["fp32", "contiguous"],
                                     ["bf16", "channels_last"], ["bf16", "contiguous"]]
    assert rows[0][4] == "1.00"  # each row against the first
    assert all(float(r[2]) > 0 and r[6].endswith("%") for r in rows)  # step ms, the convolutions' share
    assert "GFLOP per training step" in proc.stdout and "floor" in proc.stdout


def test_precision_step_refuses_a_precision_the_cpu_cannot_train_in_and_a_bad_spec():
    proc = _run("precision_step.py", "--precisions", "fp32,fp16")
    assert proc.returncode == 2
    assert "fp16 training needs a CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("precision_step.py", "--precisions", "fp32,fp17")
    assert proc.returncode == 2
    assert "unknown precision 'fp17'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("precision_step.py", "--model", "c8k3-zz")
    assert proc.returncode == 2
    assert "bad token 'zz'" in proc.stderr and "Traceback" not in proc.stderr
