"""Post-training int8 quantization: calibrated on the training split, checked against float32 on the test split.

    calib, where = calibration_images(run, 300)      # a seeded sample of the train split, prepared (float32 NCHW)
    data = get_format("onnx").quantize(model, meta, calib)     # the int8 file's bytes (its own metadata inside)
    check = int8_check(pred, model, meta, test)      # float32 and int8 accuracy, overall and per class
    why = class_drop_refusal(check, max_class_drop=2.0)        # None, or the one line that refuses the file

A format with an int8 form has a `quantize` entry in the registry (formats.py): ONNX through ONNX
Runtime's static quantization (`onnx_int8`: QDQ, int8 weights per output channel, uint8 activations,
min-max ranges), OpenVINO through NNCF (`openvino.openvino_int8`: its default symmetric preset and fast
bias correction). Both are static: activation ranges come from calibration images, so nothing is
measured at run time. Calibration images are the model's own input (the loader's normalisation, or
0-255 pixels when it is baked in), drawn without augmentation from the training split, seeded by the
run's seed: the test split is never used to calibrate, only to check.

The check replaces export's 1e-4 agreement (int8 scores differ by design): the int8 file and the
PyTorch model each predict the whole test split, with the run's test-time augmentation, and every
class's accuracy is compared. A class that loses more than `max_class_drop` points refuses the file
in one line (`cnnlab export --max-class-drop` overrides); the figures go into the file's metadata
under `quantization`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

from cnnlab.errors import CnnlabError, DataError

DEFAULT_CALIBRATION_IMAGES = 300  # NNCF's default subset size; more moved neither LeNet-5 nor FastNet here
DEFAULT_MAX_CLASS_DROP = 2.0  # points of one class's test accuracy int8 may lose before the file is refused


def calibration_images(run, n: int = DEFAULT_CALIBRATION_IMAGES, data_dir=None, meta: dict | None = None):
    """(images, where they came from): `n` training images of the run, drawn with the run's seed, prepared as
    the exported model takes them (`meta`'s normalisation: baked in or not)."""
    import torch

    from cnnlab.workflows.export.predictor import prepare
    from cnnlab.workflows.export.metadata import norm_for

    if n < 1:
        raise CnnlabError(f"--calibration-images must be at least 1, got {n}")
    train = needed_split(run, "train", data_dir, "int8 calibration", "")
    g = torch.Generator().manual_seed(int(run.config.seed or 0))
    pick = torch.randperm(len(train), generator=g)[:n].sort().values
    mean, std = norm_for(meta) if meta else (run.data["mean"], run.data["std"])
    return prepare(train.x[pick], mean, std), f"{len(pick)} training images of {run.config.dataset}"


def needed_split(run, split: str, data_dir, purpose: str, otherwise: str):
    """A run's split that `purpose` cannot do without: unreadable or empty is one line (`otherwise`: the way
    around it, after the fix)."""
    try:
        part = run.split(split, data_dir)
    except DataError as e:
        raise CnnlabError(f"{purpose} needs the {split} split of {run.config.dataset}, which cannot be read here "
                          f"({str(e).split(':')[0]}): give --data-dir{otherwise}") from None
    if len(part) == 0:
        raise CnnlabError(f"the {split} split of {run.config.dataset} is empty: {purpose} has nothing to run on"
                          f"{otherwise.replace(', or', ';') if otherwise else ''}")
    return part


def calibration_record(n: int, seed) -> dict:
    return {"split": "train", "images": int(n), "seed": int(seed or 0)}


@contextlib.contextmanager
def quiet_quantizer():
    """ONNX Runtime's quantizer and NNCF log, warn and draw progress bars; a command's output stays its own."""
    names = ("nncf", "onnxruntime", "root")
    levels = [logging.getLogger(n).level for n in names]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for n, level in zip(names, levels):
                logging.getLogger(n).setLevel(level)


def int8_check(pred, model, meta: dict, test) -> dict:
    """Float32 (the PyTorch model) against int8 (`pred`) on every image of `test`, with the file's test-time
    augmentation: overall and per-class accuracy, agreement, and the class that lost most."""
    import torch

    from cnnlab.evaluate import predict_logits

    tta = int(meta.get("tta") or 0)
    with torch.no_grad():
        ref = predict_logits(model.cpu().eval(), test, meta["mean"], meta["std"], tta=tta).argmax(1)
    got = predict_logits(pred, test, *pred.norm(), device=pred.input_device, tta=tta).argmax(1)
    y = test.y.cpu()
    classes = meta["classes"]
    per_class = []
    for c, name in enumerate(classes):
        mask = y == c
        n = int(mask.sum())
        if n:
            fp, q = int((ref[mask] == c).sum()) / n, int((got[mask] == c).sum()) / n
            per_class.append({"class": name, "images": n, "fp32_acc": fp, "int8_acc": q, "drop_points": 100 * (fp - q)})
    worst = max(per_class, key=lambda r: r["drop_points"]) if per_class else None
    n = len(y)
    return {"split": "test", "images": int(n), "tta": tta,  # fractions of exact counts, as evaluate gives them
            "fp32_acc": int((ref == y).sum()) / n if n else None,
            "int8_acc": int((got == y).sum()) / n if n else None,
            "agreement": int((ref == got).sum()) / n if n else None,
            "max_class_drop_points": worst["drop_points"] if worst else 0.0,
            "worst_class": worst["class"] if worst else None, "by_class": per_class}


def class_drop_refusal(check: dict, max_class_drop: float = DEFAULT_MAX_CLASS_DROP) -> str | None:
    """None when no class lost more than `max_class_drop` points of test accuracy in int8, else the one line."""
    worst = next((r for r in check["by_class"] if r["class"] == check["worst_class"]), None)
    if worst is None or worst["drop_points"] <= max_class_drop + 1e-9:
        return None
    accept = math.ceil(worst["drop_points"] * 10) / 10
    return (f"int8 lowers class '{worst['class']}' from {100 * worst['fp32_acc']:.2f}% to {100 * worst['int8_acc']:.2f}% "
            f"test accuracy ({worst['drop_points']:.3g} points, over --max-class-drop {max_class_drop:g}; all classes "
            f"{100 * check['fp32_acc']:.2f}% -> {100 * check['int8_acc']:.2f}%): nothing was written; calibrate on "
            f"more images (--calibration-images) or accept the drop with --max-class-drop {accept}")


def check_max_class_drop(value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
        raise CnnlabError(f"--max-class-drop must be a number of points from 0 to 100, got {value}")
    return float(value)
