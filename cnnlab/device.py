"""Choosing the compute device."""

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
