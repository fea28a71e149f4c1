"""Exporting a trained run: safetensors, ONNX, TorchScript or a Keras file, checked before it is written.

    info = export_run("runs/x", "onnx")                       # RUN_DIR/exports/model.onnx
    info = export_run("runs/x", "onnx", opset=13, bake_normalization=True, out="model.onnx")
    pred = load_for_runtime("model.safetensors", "onnxruntime")   # a file on any runtime it can run on

Both engines' runs export the same way: a NumPy-engine checkpoint holds a PyTorch state dict, so
`load_run` gives an `nn.Module` either way. Each file records where it came from and what it takes
(`export_metadata`) in its format's own metadata place (see `cnnlab.workflows.runtimes`), so
`cnnlab predict` and `cnnlab bench` use it without the run directory.

Before a file is written it is read back from its bytes and run on real test images of the run's
dataset (the first `check_images`, at batch 1 and at that batch), on its own runtime, against the
PyTorch model: safetensors must give bitwise the same scores, the others must agree within
1e-4 x max(1, largest score). A failed check writes nothing. Files are written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import logging
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab import __version__
from cnnlab.errors import CnnlabError, DataError
from cnnlab.io import atomic_write
from cnnlab.dirs import EXPORT_FILES, RunDir, load_run
from cnnlab.workflows.runtimes import (
    FILE_RUNTIMES, FORMATS, META_FILE, META_FORMAT, META_KEY, META_VERSION, NATIVE_RUNTIME, RUNTIMES, KerasPredictor,
    OnnxPredictor, Predictor, TorchPredictor, _load_onnx, _torchscript_load, build_torch_model, input_description,
    load_exported, load_keras_model, load_safetensors, meta_json, onnx_weights_sha256, ort_providers,
    sniff_format, state_dict_sha256)

DEFAULT_OPSET = 17  # ONNX Runtime 1.14+, TensorRT 8.6+, OpenVINO 2023+ and most edge toolchains read it
EXPORTERS = {"torchscript": (9, 20), "dynamo": (18, 23)}  # torch.onnx exporters and the opsets they write
KERAS_SUFFIX = ".keras"


# ---- what a file records ----------------------------------------------------------------------

def model_metadata(model: str, input_shape, classes, mean, std, fmt: str | None = None,
                   bake_normalization: bool = False, model_args: dict | None = None, loss: str = "softmax") -> dict:
    """The metadata of an export of any registered model or spec (no run needed): what it takes and gives."""
    shape = [int(v) for v in input_shape]
    meta = {
        "format": META_FORMAT, "version": META_VERSION, "export_format": fmt, "cnnlab_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model, "model_args": dict(model_args or {}), "loss": loss, "tta": False,
        "input": {"shape": shape, "dtype": "float32", "layout": "NHWC" if fmt == "keras" else "NCHW",
                  "batch": "dynamic", "normalization_baked": bool(bake_normalization)},
        "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "classes": [str(c) for c in classes], "num_classes": len(classes),
    }
    meta["input"]["expects"] = input_description(meta)
    return meta


def export_metadata(run, fmt: str | None, bake_normalization: bool = False) -> dict:
    """The metadata an export of `run` (a LoadedRun) records: source, input spec, classes, figures."""
    cfg, d = run.config, run.data
    figures = {}
    try:
        summary = run.dir.read_summary() or {}
        for key in ("test_acc", "test_loss", "best_epoch", "best_val_acc"):
            if summary.get(key) is not None:
                figures[key] = summary[key]
    except CnnlabError:
        pass  # a damaged summary.json costs the figures, not the export
    rows = run.dir.read_metrics()
    for key, pick in (("train_acc", max), ("train_loss", min), ("val_acc", max), ("val_loss", min)):
        vals = [r[key] for r in rows if key in r]
        if vals:
            figures[f"best_{key}"] = pick(vals)
    progress = run.checkpoint.get("progress", {})
    meta = model_metadata(cfg.model, d["shape"], d["classes"], d["mean"], d["std"], fmt, bake_normalization,
                          cfg.model_args, run.loss_name)
    if len(meta["classes"]) != int(d["num_classes"]):
        meta["classes"] = [str(i) for i in range(int(d["num_classes"]))]
        meta["num_classes"] = int(d["num_classes"])
    if cfg.resize or cfg.input_channels:  # the model resizes / repeats its input itself (cnnlab.models.adapt)
        meta["input"]["adapter"] = {"resize": cfg.resize, "input_channels": cfg.input_channels}
    meta.update(
        source={"run_dir": str(Path(run.run_dir).resolve()), "run_name": Path(run.run_dir).resolve().name,
                "checkpoint": run.which, "engine": cfg.engine, "epoch": progress.get("epoch"),
                "step": progress.get("step"), "checkpoint_cnnlab_version": run.checkpoint.get("cnnlab_version")},
        tta=bool(cfg.tta),
        dataset={"name": cfg.dataset, "data_dir": cfg.data_dir, "val_size": cfg.val_size, "seed": cfg.seed,
                 "subset": cfg.subset},
        figures=figures)
    return meta


class Normalize(nn.Module):
    """Pixel values 0-255 to the model's input, (x - 255*mean) * 1/(255*std): the loader's arithmetic."""

    def __init__(self, mean, std):
        super().__init__()
        c = len(mean)
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1) * 255)
        self.register_buffer("scale", 1 / (torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1) * 255))

    def forward(self, x):
        return (x - self.shift) * self.scale


def with_normalization(model: nn.Module, meta: dict) -> nn.Module:
    """The model, behind a Normalize layer when the metadata says normalisation is baked in."""
    if not meta["input"].get("normalization_baked"):
        return model.eval()
    return nn.Sequential(Normalize(meta["mean"], meta["std"]), model).eval()


def _example(meta, n=2, device="cpu"):
    c, h, w = meta["input"]["shape"]
    return torch.zeros(n, c, h, w, device=device)


@contextlib.contextmanager
def _quiet():
    """torch.onnx and torch.jit speak on warnings, loggers and stdout; the command's output stays ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


# ---- the formats ------------------------------------------------------------------------------

def safetensors_bytes(model: nn.Module, meta: dict) -> bytes:
    """The state dict (contiguous copies) with the metadata, SHA-256 of the weights included."""
    from safetensors.torch import save

    if meta["input"].get("normalization_baked"):
        raise CnnlabError("a safetensors file holds weights only, so normalisation cannot be baked into it: "
                          "drop --bake-normalization, or export onnx, torchscript or keras")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {**meta, "weights_sha256": state_dict_sha256(state)}
    return save(state, metadata={META_KEY: meta_json(meta), "format": "pt"})


def torchscript_module(model: nn.Module, meta: dict, device="cpu"):
    """The model traced (with normalisation, if baked in) at batch 2; the batch dimension stays free."""
    wrapped = with_normalization(model, meta).to(device)
    try:
        with _quiet(), torch.no_grad():
            return torch.jit.trace(wrapped, _example(meta, 2, device), check_trace=False)
    except Exception as e:  # what tracing raises for a model it cannot follow  # noqa: BLE001
        raise CnnlabError(f"cannot trace '{meta.get('model')}' to TorchScript ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100]})") from None


def torchscript_bytes(model: nn.Module, meta: dict) -> bytes:
    traced = torchscript_module(model.cpu(), meta)
    buffer = io.BytesIO()
    with _quiet():  # torch 2.13 marks TorchScript deprecated in favour of torch.export
        torch.jit.save(traced, buffer, _extra_files={META_FILE: meta_json(meta)})
    return buffer.getvalue()


def check_opset(opset, exporter):
    if exporter not in EXPORTERS:
        raise CnnlabError(f"unknown ONNX exporter '{exporter}': choose {' or '.join(EXPORTERS)}")
    lo, hi = EXPORTERS[exporter]
    if not isinstance(opset, int) or not lo <= opset <= hi:
        other = " (or --exporter dynamo for 18-23)" if exporter == "torchscript" else " (or --exporter torchscript for 9-20)"
        raise CnnlabError(f"--opset {opset} is out of range for the {exporter} exporter: choose {lo}-{hi}{other}")


def onnx_bytes(model: nn.Module, meta: dict, opset: int | None = None, exporter: str = "torchscript") -> bytes:
    """The model as an ONNX graph, input `input` (batch, C, H, W) with a dynamic batch, output `logits`,
    at exactly the chosen opset, the metadata in metadata_props."""
    import onnx

    opset = DEFAULT_OPSET if opset is None else opset
    check_opset(opset, exporter)
    wrapped = with_normalization(model.cpu(), meta)
    x = _example(meta, 2)
    try:
        with _quiet(), torch.no_grad():
            if exporter == "torchscript":
                buffer = io.BytesIO()
                kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=opset,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
                try:
                    torch.onnx.export(wrapped, (x,), buffer, dynamo=False, **kwargs)
                except TypeError:  # torch before 2.5 has only this exporter, without the flag
                    torch.onnx.export(wrapped, (x,), buffer, **kwargs)
                proto = onnx.load_from_string(buffer.getvalue())
            else:
                program = torch.onnx.export(wrapped, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                            opset_version=opset, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                            verbose=False, optimize=True)
                proto = program.model_proto
    except CnnlabError:
        raise
    except Exception as e:  # the exporters' own errors: an operator without an ONNX form at this opset  # noqa: BLE001
        raise CnnlabError(f"cannot export '{meta.get('model')}' to ONNX opset {opset} with the {exporter} exporter "
                          f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}): "
                          "try another --opset or --exporter") from None
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise CnnlabError(f"the {exporter} exporter wrote opset {written}, not the {opset} asked for: "
                          f"use --exporter torchscript for opsets 9-20")
    meta = {**meta, "export_format": "onnx", "opset": opset, "onnx_exporter": exporter,
            "weights_sha256": onnx_weights_sha256(proto)}
    proto.producer_name, proto.producer_version = "cnnlab", __version__
    trained = f" trained on {meta['dataset']['name']}" if (meta.get("dataset") or {}).get("name") else ""
    proto.doc_string = (f"{meta.get('model')}{trained}, exported by cnnlab; input batch x "
                        f"{'x'.join(map(str, meta['input']['shape']))}: {meta['input']['expects']}")
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta_json(meta)
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001
        raise CnnlabError(f"the ONNX graph of '{meta.get('model')}' fails onnx's checker "
                          f"({str(e).splitlines()[0][:120]})") from None
    return proto.SerializeToString()


def keras_model(model: nn.Module, meta: dict):
    from cnnlab.workflows.keras_export import to_keras

    if meta["input"].get("adapter"):  # the resize / channel repeat is a forward pre-hook, which Keras cannot carry
        raise CnnlabError("a run trained with --resize or --input-channels adapts its input inside the PyTorch model, "
                          "which the Keras export cannot carry: export onnx, torchscript or safetensors")
    norm = (meta["mean"], meta["std"]) if meta["input"].get("normalization_baked") else None
    return to_keras(model, meta["input"]["shape"], norm, name=str(meta.get("model") or "model"))


def keras_bytes(model: nn.Module, meta: dict) -> bytes:
    """A `.keras` archive (Keras 3) with the metadata as one more zip member, cnnlab.json."""
    kmodel = keras_model(model, meta)
    with tempfile.TemporaryDirectory(prefix="cnnlab-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        with _quiet():
            kmodel.save(str(path))
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(META_FILE, meta_json(meta))
        return path.read_bytes()


# ---- reading the bytes back, and running them -------------------------------------------------

def predictor_from_bytes(fmt: str, data: bytes, meta: dict, model: nn.Module | None = None) -> Predictor:
    """The predictor a written file would give (`load_exported`), from its bytes (CPU)."""
    if fmt == "safetensors":
        state, meta = load_safetensors("the safetensors data", data)
        return TorchPredictor(build_torch_model(meta, state, "the safetensors data"), meta)
    if fmt == "onnx":
        _load_onnx(data, "the ONNX data")
        return OnnxPredictor(data, meta, "cpu", "the exported ONNX model")
    if fmt == "torchscript":
        module, _ = _torchscript_load(io.BytesIO(data), "cpu")
        return TorchPredictor(module, meta, "cpu", runtime="torchscript")
    with tempfile.TemporaryDirectory(prefix="cnnlab-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        return KerasPredictor(load_keras_model(path), meta)


def predictor_for_model(model: nn.Module, meta: dict, runtime: str, device="cpu", source: str = "",
                        opset: int | None = None) -> Predictor:
    """A PyTorch model on a runtime, converted with the code `cnnlab export` uses, in memory: eager as is,
    TorchScript traced, ONNX exported (CPU or CUDA ONNX Runtime), Keras converted."""
    device = torch.device(device)
    model = copy.deepcopy(model).eval()  # predictors on several devices must not share (and move) one module
    if runtime == "torch":
        return TorchPredictor(model, meta, device, source)
    if runtime == "torchscript":
        return TorchPredictor(torchscript_module(model.to(device), meta, device), meta, device, source, "torchscript")
    if runtime == "onnxruntime":
        _, why = ort_providers(device)
        if why:
            raise CnnlabError(why)
        return OnnxPredictor(onnx_bytes(model.cpu(), meta, opset=opset), meta, device, source)
    if runtime == "keras":
        if device.type != "cpu":
            raise CnnlabError("cnnlab runs the keras runtime on the CPU only")
        meta = {**meta, "input": {**meta["input"], "layout": "NHWC"}}
        return KerasPredictor(keras_model(model.cpu(), meta), meta, device, source)
    raise CnnlabError(f"unknown runtime '{runtime}': choose {', '.join(RUNTIMES)}")


def load_for_runtime(path, runtime: str | None = None, device="cpu") -> Predictor:
    """An exported file on a runtime: its own (default), or for a safetensors file any runtime."""
    fmt = sniff_format(path)
    runtime = runtime or NATIVE_RUNTIME[fmt]
    if runtime not in FILE_RUNTIMES[fmt]:
        raise CnnlabError(f"{path} is a {fmt} file, which runs on {', '.join(FILE_RUNTIMES[fmt])} only, not "
                          f"{runtime}: give the run directory (or its safetensors export) to compare runtimes")
    if fmt == "safetensors" and runtime != "torch":
        state, meta = load_safetensors(path)
        return predictor_for_model(build_torch_model(meta, state, path), meta, runtime, device, str(path))
    return load_exported(path, device)


def check_images(run, n: int, data_dir=None):
    """(uint8 NCHW images, where they came from): the first n test images of the run's dataset, or, when
    the dataset cannot be read here, seeded random images (and the result says so)."""
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


def prepare(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 images as cnnlab's loader hands them to a model: (x - 255*mean) * 1/(255*std)."""
    from cnnlab.data.datasets import Split
    from cnnlab.data.loader import BatchLoader

    split = Split(x_uint8, torch.zeros(len(x_uint8), dtype=torch.long))
    return BatchLoader(split, max(1, len(x_uint8)), mean, std).batch(torch.arange(len(x_uint8)))[0]


def compare(pred: Predictor, model: nn.Module, meta: dict, images: torch.Tensor) -> dict:
    """Scores of `pred` against the PyTorch model on the same images, at batch 1 and the whole batch."""
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


# ---- the workflow -----------------------------------------------------------------------------

def resolve_out(run_dir, fmt: str, out, checkpoint: str) -> Path:
    """--out as given, a default file name inside a given folder, or RUN_DIR/exports/model.<ext>."""
    if out is None:
        return RunDir(run_dir).export_file(fmt, checkpoint)
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", "\\")):
        out = out / RunDir(run_dir).export_file(fmt, checkpoint).name
    if fmt == "keras" and out.suffix != KERAS_SUFFIX:
        raise CnnlabError(f"--out {out}: a Keras 3 file must end in .keras (Keras refuses other names): "
                          f"use {out.with_suffix(KERAS_SUFFIX).name}")
    return out


def export_run(run_dir, fmt: str, out=None, checkpoint: str = "best", opset: int | None = None,
               bake_normalization: bool = False, exporter: str = "torchscript", check: bool = True,
               check_count: int = 16, data_dir=None) -> dict:
    """Export a run's model; returns what was written and how the check went (nothing is written if it fails)."""
    if fmt not in FORMATS:
        raise CnnlabError(f"unknown export format '{fmt}': choose {', '.join(FORMATS)}")
    if fmt != "onnx" and (opset is not None or exporter != "torchscript"):
        raise CnnlabError("--opset and --exporter apply to --format onnx only")
    if fmt == "onnx":
        check_opset(DEFAULT_OPSET if opset is None else opset, exporter)
    if check_count < 1:
        raise CnnlabError(f"--check-images must be at least 1, got {check_count}")
    path = resolve_out(run_dir, fmt, out, checkpoint)
    t0 = time.perf_counter()
    run = load_run(run_dir, checkpoint)
    meta = export_metadata(run, fmt, bake_normalization)
    model = run.model.cpu().eval()
    if fmt == "safetensors":
        data = safetensors_bytes(model, meta)
    elif fmt == "onnx":
        data = onnx_bytes(model, meta, opset, exporter)
    elif fmt == "torchscript":
        data = torchscript_bytes(model, meta)
    else:
        data = keras_bytes(model, meta)
    info = {"path": str(path), "format": fmt, "bytes": len(data), "source_run": meta["source"]["run_dir"],
            "checkpoint": run.which, "model": meta["model"], "input_shape": meta["input"]["shape"],
            "input": meta["input"]["expects"], "layout": meta["input"]["layout"],
            "normalization_baked": bool(bake_normalization), "runtime": NATIVE_RUNTIME[fmt]}
    if fmt == "onnx":
        info.update(opset=DEFAULT_OPSET if opset is None else opset, exporter=exporter)
    if check:
        images, where = check_images(run, check_count, data_dir)
        pred = predictor_from_bytes(fmt, data, meta)
        result = compare(pred, model, meta, images)
        result["source"] = where
        info["check"] = result
        exact = fmt == "safetensors"
        if (exact and not result["bitwise_equal"]) or result["max_abs_diff"] > result["tolerance"] or \
                not np.isfinite(result["max_abs_diff"]):
            need = "bitwise-equal scores" if exact else f"a difference of at most {result['tolerance']:.2g}"
            raise CnnlabError(f"the {fmt} export of '{meta['model']}' does not reproduce the PyTorch model on "
                              f"{where} (max abs difference {result['max_abs_diff']:.3g}, need {need}): nothing "
                              "was written; please report this with the model name")
    atomic_write(path, lambda f: f.write(data), mode="wb")
    info["seconds"] = time.perf_counter() - t0
    return info


__all__ = ["DEFAULT_OPSET", "EXPORTERS", "EXPORT_FILES", "export_metadata", "export_run", "load_for_runtime",
           "model_metadata", "predictor_from_bytes", "compare",
           "onnx_bytes", "predictor_for_model", "safetensors_bytes", "torchscript_bytes", "keras_bytes"]
