"""The TorchScript format: the traced module, the metadata as the extra file cnnlab.json, run on TorchScript.

    data = torchscript_bytes(model, meta)          # traced at batch 2; the batch stays free
    module = torchscript_module(model, meta, "cuda")    # the same, in memory, on a device

`torch.jit.load(path)` runs a file without cnnlab's code. The check before writing allows 1e-4 x
max(1, largest score), though its scores equal the eager model's bitwise.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import Format, register_format
from cnnlab.workflows.export.metadata import META_FILE, check_zip, meta_json, parse_meta
from cnnlab.workflows.export.predictor import TorchPredictor, check_io


def torchscript_module(model, meta: dict, device="cpu"):
    """The model traced (with normalisation, if baked in) at batch 2; the batch dimension stays free."""
    import torch

    from cnnlab.workflows.export.tracing import example_input, quiet, with_normalization

    wrapped = with_normalization(model, meta).to(device)
    try:
        with quiet(), torch.no_grad():
            return torch.jit.trace(wrapped, example_input(meta, 2, device), check_trace=False)
    except Exception as e:  # what tracing raises for a model it cannot follow  # noqa: BLE001
        raise CnnlabError(f"cannot trace '{meta.get('model')}' to TorchScript ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100]})") from None


def torchscript_bytes(model, meta: dict) -> bytes:
    import torch

    from cnnlab.workflows.export.tracing import quiet

    traced = torchscript_module(model.cpu(), meta)
    buffer = io.BytesIO()
    with quiet():  # torch 2.13 marks TorchScript deprecated in favour of torch.export
        torch.jit.save(traced, buffer, _extra_files={META_FILE: meta_json(meta)})
    return buffer.getvalue()


def _jit_load(source, device):
    """(module, metadata JSON as stored, str or bytes, or None) of a TorchScript file or buffer."""
    import torch

    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated in favour of torch.export
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(source, map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        where = source if isinstance(source, (str, Path)) else "the TorchScript data"
        raise CnnlabError(f"{where} is a damaged TorchScript file ({str(e).splitlines()[0][:80]}): "
                          "export the model again") from None
    return module.eval(), extra[META_FILE] or None  # parse_meta decodes and checks it


# ---- the registry's entry ---------------------------------------------------------------------

def recognise(head: bytes, names, path) -> bool:
    return any("/code/" in n for n in names) or any(n.endswith("/constants.pkl") for n in names)


def read_meta(path):
    check_zip(path)
    return _jit_load(path, "cpu")[1]


def load(path, device):
    check_zip(path)
    module, text = _jit_load(str(path), device)
    pred = TorchPredictor(module, parse_meta(text, path), device, str(path), runtime="torchscript")
    check_io(pred, path)
    return pred


def load_bytes(data: bytes, meta: dict):
    module, _ = _jit_load(io.BytesIO(data), "cpu")
    return TorchPredictor(module, meta, "cpu", runtime="torchscript")


def convert(model, meta, device, source=""):
    return TorchPredictor(torchscript_module(model.to(device), meta, device), meta, device, source, "torchscript")


TORCHSCRIPT = register_format(Format(
    name="torchscript", ext="torchscript", title="TorchScript", runtime="torchscript", write=torchscript_bytes,
    load=load, load_bytes=load_bytes, read_meta=read_meta, convert=convert, recognise=recognise, zip=True,
    help="a traced TorchScript module: torch.jit.load() runs it without cnnlab's code"))
