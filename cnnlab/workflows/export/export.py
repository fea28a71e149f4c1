"""Exporting a trained run to any registered format, checked before it is written; a file on a runtime.

    info = export_run("runs/x", "onnx")                       # RUN_DIR/exports/model.onnx
    info = export_run("runs/x", "onnx", opset=13, bake_normalization=True, out="model.onnx")
    pred = load_for_runtime("model.safetensors", "onnxruntime")   # a file on any runtime it can run on
    pred = predictor_for_model(model, meta, "torchscript", "cuda")  # a model converted in memory

Both engines' runs export the same way: a NumPy-engine checkpoint holds a PyTorch state dict, so
`load_run` gives an `nn.Module` either way. Each file records where it came from and what it takes
(`metadata.export_metadata`), so `cnnlab predict` and `cnnlab bench` use it without the run directory.

Before a file is written it is read back from its bytes and run on real test images of the run's
dataset (the first `check_images`, at batch 1 and at that batch), on its own runtime, against the
PyTorch model: a format marked `bitwise` (safetensors) must give bitwise the same scores, the
others must agree within 1e-4 x max(1, largest score). A failed check writes nothing. Files are
written atomically.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

from cnnlab.errors import CnnlabError, DataError
from cnnlab.io import atomic_write
from cnnlab.workflows.export.formats import (FORMATS, Format, export_options, format_for_runtime, get_format,
                                             int8_formats, split_runtime)
from cnnlab.workflows.export import quantize
from cnnlab.workflows.export.quantize import (DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_CLASS_DROP, calibration_record,
                                              check_max_class_drop, class_drop_refusal, int8_check)
from cnnlab.workflows.export.metadata import export_metadata, read_metadata_bytes, sniff_format
from cnnlab.workflows.export.predictor import Predictor, load_exported, prepare


# ---- a model or a file on a runtime -----------------------------------------------------------

def predictor_from_bytes(fmt: str, data: bytes, meta: dict) -> Predictor:
    """The predictor a written file would give (`load_exported`), from its bytes (CPU)."""
    return get_format(fmt).load_bytes(data, meta)


def predictor_for_model(model, meta: dict, runtime: str, device="cpu", source: str = "",
                        opset: int | None = None, calibration=None) -> Predictor:
    """A PyTorch model on a runtime, converted with the code `cnnlab export` uses, in memory: eager as is,
    TorchScript traced, ONNX exported (CPU or CUDA ONNX Runtime), Keras converted, OpenVINO converted; a
    `<runtime>-int8` name quantizes it first, after `calibration` (prepared images, `quantize.calibration_images`)."""
    import torch

    fmt = format_for_runtime(runtime)
    options = {k: v for k, v in {"opset": opset}.items() if k in fmt.options}
    model = copy.deepcopy(model).eval()  # predictors on several devices must not share (and move) one module
    if split_runtime(runtime)[1]:
        if calibration is None:
            raise CnnlabError(f"{runtime} quantizes the model after training images: give a run directory")
        if torch.device(device).type != "cpu":
            raise CnnlabError(f"cnnlab runs int8 models on the CPU only, not {device}")
        data = fmt.quantize(model.cpu(), {**meta, "export_format": fmt.name}, calibration, **options)
        return fmt.load_bytes(data, read_metadata_bytes(fmt, data))
    return fmt.convert(model, meta, torch.device(device), source, **options)


def load_for_runtime(path, runtime: str | None = None, device="cpu") -> Predictor:
    """An exported file on a runtime: its own (default), or for a safetensors file any runtime."""
    fmt = FORMATS[sniff_format(path)]
    runtime = runtime or fmt.runtime
    if split_runtime(runtime)[1]:
        raise CnnlabError(f"{runtime} quantizes a model after training images, which a file does not carry: give the "
                          f"run directory, or export it with `cnnlab export RUN_DIR --format {format_for_runtime(runtime).name} --int8`")
    if runtime not in fmt.runtimes:
        raise CnnlabError(f"{path} is a {fmt.name} file, which runs on {', '.join(fmt.runtimes)} only, not "
                          f"{runtime}: give the run directory (or its safetensors export) to compare runtimes")
    if runtime != fmt.runtime:  # a file that rebuilds the PyTorch model, converted for another runtime
        model, meta = fmt.rebuild(path)
        return predictor_for_model(model, meta, runtime, device, str(path))
    return load_exported(path, device)


# ---- the check before writing -----------------------------------------------------------------

def check_images(run, n: int, data_dir=None):
    """(uint8 NCHW images, where they came from): the first n test images of the run's dataset, or, when
    the dataset cannot be read here, seeded random images (and the result says so)."""
    import torch

    try:
        test = run.split("test", data_dir)
        if len(test):
            return test.x[:n], f"the first {min(n, len(test))} test images of {run.config.dataset}"
        why = "its test split is empty"
    except DataError as e:
        why = str(e).split(":")[0]
    c, h, w = run.data["shape"]
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return x, f"{n} random images ({run.config.dataset} not readable here: {why})"


def compare(pred: Predictor, model, meta: dict, images) -> dict:
    """Scores of `pred` against the PyTorch model on the same images, at batch 1 and the whole batch."""
    import torch

    model = model.cpu().eval()
    with torch.no_grad():  # batch 1 on its own: kernels for other batch sizes may add in another order
        xr = prepare(images, meta["mean"], meta["std"])
        ref, ref1 = model(xr).float(), model(xr[:1]).float()
    x = prepare(images, *pred.norm())
    got = pred(x).float()
    got1 = pred(x[:1]).float()
    diff = max(float((got - ref).abs().max()), float((got1 - ref1).abs().max()))
    return {"runtime": pred.runtime, "images": int(len(images)), "max_abs_diff": diff,
            "bitwise_equal": bool(torch.equal(got, ref) and torch.equal(got1, ref1)),
            "same_predictions": int((got.argmax(1) == ref.argmax(1)).sum()),
            "tolerance": 1e-4 * max(1.0, float(ref.abs().max()))}


def verdict(fmt: Format, result: dict) -> str | None:
    """None when `compare`'s result passes the format's check, else what it needed."""
    if (fmt.bitwise and not result["bitwise_equal"]) or result["max_abs_diff"] > result["tolerance"] or \
            not math.isfinite(result["max_abs_diff"]):
        return "bitwise-equal scores" if fmt.bitwise else f"a difference of at most {result['tolerance']:.2g}"
    return None


# ---- the workflow -----------------------------------------------------------------------------

def resolve_out(run_dir, fmt: Format, out, checkpoint: str, int8: bool = False) -> Path:
    """--out as given, a default file name inside a given folder, or RUN_DIR/exports/model[-int8].<ext>."""
    from cnnlab.dirs import RunDir

    if out is None:
        return RunDir(run_dir).export_file(fmt.ext, checkpoint, int8)
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", "\\")):
        out = out / RunDir(run_dir).export_file(fmt.ext, checkpoint, int8).name
    if fmt.check_out:
        fmt.check_out(out)
    return out


def export_run(run_dir, fmt: str, out=None, checkpoint: str = "best", opset: int | None = None,
               bake_normalization: bool = False, exporter: str = "torchscript", check: bool = True,
               check_count: int = 16, data_dir=None, int8: bool = False,
               calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
               max_class_drop: float = DEFAULT_MAX_CLASS_DROP) -> dict:
    """Export a run's model; returns what was written and how the check went (nothing is written if it fails).
    `opset` and `exporter` are ONNX's options (`export_options`). `int8` quantizes it after
    `calibration_images` training images and checks it on the test split (quantize.py)."""
    from cnnlab.dirs import load_run

    form = get_format(fmt)
    options = export_options(form, {"opset": opset, "exporter": exporter})
    if check_count < 1:
        raise CnnlabError(f"--check-images must be at least 1, got {check_count}")
    if int8 and form.quantize is None:
        raise CnnlabError(f"--int8 applies to --format {' or '.join(f.name for f in int8_formats())}, the formats "
                          f"with an int8 form, not {form.name}")
    if int8:
        max_class_drop = check_max_class_drop(max_class_drop)
    path = resolve_out(run_dir, form, out, checkpoint, int8)
    t0 = time.perf_counter()
    run = load_run(run_dir, checkpoint)
    meta = export_metadata(run, form.name, bake_normalization)
    model = run.model.cpu().eval()
    if int8:
        calib, _ = quantize.calibration_images(run, calibration_images, data_dir, meta)
        meta["quantization"] = {"calibration": calibration_record(len(calib), run.config.seed)}
        data = form.quantize(model, meta, calib, **options)
    else:
        data = form.write(model, meta, **options)
    info = {"path": str(path), "format": form.name, "bytes": len(data), "source_run": meta["source"]["run_dir"],
            "checkpoint": run.which, "model": meta["model"], "input_shape": meta["input"]["shape"],
            "input": meta["input"]["expects"], "layout": meta["input"]["layout"],
            "normalization_baked": bool(bake_normalization), "runtime": form.runtime, "int8": int8, **options}
    if int8:
        data = check_int8(form, data, meta, model, run, data_dir, check, max_class_drop, info)
    elif check:
        images, where = check_images(run, check_count, data_dir)
        result = compare(form.load_bytes(data, meta), model, meta, images)
        result["source"] = where
        info["check"] = result
        need = verdict(form, result)
        if need:
            raise CnnlabError(f"the {form.name} export of '{meta['model']}' does not reproduce the PyTorch model on "
                              f"{where} (max abs difference {result['max_abs_diff']:.3g}, need {need}): nothing "
                              "was written; please report this with the model name")
    atomic_write(path, lambda f: f.write(data), mode="wb")
    info["seconds"] = time.perf_counter() - t0
    return info


def check_int8(form: Format, data: bytes, meta: dict, model, run, data_dir, check: bool, max_class_drop: float,
               info: dict) -> bytes:
    """The int8 file's bytes with its check (float32 against int8 on the whole test split) in its metadata,
    or a one-line refusal when a class loses more than `max_class_drop` points; unchecked with `check` off."""
    written = read_metadata_bytes(form, data)
    record = dict(written["quantization"])
    if not check:
        record["check"] = None
        info["quantization"] = record
        return form.stamp(data, {"quantization": record})
    test = quantize.needed_split(run, "test", data_dir, "the int8 check", ", or --no-check to write it unchecked")
    result = int8_check(form.load_bytes(data, written), model, written, test)
    result["max_class_drop_allowed"] = max_class_drop
    why = class_drop_refusal(result, max_class_drop)
    if why:
        raise CnnlabError(why)
    result["runtime"] = form.runtime
    record["check"] = {k: v for k, v in result.items() if k != "by_class"}
    record["check"]["per_class_drop_points"] = {r["class"]: round(r["drop_points"], 4) for r in result["by_class"]}
    info["quantization"] = record
    info["check"] = result
    return form.stamp(data, {"quantization": record})
