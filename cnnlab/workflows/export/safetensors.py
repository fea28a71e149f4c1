"""The safetensors format: the PyTorch state dict, the metadata in the header, run on PyTorch eager.

    data = safetensors_bytes(model, meta)            # the file's bytes (weights' SHA-256 in the metadata)
    state, meta = load_safetensors("model.safetensors")   # the weights checked against that SHA-256
    model = build_torch_model(meta, state, path)     # the network the metadata names (cnnlab.build)

A file rebuilds the PyTorch model, so it runs on every runtime (`load_for_runtime`), and the check
before writing needs bitwise-equal scores. It holds weights only: normalisation cannot be baked in.
"""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import Format, register_format
from cnnlab.workflows.export.metadata import META_KEY, meta_json, parse_meta, state_dict_sha256
from cnnlab.workflows.export.predictor import TorchPredictor


def safetensors_bytes(model, meta: dict) -> bytes:
    """The state dict (contiguous copies) with the metadata, SHA-256 of the weights included."""
    from safetensors.torch import save

    if meta["input"].get("normalization_baked"):
        raise CnnlabError("a safetensors file holds weights only, so normalisation cannot be baked into it: "
                          "drop --bake-normalization, or export onnx, torchscript or keras")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {**meta, "weights_sha256": state_dict_sha256(state)}
    return save(state, metadata={META_KEY: meta_json(meta), "format": "pt"})


def load_safetensors(path, data: bytes | None = None) -> tuple[dict, dict]:
    """(state dict, metadata) of a safetensors file (or its bytes), the weights checked against their SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        data = data if data is not None else Path(path).read_bytes()
        state = st_load(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{path} is a damaged safetensors file ({str(e).splitlines()[0][:80]}): "
                          "export the model again") from None
    meta = parse_meta((header.get("__metadata__") or {}).get(META_KEY), path)
    if meta.get("weights_sha256") and state_dict_sha256(state) != meta["weights_sha256"]:
        raise CnnlabError(f"{path} is damaged: its weights do not match the SHA-256 recorded at export; "
                          "export the model again")
    return state, meta


def build_torch_model(meta: dict, state: dict, path):
    """The PyTorch model a file's metadata names (model, model_args, the input adapter), with its
    weights, built as training built it (`cnnlab.build.build_for`); a mismatch is one line."""
    from cnnlab.build import build_for
    from cnnlab.models.adapt import model_input_shape

    data_shape = meta["input"]["shape"]
    adapter = meta["input"].get("adapter") or {}  # a run trained with --resize / --input-channels
    config = {"model": meta.get("model"), "model_args": meta.get("model_args") or {},
              "resize": adapter.get("resize"), "input_channels": adapter.get("input_channels")}
    c, h, w = model_input_shape(data_shape, config["resize"], config["input_channels"])
    name = config["model"]
    if not name:
        raise CnnlabError(f"{path} does not record which model its weights belong to: export the run again")
    try:
        model = build_for(config, data_shape, int(meta["num_classes"]))
    except CnnlabError as e:
        raise CnnlabError(f"{path} names a model cnnlab cannot build here ({e})") from None
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    extra = [k for k in state if k not in mine]
    wrong = [k for k in mine if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or extra or wrong:
        what = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
                f"{wrong[0]} is {list(state[wrong[0]].shape)}, the model needs {list(mine[wrong[0]].shape)}")
        raise CnnlabError(f"the weights in {path} do not fit model '{name}' ({c}x{h}x{w}, {meta['num_classes']} "
                          f"classes): {what} ({len(missing)} missing, {len(extra)} unexpected, {len(wrong)} of "
                          "another shape); export the run again")
    model.load_state_dict(state)
    model.model_name = name
    return model.eval()


def recognise(head: bytes, names, path) -> bool:
    """An 8-byte little-endian header length, then the JSON header."""
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if not (len(head) > 8 and head[8:9] == b"{" and 2 <= n):
        return False
    if 8 + n > Path(path).stat().st_size:
        raise CnnlabError(f"{path} is a damaged safetensors file: its header runs past the end of the file "
                          "(truncated?); export the model again")
    return True


def read_meta(path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnlabError(f"{path} is a damaged safetensors file ({str(e).splitlines()[0][:80]}): "
                          "export the model again") from None


def rebuild(path):
    state, meta = load_safetensors(path)
    return build_torch_model(meta, state, path), meta


def load(path, device):
    model, meta = rebuild(path)
    return TorchPredictor(model, meta, device, str(path))


def load_bytes(data: bytes, meta: dict):
    state, meta = load_safetensors("the safetensors data", data)
    return TorchPredictor(build_torch_model(meta, state, "the safetensors data"), meta)


def convert(model, meta, device, source=""):
    return TorchPredictor(model, meta, device, source)


SAFETENSORS = register_format(Format(
    name="safetensors", ext="safetensors", title="safetensors", runtime="torch", write=safetensors_bytes, load=load,
    load_bytes=load_bytes, read_meta=read_meta, convert=convert, recognise=recognise, bitwise=True, rebuild=rebuild,
    help="the weights (a PyTorch state dict), e.g. for sharing or the Hugging Face Hub"))
