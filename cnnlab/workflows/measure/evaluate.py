"""Evaluating and predicting with a trained run.

    result = evaluate_run("runs/x", split="test")    # accuracy, loss, per-class, confusion; written
    info = predict_run("runs/x", split="test")       # predictions.csv: id,label in dataset order
    info = predict_run("model.onnx")                 # an exported file, on its runtime: ./predictions.csv

Both load the run (`cnnlab.dirs.load_run`), its dataset with the run's own seeded split,
evaluate with the run's test-time augmentation and normalisation, and write through the RunDir. An
exported file (`cnnlab export`) carries the same facts in its metadata, so it predicts without its run
directory, on ONNX Runtime, TorchScript, Keras or (safetensors) PyTorch.

The dataset's labels are matched to the model's recorded class names (`cnnlab.evaluate.labels_for_model`,
through `LoadedRun.split` and `file_split`): another order or a subset of the classes is scored right,
per-class figures and predictions are in the model's classes, and unknown classes are refused.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.device import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate, evaluate_logits, predict_logits, tta_passes
from cnnlab.dirs import RunDir, load_run
from cnnlab.workflows.export import load_for_runtime
from cnnlab.workflows.export import INT8, NATIVE_RUNTIME, file_split, format_for_runtime, ort_providers, sniff_format


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


def is_exported_file(path) -> bool:
    """True for a file (anything but a run directory): it is then read as an export, or refused in one line."""
    p = Path(path)
    return not RunDir(p).is_run() and not p.is_dir() and p.exists()


def refuse_checkpoint(path, checkpoint):
    """A checkpoint asked of an exported file is a one-line error: the file holds the weights it was
    exported with, so best or last would be silently ignored."""
    if checkpoint is not None:
        raise CnnlabError(f"--checkpoint applies to a run directory, but {path} is an exported model file, which holds "
                          "one set of weights: leave --checkpoint out, or export the other weights with "
                          f"`cnnlab export RUN_DIR --checkpoint {checkpoint}`")


def file_device(path, device="auto", runtime=None):
    """The device for an exported file: `auto` is CUDA only where the file's runtime can use it."""
    if device != "auto":
        return resolve_device(device)
    dev = resolve_device("auto")
    runtime = runtime or NATIVE_RUNTIME[sniff_format(path)]
    if dev.type == "cuda" and (runtime == "keras" or (runtime == "onnxruntime" and ort_providers(dev)[1])):
        dev = resolve_device("cpu")
    return dev


def evaluate_file(path, split: str = "test", data_dir=None, device="auto", dataset=None, runtime=None) -> dict:
    """Accuracy, loss, per-class accuracy and confusion of an exported file on a split (nothing written)."""
    pred = load_for_runtime(path, runtime, file_device(path, device, runtime))
    data = file_split(pred.meta, split, data_dir, dataset)
    logits = predict_logits(pred, data, *pred.norm(), device=pred.input_device, tta=int(pred.meta.get("tta") or 0))
    result = evaluate_logits(logits, data.y, int(pred.meta["num_classes"]), pred.meta.get("loss") or "softmax")
    result.update(split=split, model_file=str(path), runtime=pred.runtime, classes=pred.meta["classes"])
    return result


def predict_run(run_dir, split: str = "test", checkpoint: str | None = None, out=None, names: bool = False,
                data_dir=None, device="auto", dataset=None, runtime: str = "auto") -> dict:
    """predictions.csv of a run directory (RUN_DIR/predictions.csv) or of an exported file
    (./predictions.csv unless `out`); `dataset` predicts a file on another dataset of the same shape.
    `checkpoint` (best, the default, or last) applies to a run directory only. `runtime`: a run directory
    predicts on the fastest float32 runtime here by default (`bench.choose_runtime`), a file on its own."""
    if is_exported_file(run_dir):
        refuse_checkpoint(run_dir, checkpoint)
        return _predict_file(run_dir, split, out, names, data_dir, device, dataset,
                             None if runtime in (None, "auto") else runtime)
    if dataset is not None:
        raise CnnlabError("--dataset applies to an exported model file; a run directory predicts on its own dataset")
    from cnnlab.workflows.export import export_metadata, predictor_for_model
    from cnnlab.workflows.measure.bench import choose_runtime

    if runtime not in (None, "auto") and runtime.endswith(INT8):  # before any work
        raise CnnlabError(f"predict on int8 through its checked export: `cnnlab export {run_dir} --format "
                          f"{format_for_runtime(runtime).name} --int8`, then `cnnlab predict` that file")
    run = load_run(run_dir, checkpoint or "best")
    data = run.split(split, data_dir)
    dev = resolve_device(device)
    meta = export_metadata(run, None)
    if runtime in (None, "auto"):
        try:
            measured = run.dir.read_bench()
        except CnnlabError:
            measured = []  # a damaged bench.json costs the measured choice, not the predictions (bench says why)
        work = len(data) * tta_passes(run.config.tta)
        pred, why = choose_runtime(run.model, meta, dev, str(run.run_dir), data.x[:64], measured, work)
    else:
        pred, why = predictor_for_model(run.model, meta, runtime, dev, str(run.run_dir)), "as asked"
    d = run.data
    logits = predict_logits(pred, data, *pred.norm(), device=pred.input_device, tta=run.config.tta)
    labels = logits.argmax(1).tolist()
    if names:
        labels = [d["classes"][p] for p in labels]
    path = run.dir.write_predictions(labels, out)
    return {"predictions": str(path), "rows": len(labels), "split": split, "runtime": pred.label,
            "device": str(pred.device), "runtime_choice": why}


def _predict_file(path, split, out, names, data_dir, device, dataset, runtime=None) -> dict:
    pred = load_for_runtime(path, runtime, file_device(path, device, runtime))
    data = file_split(pred.meta, split, data_dir, dataset)
    logits = predict_logits(pred, data, *pred.norm(), device=pred.input_device, tta=int(pred.meta.get("tta") or 0))
    labels = logits.argmax(1).tolist()
    if names:
        labels = [pred.meta["classes"][p] for p in labels]
    written = RunDir(Path.cwd()).write_predictions(labels, out)  # ./predictions.csv by default
    return {"predictions": str(written), "rows": len(labels), "split": split, "model_file": str(path),
            "runtime": pred.label, "device": str(pred.device), "runtime_choice": None if runtime is None else "as asked"}
