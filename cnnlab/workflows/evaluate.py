"""Evaluating and predicting with a trained run.

    result = evaluate_run("runs/x", split="test")    # accuracy, loss, per-class, confusion; written
    info = predict_run("runs/x", split="test")       # predictions.csv: id,label in dataset order

Both load the run (`cnnlab.rundir.load_run`), its dataset with the run's own seeded split,
evaluate with the run's test-time augmentation, and write through the RunDir.
"""

from __future__ import annotations

from cnnlab.device import resolve_device
from cnnlab.evaluate import evaluate, predict_logits
from cnnlab.rundir import load_run


def evaluate_run(run_dir, split: str = "test", checkpoint: str = "best", data_dir=None, device="auto",
                 write: bool = True) -> dict:
    run = load_run(run_dir, checkpoint)
    data = run.split(split, data_dir)
    dev = resolve_device(device)
    d = run.data
    result = evaluate(run.model.to(dev), data, d["mean"], d["std"], d["num_classes"], run.loss_name, device=dev,
                      tta=run.config.tta)
    result.update(split=split, checkpoint=checkpoint, classes=d["classes"])
    if write:
        result["files"] = [str(p) for p in run.dir.write_evaluation(split, result, d["classes"])]
    return result


def predict_run(run_dir, split: str = "test", checkpoint: str = "best", out=None, names: bool = False,
                data_dir=None, device="auto") -> dict:
    run = load_run(run_dir, checkpoint)
    data = run.split(split, data_dir)
    dev = resolve_device(device)
    d = run.data
    pred = predict_logits(run.model.to(dev), data, d["mean"], d["std"], device=dev, tta=run.config.tta).argmax(1).tolist()
    labels = [d["classes"][p] for p in pred] if names else pred
    path = run.dir.write_predictions(labels, out)
    return {"predictions": str(path), "rows": len(pred), "split": split}
