"""The two classification losses every cnnlab engine offers."""

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

LOSSES = ("softmax", "svm")


def multiclass_hinge(scores: torch.Tensor, y: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Multiclass SVM loss (Weston & Watkins): mean over the batch of sum_{j != y} max(0, s_j - s_y + margin).
    This is `torch.nn.MultiMarginLoss` times the number of classes."""
    correct = scores.gather(1, y[:, None])
    margins = (scores - correct + margin).clamp_min(0)
    return (margins.sum(1) - margin).mean()  # the j == y term contributes exactly `margin`


def make_loss(name: str, label_smoothing: float = 0.0):
    if name == "softmax":
        return lambda s, y: F.cross_entropy(s, y, label_smoothing=label_smoothing)
    if name == "svm":
        return multiclass_hinge
    raise CnnlabError(f"unknown loss '{name}': choose softmax or svm")
