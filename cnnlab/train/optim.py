"""Optimizers by name.

`build_optimizer(model, name, lr, ...)` returns a `torch.optim.Optimizer`. Weight decay is
applied to weights only: biases and normalisation parameters (every parameter with fewer
than two dimensions) are left undecayed, as is usual for convnets.
"""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError

DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def optimizer_names() -> list[str]:
    return sorted(DEFAULT_LR)


def build_optimizer(model, name: str, lr: float | None = None, momentum: float = 0.9, nesterov: bool = False,
                    weight_decay: float = 0.0, **args) -> torch.optim.Optimizer:
    name = name.lower()
    if name not in DEFAULT_LR:
        raise CnnlabError(f"unknown optimizer '{name}': choose one of {', '.join(optimizer_names())}")
    lr = DEFAULT_LR[name] if lr is None else lr
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, **args)
    return torch.optim.Adam(groups, lr=lr, **args)
