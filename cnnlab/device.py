"""Choosing the compute device, and making it repeatable.

`configure_determinism(True)` is what `--deterministic` does: deterministic algorithms only
(`torch.use_deterministic_algorithms`), cuDNN without benchmarking and in its deterministic
mode, and the cuBLAS workspace setting (CUBLAS_WORKSPACE_CONFIG=:4096:8) that deterministic
cuBLAS matmuls need. On the CPU cnnlab's runs are bitwise repeatable without it; on CUDA,
cuDNN picks convolution algorithms by timing, and some of them add in a varying order, so two
same-seed runs differ in the last bits unless it is on. It costs speed on CUDA (cuDNN may not
use its fastest kernels) and nothing measurable on the CPU.

`set_threads(requested)` is what `--threads` does (without it, `choose_threads` picks the
number): torch and cnnlab's Numba kernels get the same number of threads.
"""

import os

import torch

from cnnlab.errors import CnnlabError


def check_device_name(name) -> str:
    """The device name, lower-cased, if cnnlab knows it (whether it is present is resolve_device's question)."""
    n = str(name or "auto").lower()
    if n in ("auto", "cpu", "cuda") or (n.startswith("cuda:") and n[5:].isdigit()):
        return n
    raise CnnlabError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")


def resolve_device(name: str = "auto") -> torch.device:
    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CnnlabError(f"--device {name} asked for a GPU, but PyTorch sees no CUDA device: use --device cpu")
        return torch.device(name)
    return torch.device("cpu")


_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before anything changes it


_BUSY: list = []  # the busy cores measured once per process (busy_cores)


def busy_cores(seconds: float = 0.1) -> float | None:
    """How many cores other work keeps busy, measured once per process over `seconds` from /proc/stat
    (this process sleeps meanwhile, so only the others count); None where /proc/stat is not there."""
    if _BUSY:
        return _BUSY[0]

    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

    def sample():
        """{cpu: (all ticks, idle ticks)} of the cores this process may run on (a container or taskset may
        give it a few of the machine's)."""
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *ticks = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and (mine is None or int(name[3:]) in mine):
                    t = [int(v) for v in ticks[:8]]  # user nice system idle iowait irq softirq steal
                    out[int(name[3:])] = (sum(t), t[3] + t[4])
        return out

    try:
        import time

        before = sample()
        time.sleep(seconds)
        after = sample()
        busy = sum(1 - (after[c][1] - before[c][1]) / (after[c][0] - before[c][0])
                   for c in before if c in after and after[c][0] > before[c][0])
        _BUSY.append(max(busy, 0.0) if before else None)
    except (OSError, ValueError, IndexError):
        _BUSY.append(None)
    return _BUSY[0]


def choose_threads(requested: int | None) -> int:
    """The CPU threads a run uses: `requested` (--threads); else torch's default (one per core, or
    OMP_NUM_THREADS) less the cores other work keeps busy when the run starts (`busy_cores`: a core
    more than a quarter busy counts), at least 1. Where the load cannot be measured, one core is kept free.

    Measured on a shared 2-core machine (BENCHMARKS.md, "Threads under load"): LeNet-5 trains
    1.6x faster on 2 threads than on 1 while nothing else runs, but each of its many small parallel
    operations waits for both threads, so with other jobs on the machine 2 threads fell to 4-17%
    of 1 thread's speed. So an idle machine gets every core and a busy one keeps the busy cores free.
    """
    if requested:
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return _TORCH_DEFAULT_THREADS  # the user's choice
    import math

    from cnnlab.envinfo import cpu_cores

    busy = busy_cores()
    taken = 1 if busy is None else max(0, math.ceil(busy - 0.25))
    return max(1, min(_TORCH_DEFAULT_THREADS, cpu_cores() - taken))


def set_threads(requested: int | None) -> dict:
    """Give torch and cnnlab's Numba kernels (the loader's fused pass, the scratch engine)
    choose_threads(requested) threads each; return the settings in force (for summary.json).

    With Numba's OpenMP layer (NUMBA_THREADING_LAYER=omp), starting Numba's threads resets OpenMP's
    thread count, so Numba's are set (and started) first, and a caller sets threads after any
    parallel kernel's first launch (BatchLoader.warm_up). Numba's count is per Python thread: this
    sets it for the calling one, the one that trains."""
    import numba

    n = choose_threads(requested)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
    busy = None if requested else _BUSY[0] if _BUSY else None
    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads(), "numba_layer": numba.threading_layer(),
            "busy_cores_at_start": None if busy is None else round(busy, 2)}


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CUBLAS_WORKSPACE = ":4096:8"


def configure_determinism(deterministic: bool) -> dict:
    """Set (or, with False, clear) the process-wide settings for bitwise-repeatable runs; return them."""
    if deterministic:
        # read when cuBLAS makes its handle, so it is set before any CUDA work of this run
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(bool(deterministic))
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = False
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
