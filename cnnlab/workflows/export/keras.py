"""The Keras format: a Keras 3 `.keras` file (channels-last), the metadata as the zip member cnnlab.json.

    kmodel = keras_model(model, meta)        # the PyTorch model as Keras layers (keras_layers.to_keras)
    data = keras_bytes(model, meta)          # the .keras archive's bytes
    pred = KerasPredictor(kmodel, meta)      # on Keras's PyTorch backend; takes NCHW, feeds NHWC

Needs Keras 3 (`pip install cnnlab[keras]`). A run trained with --resize or --input-channels is
refused (its adapter is a forward pre-hook Keras cannot carry), and so is a model with an operation
that has no Keras layer. The check before writing allows 1e-4 x max(1, largest score).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import Format, register_format
from cnnlab.workflows.export.metadata import META_FILE, check_zip, meta_json, read_metadata
from cnnlab.workflows.export.predictor import Predictor, check_io


def keras_model(model, meta: dict):
    from cnnlab.workflows.export.keras_layers import to_keras

    if meta["input"].get("adapter"):  # the resize / channel repeat is a forward pre-hook, which Keras cannot carry
        raise CnnlabError("a run trained with --resize or --input-channels adapts its input inside the PyTorch model, "
                          "which the Keras export cannot carry: export onnx, torchscript or safetensors")
    norm = (meta["mean"], meta["std"]) if meta["input"].get("normalization_baked") else None
    return to_keras(model, meta["input"]["shape"], norm, name=str(meta.get("model") or "model"))


def keras_bytes(model, meta: dict) -> bytes:
    """A `.keras` archive (Keras 3) with the metadata as one more zip member, cnnlab.json."""
    from cnnlab.workflows.export.tracing import quiet

    kmodel = keras_model(model, meta)
    with tempfile.TemporaryDirectory(prefix="cnnlab-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        with quiet():
            kmodel.save(str(path))
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(META_FILE, meta_json(meta))
        return path.read_bytes()


def load_keras_model(path, device="cpu"):
    import torch

    from cnnlab.workflows.export.keras_layers import import_keras

    keras = import_keras()
    device = torch.device(device)
    try:
        with keras.device("cpu" if device.type == "cpu" else f"gpu:{device.index or 0}"):
            return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad archive  # noqa: BLE001
        raise CnnlabError(f"Keras cannot load {path} ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}): "
                          "it is damaged; export the model again") from None


class KerasPredictor(Predictor):
    """A Keras 3 model (NHWC input) on Keras's PyTorch backend."""

    runtime = "keras"

    def __init__(self, kmodel, meta, device="cpu", source=""):
        from cnnlab.workflows.export.keras_layers import import_keras

        super().__init__(meta, device, source)
        self.kmodel = kmodel
        self.keras = import_keras()

    @property
    def input_device(self):
        import torch

        return torch.device("cpu")

    def _scope(self):
        return self.keras.device("cpu" if self.device.type == "cpu" else f"gpu:{self.device.index or 0}")

    def __call__(self, x):
        import numpy as np
        import torch

        with self._scope(), torch.no_grad():
            out = self.kmodel(x.permute(0, 2, 3, 1).contiguous(), training=False)
        if isinstance(out, torch.Tensor):  # the PyTorch backend
            return out.detach().float().cpu()
        return torch.as_tensor(np.asarray(self.keras.ops.convert_to_numpy(out))).float()

    def runner(self, x):
        import torch

        from cnnlab.device import synchronize

        xh = x.permute(0, 2, 3, 1).contiguous()
        kmodel, device, scope = self.kmodel, self.device, self._scope

        def run():
            with scope(), torch.no_grad():
                kmodel(xh, training=False)
            synchronize(device)

        return run


# ---- the registry's entry ---------------------------------------------------------------------

def recognise(head: bytes, names, path) -> bool:
    return "config.json" in names and any(n.startswith("model.weights") for n in names)


def read_meta(path):
    check_zip(path)
    with zipfile.ZipFile(path) as z:
        return z.read(META_FILE) if META_FILE in z.namelist() else None  # bytes: parse_meta decodes and checks


def load(path, device):
    _, meta = read_metadata(path)
    pred = KerasPredictor(load_keras_model(path, device), meta, device, str(path))
    check_io(pred, path)
    return pred


def load_bytes(data: bytes, meta: dict):
    with tempfile.TemporaryDirectory(prefix="cnnlab-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        return KerasPredictor(load_keras_model(path), meta)


def convert(model, meta, device, source=""):
    if device.type != "cpu":
        raise CnnlabError("cnnlab runs the keras runtime on the CPU only")
    meta = {**meta, "input": {**meta["input"], "layout": "NHWC"}}
    return KerasPredictor(keras_model(model.cpu(), meta), meta, device, source)


def check_out(path: Path):
    if path.suffix != ".keras":
        raise CnnlabError(f"--out {path}: a Keras 3 file must end in .keras (Keras refuses other names): "
                          f"use {path.with_suffix('.keras').name}")


KERAS = register_format(Format(
    name="keras", ext="keras", title=".keras", runtime="keras", write=keras_bytes, load=load, load_bytes=load_bytes,
    read_meta=read_meta, convert=convert, recognise=recognise, zip=True, layout="NHWC", check_out=check_out,
    requires=("keras",), auto=False,
    help="a Keras 3 `.keras` file (input (batch, H, W, C)), built on Keras's PyTorch backend, no "
         "TensorFlow; needs `pip install cnnlab[keras]`. Models of conv, pooling, dense, batch norm, activations, "
         "flatten, dropout and add layers; others are refused with the reason."))
