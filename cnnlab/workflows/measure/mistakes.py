"""A trained run on one split, kept for looking at: the confusion matrix, per-class accuracy and
the images it got wrong with the highest confidence.

    run = load_run("runs/x")
    ev = evaluate_mistakes(run, run.split("test"), device="cpu")   # an Evaluation
    ev.accuracy, ev.confusion, ev.mistakes["index"]                 # most confident mistake first
    ev = Evaluation.from_saved(run.dir.read_json(run.dir.evaluation_files("test")[0]))  # no images

`cnnlab plot` and `cnnlab report` draw the confusion matrix and the mistakes grid from it. The
model runs as the run trained it to be evaluated (its normalisation and test-time augmentation,
through cnnlab.evaluate); a scratch-engine run evaluates with the PyTorch twin of its model, the
same weights. Confidence is the predicted class's softmax probability; equal confidences keep
the dataset's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.dirs import LoadedRun

MISTAKES_SHOWN = 24  # the mistakes grid: 4 rows of 6


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    count: int
    correct: int
    classes: list
    confusion: list  # rows: true class, columns: predicted class
    per_class_accuracy: list
    source: str  # where the figures come from
    saved: bool = False  # True: read from the run's evaluation.json, not evaluated now
    mistakes: dict | None = None  # images, true, pred, confidence, index (most confident first), wrong

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("accuracy", "loss", "count", "correct", "classes", "confusion",
                                           "per_class_accuracy", "source")}
        if self.mistakes is not None:
            d["mistakes"] = {k: v for k, v in self.mistakes.items() if k != "images"}
        return d

    @classmethod
    def from_saved(cls, ev: dict | None) -> "Evaluation | None":
        """The evaluation `cnnlab evaluate` wrote (evaluation.json's dict): confusion, no mistakes;
        None when there is none or it holds no confusion matrix."""
        if not ev or not ev.get("confusion"):
            return None
        classes = ev.get("classes") or [str(i) for i in range(len(ev["confusion"]))]
        return cls(ev["accuracy"], ev["loss"], ev["count"], ev["correct"], classes, ev["confusion"],
                   ev["per_class_accuracy"], "the run's evaluation.json (written by `cnnlab evaluate`)", saved=True)


def evaluate_mistakes(run: LoadedRun, data, device="cpu", shown: int = MISTAKES_SHOWN, split: str = "test") -> Evaluation:
    """Evaluate the loaded run on `data` (one split of its dataset, not empty) and keep the
    `shown` most confidently wrong images; the model is back on the CPU afterwards."""
    import torch

    from cnnlab.device import resolve_device
    from cnnlab.evaluate import evaluate_logits, predict_logits

    d = run.data
    dev = resolve_device(device)
    logits = predict_logits(run.model.to(dev), data, d["mean"], d["std"], device=dev, tta=run.config.tta)
    run.model.to("cpu")
    ev = evaluate_logits(logits, data.y, d["num_classes"], run.loss_name)
    probs = torch.softmax(logits.double(), 1)
    conf, pred = probs.max(1)
    wrong = (pred != data.y).nonzero().flatten().numpy()
    order = wrong[np.argsort(-conf.numpy()[wrong], kind="stable")][:shown]
    mistakes = {"index": order.tolist(), "true": data.y[order].tolist(), "pred": pred[order].tolist(),
                "confidence": conf[order].tolist(), "images": data.x[order].numpy(), "wrong": int(len(wrong))}
    source = f"evaluated now on the {len(data)} {split} images ({run.which} weights"
    source += ", the PyTorch twin of the scratch model)" if run.config.engine == "scratch" else ")"
    return Evaluation(ev["accuracy"], ev["loss"], ev["count"], ev["correct"], list(d["classes"]), ev["confusion"],
                      ev["per_class_accuracy"], source, mistakes=mistakes)
