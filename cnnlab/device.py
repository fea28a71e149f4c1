"""Choosing the compute device, and making it repeatable.

`configure_determinism(True)` is what `--deterministic` does: deterministic algorithms only
(`torch.use_deterministic_algorithms`), cuDNN without benchmarking and in its deterministic
mode, and the cuBLAS workspace setting (CUBLAS_WORKSPACE_CONFIG=:4096:8) that deterministic
cuBLAS matmuls need. On the CPU cnnlab's runs are bitwise repeatable without it; on CUDA,
cuDNN picks convolution algorithms by timing, and some of them add in a varying order, so two
same-seed runs differ in the last bits unless it is on. It costs speed on CUDA (cuDNN may not
use its fastest kernels) and nothing measurable on the CPU.
"""

import os

import torch

from cnnlab.errors import CnnlabError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CnnlabError(f"--device {name} asked for a GPU, but PyTorch sees no CUDA device: use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise CnnlabError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")


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
