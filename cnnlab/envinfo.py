"""Where cnnlab runs: the machine (CPU, memory, GPUs, library versions, for `cnnlab env` and
benchmarks) and the user's cache folder.

    environment()["cpu_cores"]          # 16
    provenance()                        # cnnlab version, git commit, machine: what a result needs
    user_cache_dir("pretrained")        # ~/.cache/cnnlab/pretrained (nothing is created)

cnnlab's cache root is $CNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/cnnlab, else ~/.cache/cnnlab. Each
kind of cached file has a folder of its own under it: data/ (downloaded datasets, unless
$CNNLAB_DATA_DIR is set), decoded/ (decoded dataset arrays), pretrained/ (downloaded weights),
numba/ (compiled kernels, unless $NUMBA_CACHE_DIR is set), timeloop/ (Timeloop mappings).
This module imports nothing of cnnlab at its top, so `cnnlab/__init__.py` can use it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


CACHE_KINDS = ("data", "decoded", "pretrained", "numba", "timeloop")


def user_cache_dir(kind: str) -> Path:
    """The folder of one kind of cached file (CACHE_KINDS) under cnnlab's cache root."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; cnnlab's are {', '.join(CACHE_KINDS)}")
    root = os.environ.get("CNNLAB_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab"
    return Path(root).expanduser() / kind


def _cpuinfo():
    model, mhz = platform.processor() or "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("unknown", "", platform.processor()):
                    model = value.strip()
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
    except OSError:
        pass
    return model, mhz


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def meminfo_bytes(key: str) -> int | None:
    """A /proc/meminfo figure in bytes (`MemTotal`, `MemAvailable`, ...); None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _memory_gib():
    total = meminfo_bytes("MemTotal")
    return None if total is None else round(total / 2**30, 1)


def environment() -> dict:
    import numpy
    import torch

    model, mhz = _cpuinfo()
    cores = cpu_cores()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    return {
        "cpu_model": model, "cpu_cores": cores, "cpu_mhz": mhz, "memory_gib": _memory_gib(),
        "torch_threads": torch.get_num_threads(),
        "gpu_count": len(gpus), "gpus": gpus,
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if gpus else None,
        "numpy": numpy.__version__,
    }


def git_commit() -> dict:
    """The commit cnnlab runs from when it runs from a git checkout: {"git_commit", "git_dirty"}
    (None, None for an installed copy)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": head, "git_dirty": dirty}


def provenance() -> dict:
    """What a result needs to be traced: the cnnlab version, the git commit and the machine."""
    from cnnlab import __version__

    return {"cnnlab_version": __version__, **git_commit(), "environment": environment()}
