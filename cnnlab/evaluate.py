"""Evaluating a model on a split: accuracy, loss, per-class accuracy, confusion matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.data.loader import BatchLoader
from cnnlab.losses import make_loss


def flip_tta(fn, x):
    """Test-time augmentation: scores averaged over each image and its horizontal mirror."""
    return (fn(x) + fn(x.flip(3))) / 2


def tta_logits(fn, x, level=1):
    """Scores with test-time augmentation `level` (the config's `tta`): 0 or False none; 1 or True
    the image and its mirror; 2 also both shifted by one pixel up-left and down-right (border
    mirrored), the shifted pair weighted half (as in Jordan, 2024)."""
    level = int(level)
    if level <= 0:
        return fn(x)
    scores = flip_tta(fn, x)
    if level == 1:
        return scores
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = (flip_tta(fn, padded[..., :h, :w]) + flip_tta(fn, padded[..., 2:, 2:])) / 2
    return (scores + shifted) / 2


@torch.no_grad()
def predict_logits(model_or_fn, split, mean, std, batch_size=1000, device="cpu", tta=False) -> torch.Tensor:
    """Scores for every image of the split, in dataset order. `model_or_fn` maps a batch to scores."""
    if isinstance(model_or_fn, torch.nn.Module):
        model_or_fn.eval()
    loader = BatchLoader(split, batch_size, mean, std, device=device)
    fn = (lambda x: tta_logits(model_or_fn, x, tta)) if tta else model_or_fn
    return torch.cat([fn(x).float().cpu() for x, _ in loader.epoch()])


def evaluate_logits(logits, y, num_classes, loss_name="softmax") -> dict:
    y = y.cpu()
    pred = logits.argmax(1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1)).tolist()
    correct = int((pred == y).sum())
    return {
        "accuracy": correct / len(y) if len(y) else float("nan"),
        "correct": correct,
        "loss": float(make_loss(loss_name)(logits, y)) if len(y) else float("nan"),
        "count": len(y),
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted class
    }


def evaluate(model, split, mean, std, num_classes, loss_name="softmax", batch_size=1000, device="cpu", tta=False) -> dict:
    logits = predict_logits(model, split, mean, std, batch_size, device, tta)
    return evaluate_logits(logits, split.y, num_classes, loss_name)
