"""Evaluating a model on a split: accuracy, loss, per-class accuracy, confusion matrix.

    test = labels_for_model(ds.test, ds.classes, model_classes, ds.name)   # labels as the model's indices
    result = evaluate(model, test, mean, std, len(model_classes))

A trained model meets a dataset through `labels_for_model` only (a run's `LoadedRun.split`, an
exported file's `file_split`): the model's recorded class names decide what each label means, so a
dataset whose classes come in another order, or only some of them, is scored right, and one with
classes the model does not know is refused. The model is always fed with the mean/std it trained with
(the run's checkpoint or the file's metadata), never the evaluated dataset's own statistics.
"""

from __future__ import annotations

import re
from collections import Counter

import torch
import torch.nn.functional as F

from cnnlab.data.datasets import Split
from cnnlab.data.loader import BatchLoader
from cnnlab.errors import DataError, warn
from cnnlab.losses import make_loss


def _key(name) -> str:
    """A class name with case, spaces and punctuation ignored: an image folder cannot be named
    Fashion-MNIST's `T-shirt/top`, so `T-shirt_top` or `t-shirt top` stand for it."""
    return re.sub(r"[\W_]+", "", str(name).casefold())


def _names(names, shown: int = 6) -> str:
    names = [str(n) for n in names]
    more = ", ..." if len(names) > shown else ""
    return "[" + ", ".join(names[:shown]) + more + "]"


def labels_for_model(split: Split, data_classes, model_classes, dataset: str) -> Split:
    """`split` (of a dataset whose classes are `data_classes`) with its labels as indices of
    `model_classes`, the classes the model scores, in its order.

    Each dataset class is matched to the model's class of the same name (exactly, else with case,
    spaces and punctuation ignored). The same names in the same order give the split unchanged;
    another order, or a subset of the model's classes, gives the labels remapped by name and one
    warning line. A class the model does not know is a DataError naming both class lists."""
    data_classes, model_classes = [str(c) for c in data_classes], [str(c) for c in model_classes]
    if data_classes == model_classes:
        return split
    exact = {c: i for i, c in enumerate(model_classes)}
    counts = Counter(_key(c) for c in model_classes)
    loose = {_key(c): i for i, c in enumerate(model_classes) if counts[_key(c)] == 1}
    index = [exact.get(c, loose.get(_key(c))) for c in data_classes]
    unknown = [c for c, i in zip(data_classes, index) if i is None]
    twice = [c for c, i in zip(data_classes, index) if i is not None and index.count(i) > 1]
    if unknown or twice:
        why = (f"{_names(unknown)} {'is' if len(unknown) == 1 else 'are'} not among the model's classes" if unknown
               else f"{_names(twice)} name the same class of the model")
        raise DataError(f"{dataset} does not have the model's classes ({why}): the model scores "
                        f"{len(model_classes)} classes {_names(model_classes)}, {dataset} has {len(data_classes)} "
                        f"{_names(data_classes)}; give a dataset whose classes are named as the model's (an image "
                        "folder: one folder per class)")
    if index == list(range(len(model_classes))):
        return split  # the same classes, spelled differently
    how = (f"holds {len(data_classes)} of the model's {len(model_classes)} classes" if len(data_classes) < len(model_classes)
           else "orders its classes differently from the model")
    warn(f"{dataset} {how}: its labels are matched to the model's classes by name")
    return Split(split.x, torch.tensor(index, dtype=torch.int64)[split.y])


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


TTA_PASSES = {0: 1, 1: 2, 2: 6}  # forward passes per image at each level of tta_logits


def tta_passes(level) -> int:
    """Forward passes per image that test-time augmentation `level` costs (tta_logits)."""
    return TTA_PASSES[max(0, min(2, int(level or 0)))]


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
