"""Losses on class scores, each returning `(mean loss over the batch, d loss / d scores)`.

softmax: cross-entropy of the softmax of the scores, as torch.nn.functional.cross_entropy
    (with optional label smoothing eps: the target is (1 - eps) one-hot + eps / C).

svm: the multiclass hinge loss of cs231n,
        L = 1/N sum_i sum_{j != y_i} max(0, s_ij - s_iy_i + 1).
    PyTorch's nn.MultiMarginLoss(margin=1) averages the same sum over the C classes too,
    so L = C * MultiMarginLoss(margin=1)(scores, y). The hinge's subgradient at the kink is 0.

Each function is registered against its name in the one loss table (cnnlab.losses.LOSSES), next to
the PyTorch loss of that name; `compute_loss(name, scores, y, label_smoothing)` looks it up there:

    loss, dscores = compute_loss("svm", scores, y)
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.losses import LOSSES, check_loss, register_scratch_loss


@register_scratch_loss("softmax")
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


@register_scratch_loss("svm")
def svm_loss(scores, y):
    n = scores.shape[0]
    correct = scores[np.arange(n), y][:, None]
    margins = np.maximum(0, scores - correct + 1)
    margins[np.arange(n), y] = 0
    active = (margins > 0).astype(scores.dtype)
    active[np.arange(n), y] = -active.sum(axis=1)
    return float(margins.sum() / n), active / n


def compute_loss(name, scores, y, label_smoothing=0.0):
    loss = check_loss(name, label_smoothing)
    if loss.scratch is None:
        numpy = [n for n, entry in LOSSES.items() if entry.scratch is not None]
        raise CnnlabError(f"the scratch engine has no '{name}' loss: choose {' or '.join(numpy)}, "
                          "or use --engine torch")
    if loss.label_smoothing:
        return loss.scratch(scores, y, label_smoothing)
    return loss.scratch(scores, y)
