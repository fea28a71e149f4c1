"""Losses on class scores, each returning `(mean loss over the batch, d loss / d scores)`.

softmax: cross-entropy of the softmax of the scores, as torch.nn.functional.cross_entropy
    (with optional label smoothing eps: the target is (1 - eps) one-hot + eps / C).

svm: the multiclass hinge loss of cs231n,
        L = 1/N sum_i sum_{j != y_i} max(0, s_ij - s_iy_i + 1).
    PyTorch's nn.MultiMarginLoss(margin=1) averages the same sum over the C classes too,
    so L = C * MultiMarginLoss(margin=1)(scores, y). The hinge's subgradient at the kink is 0.
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import CnnlabError

LOSSES = ("softmax", "svm")


def softmax_loss(scores, y, label_smoothing=0.0):
    n, c = scores.shape
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.zeros_like(scores)
    target[np.arange(n), y] = 1
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / c
    loss = -(target * log_probs).sum() / n
    return float(loss), (np.exp(log_probs) - target) / n


def svm_loss(scores, y):
    n = scores.shape[0]
    correct = scores[np.arange(n), y][:, None]
    margins = np.maximum(0, scores - correct + 1)
    margins[np.arange(n), y] = 0
    active = (margins > 0).astype(scores.dtype)
    active[np.arange(n), y] = -active.sum(axis=1)
    return float(margins.sum() / n), active / n


def compute_loss(name, scores, y, label_smoothing=0.0):
    if name == "softmax":
        return softmax_loss(scores, y, label_smoothing)
    if name == "svm":
        if label_smoothing:
            raise CnnlabError("label smoothing applies to the softmax loss only, not to svm")
        return svm_loss(scores, y)
    raise CnnlabError(f"unknown loss '{name}': choose one of {', '.join(LOSSES)}")
