"""Parameter and multiply-accumulate counts of a model, for `cnnlab models` and study tables.

MACs count the convolutions and fully connected layers only (one multiply-add per weight
use); batch norm, activations, pooling and additions are left out, as papers usually do.
This is the quick count for listings; `cnnlab.cost` does the full per-layer accounting (FLOPs,
bytes, functional ops) and a test keeps the two MAC totals equal for every registered model.
"""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_shape=(3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass on a single image of shape (C, H, W)."""
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            per_output = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            total += output[0].numel() * per_output
        else:
            total += mod.in_features * mod.out_features * (output[0].numel() // mod.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def model_summary(name: str, in_shape=(3, 32, 32), num_classes: int = 10, **model_args) -> dict:
    """{'name', 'params', 'macs', 'doc'} for a registered model (or a spec string)."""
    from cnnlab.models.registry import create_model

    c, h, w = in_shape
    model = create_model(name, num_classes=num_classes, in_channels=c, input_size=(h, w), **model_args)
    doc = (model_doc(name) or type(model).__doc__ or "").strip().splitlines()
    return {"name": name, "params": count_params(model), "macs": count_macs(model, in_shape),
            "doc": doc[0] if doc else ""}


def model_doc(name: str) -> str:
    from cnnlab.models.registry import model_builder

    try:
        return model_builder(name).__doc__ or ""
    except Exception:  # a spec string has no builder doc of its own
        return ""
