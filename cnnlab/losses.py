"""The loss table: every classification loss cnnlab trains with, by name, for both engines.

    LOSSES["svm"]                        a Loss: its PyTorch function, its scratch function (or None)
    make_loss("softmax", 0.1)(scores, y) the PyTorch loss, a scalar tensor (mean over the batch)
    check_loss("svm", label_smoothing)   raises CnnlabError for an unknown name or smoothing it lacks

A loss is one registered PyTorch function `fn(scores, y[, label_smoothing])`; the NumPy engine
registers its own function for the same name (cnnlab.scratch.losses, `register_scratch_loss`), which
returns `(loss, d loss / d scores)`. A name that the scratch engine has not registered trains with
the PyTorch engine only. Adding a loss:

    @register_loss("squared_hinge", label_smoothing=False)
    def squared_hinge(scores, y):
        correct = scores.gather(1, y[:, None])
        return ((scores - correct + 1).clamp_min(0) ** 2).sum(1).sub(1).mean()

The names are also a spec's last token (`c32k3-relu-fc10-svm`, cnnlab.models.spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError


@dataclass
class Loss:
    name: str
    torch: Callable  # (scores, y[, label_smoothing]) -> mean loss, a scalar tensor
    label_smoothing: bool  # whether `torch` (and `scratch`) take a label_smoothing argument
    scratch: Callable | None = None  # (scores, y[, label_smoothing]) -> (mean loss, d loss / d scores), NumPy


LOSSES: dict[str, Loss] = {}


def register_loss(name: str, label_smoothing: bool = True):
    """Decorator: `fn` is the PyTorch loss `name`; with `label_smoothing`, it takes that argument."""
    def register(fn):
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice")
        LOSSES[name] = Loss(name, fn, label_smoothing)
        return fn

    return register


def register_scratch_loss(name: str):
    """Decorator: `fn` is the NumPy engine's version of the registered loss `name`."""
    def register(fn):
        LOSSES[name].scratch = fn
        return fn

    return register


def check_loss(name: str, label_smoothing: float = 0.0) -> Loss:
    """The registered loss `name`; a CnnlabError for an unknown name, or for label smoothing on a
    loss that has none."""
    if name not in LOSSES:
        raise CnnlabError(f"unknown loss '{name}': choose {' or '.join(LOSSES)}")
    loss = LOSSES[name]
    if label_smoothing and not loss.label_smoothing:
        smoothed = " and ".join(n for n, entry in LOSSES.items() if entry.label_smoothing)
        raise CnnlabError(f"label smoothing applies to the {smoothed} loss only, not to {name}")
    return loss


def make_loss(name: str, label_smoothing: float = 0.0):
    """The PyTorch loss `name` as `fn(scores, y)`. A loss without label smoothing ignores it here,
    as the PyTorch engine always has; the NumPy engine refuses it (cnnlab.scratch.losses)."""
    loss = check_loss(name)
    if loss.label_smoothing:
        return lambda s, y: loss.torch(s, y, label_smoothing=label_smoothing)
    return loss.torch


@register_loss("softmax")
def cross_entropy(scores: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the softmax of the scores; with label smoothing eps the target is
    (1 - eps) one-hot + eps / C."""
    return F.cross_entropy(scores, y, label_smoothing=label_smoothing)


@register_loss("svm", label_smoothing=False)
def multiclass_hinge(scores: torch.Tensor, y: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Multiclass SVM loss (Weston & Watkins): mean over the batch of sum_{j != y} max(0, s_j - s_y + margin).
    This is `torch.nn.MultiMarginLoss` times the number of classes."""
    correct = scores.gather(1, y[:, None])
    margins = (scores - correct + margin).clamp_min(0)
    return (margins.sum(1) - margin).mean()  # the j == y term contributes exactly `margin`
