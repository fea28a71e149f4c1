"""The cnnlab metadata every exported file carries, and recognising a file by its content.

    meta = export_metadata(run, "onnx")            # what an export of a LoadedRun records
    meta = model_metadata("resnet20", (3, 32, 32), classes, mean, std, "onnx")   # any model, no run
    fmt = sniff_format("model.bin")                # "onnx": from the bytes, not the name
    fmt, meta = read_metadata("model.onnx")        # without loading the model
    test = file_split(meta, "test")                # the dataset split the file was trained on

The metadata is one JSON object (`meta_json`) in the format's own place (safetensors' metadata
dict, ONNX `metadata_props`, a TorchScript extra file, a member of the `.keras` zip, the OpenVINO
IR's rt_info), under META_KEY / META_FILE. `parse_meta` is the one reader of that record for every format: it checks each
field predict, evaluate and bench rely on (`META_FIELDS`, `check_meta`), so damaged, hand-edited or
foreign metadata is a one-line `CnnlabError` naming the file and the field. A file that no format
recognises is named by the format its extension promises (`not_a_model`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import zipfile
from pathlib import Path

from cnnlab import __version__
from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import FORMATS

META_FORMAT = "cnnlab-export"
META_VERSION = 1
META_KEY = "cnnlab"  # safetensors metadata key and ONNX metadata_props key
META_FILE = "cnnlab.json"  # TorchScript extra file and .keras zip member


# ---- the record -------------------------------------------------------------------------------

def meta_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def parse_meta(text, path) -> dict:
    """The metadata JSON of a file (str, or UTF-8 bytes), every field predict, evaluate and bench read
    checked for presence and type (`check_meta`); anything else is one line naming the file and the field."""
    if not text:
        raise CnnlabError(f"{path} has no cnnlab metadata: it was not written by `cnnlab export` (or was "
                          "re-saved without it); export the run again with `cnnlab export RUN_DIR`")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CnnlabError(f"{path} has damaged cnnlab metadata (not UTF-8 JSON): export the run again with "
                          "`cnnlab export RUN_DIR`") from None
    if not isinstance(meta, dict):
        raise CnnlabError(f"{path} has damaged cnnlab metadata ({_kind(meta)}, not a JSON object): export the run "
                          "again with `cnnlab export RUN_DIR`")
    if meta.get("format") != META_FORMAT:
        raise CnnlabError(f"{path} has metadata under 'cnnlab' that is not cnnlab's export metadata: "
                          "export the run again with `cnnlab export RUN_DIR`")
    version = meta.get("version", 0)
    if _is_int(version) and version > META_VERSION:
        raise CnnlabError(f"{path} was exported by a newer cnnlab ({meta.get('cnnlab_version')}): upgrade cnnlab")
    why = check_meta(meta)
    if why:
        raise CnnlabError(f"{path} has damaged cnnlab metadata: {why}; export the run again with "
                          "`cnnlab export RUN_DIR`")
    return meta


def _kind(v) -> str:
    """A JSON value in a message: its type, and the value itself when short."""
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return f"the number {v}"
    text = json.dumps(v)
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"the string {shown}" if isinstance(v, str) else f"the list {shown}" if isinstance(v, list) else "an object"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


_OBJECT = (lambda v: isinstance(v, dict), "an object")
_TEXT = (lambda v: isinstance(v, str), "a string")
_INT = (_is_int, "an integer")
_POSITIVE = (lambda v: _is_int(v) and v >= 1, "a positive integer")
_NUMBERS = (lambda v: isinstance(v, list) and v != [] and all(_is_number(x) for x in v), "a list of numbers")
# dotted field -> (required, accepts null, test, what it must be); checked in this order, parents first
META_FIELDS = {
    "version": (False, False, *_INT),
    "export_format": (False, True, *_TEXT),
    "model": (False, True, *_TEXT),
    "model_args": (False, True, *_OBJECT),
    "loss": (False, True, *_TEXT),
    "tta": (False, True, lambda v: isinstance(v, bool) or (_is_int(v) and 0 <= v <= 2), "true, false, 0, 1 or 2"),
    "input": (True, False, *_OBJECT),
    "input.shape": (True, False,
                    lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x) and x >= 1 for x in v),
                    "a list of 3 positive integers (channels, height, width)"),
    "input.layout": (False, False, lambda v: v in ("NCHW", "NHWC"), '"NCHW" or "NHWC"'),
    "input.normalization_baked": (False, False, lambda v: isinstance(v, bool), "true or false"),
    "input.adapter": (False, True, *_OBJECT),
    "input.adapter.resize": (False, True, *_POSITIVE),
    "input.adapter.input_channels": (False, True, *_POSITIVE),
    "classes": (True, False, lambda v: isinstance(v, list) and v != [] and all(isinstance(x, str) for x in v),
                "a list of class names (strings)"),
    "num_classes": (True, False, *_POSITIVE),
    "mean": (True, False, *_NUMBERS),
    "std": (True, False, _NUMBERS[0], _NUMBERS[1]),
    "dataset": (False, True, *_OBJECT),
    "dataset.name": (False, True, *_TEXT),
    "dataset.data_dir": (False, True, *_TEXT),
    "dataset.val_size": (False, True, lambda v: _is_int(v) and v >= 0, "a whole number of images"),
    "dataset.seed": (False, True, *_INT),
    "dataset.subset": (False, True, *_POSITIVE),
    "figures": (False, True, lambda v: isinstance(v, dict) and all(x is None or _is_number(x) for x in v.values()),
                "an object of numbers"),
    "source": (False, True, *_OBJECT),
    "weights_sha256": (False, True, *_TEXT),
    "quantization": (False, True, *_OBJECT),  # an int8 file: how it was quantized and checked (quantize.py)
}


def check_meta(meta: dict) -> str | None:
    """None when every field in META_FIELDS is present where required and of its type, and the fields agree
    (one class name per class, one mean and std per input channel, std above 0); else what is wrong."""
    for field, (required, nullable, test, what) in META_FIELDS.items():
        *parents, last = field.split(".")
        where = meta
        for key in parents:
            where = where.get(key) if isinstance(where, dict) else None
        if not isinstance(where, dict):
            continue  # an optional parent that is absent or null
        if last not in where:
            if required:
                return f"'{field}' is missing (it must be {what})"
            continue
        value = where[last]
        if not ((value is None and nullable) or (value is not None and test(value))):
            return f"'{field}' is {_kind(value)}, not {what}"
    channels = meta["input"]["shape"][0]
    if meta["num_classes"] != len(meta["classes"]):
        return f"'num_classes' is {meta['num_classes']} but 'classes' names {len(meta['classes'])}"
    for key in ("mean", "std"):
        if len(meta[key]) != channels:
            return f"'{key}' has {len(meta[key])} values, not one per input channel ({channels})"
    if min(meta["std"]) <= 0:
        return f"'std' has a value of {min(meta['std'])}, not above 0"
    if meta.get("loss") is not None:
        from cnnlab.losses import LOSSES

        if meta["loss"] not in LOSSES:
            return f"'loss' is {_kind(meta['loss'])}, not one of cnnlab's losses ({', '.join(LOSSES)})"
    return None


def tensors_sha256(named_arrays) -> str:
    """SHA-256 of (name, dtype, shape, bytes) of every tensor, in name order: the weights' fingerprint."""
    import numpy as np

    h = hashlib.sha256()
    for name, a in sorted(named_arrays, key=lambda na: na[0]):
        a = np.ascontiguousarray(a)
        h.update(f"{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def state_dict_sha256(state: dict) -> str:
    return tensors_sha256((k, v.detach().cpu().numpy()) for k, v in state.items())


def input_description(meta: dict) -> str:
    layout = meta["input"].get("layout", "NCHW")
    if meta["input"].get("normalization_baked"):
        return f"float32 pixel values 0-255, {layout}"
    return f"float32 (pixel/255 - mean) / std per channel, {layout}"


def norm_for(meta: dict):
    """(mean, std) that cnnlab's loader applies before the model: the dataset's, or the identity on
    0-255 pixel values when the model normalises inside (baked in)."""
    c = len(meta["mean"])
    if meta["input"].get("normalization_baked"):
        return [0.0] * c, [1 / 255] * c  # the loader then yields pixel values 0..255 exactly
    return list(meta["mean"]), list(meta["std"])


def model_metadata(model: str, input_shape, classes, mean, std, fmt: str | None = None,
                   bake_normalization: bool = False, model_args: dict | None = None, loss: str = "softmax") -> dict:
    """The metadata of an export of any registered model or spec (no run needed): what it takes and gives."""
    shape = [int(v) for v in input_shape]
    meta = {
        "format": META_FORMAT, "version": META_VERSION, "export_format": fmt, "cnnlab_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model, "model_args": dict(model_args or {}), "loss": loss, "tta": False,
        "input": {"shape": shape, "dtype": "float32", "layout": FORMATS[fmt].layout if fmt in FORMATS else "NCHW",
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
        tta=int(cfg.tta),  # the level (0-2), as the run evaluated
        dataset={"name": cfg.dataset, "data_dir": cfg.data_dir, "val_size": cfg.val_size, "seed": cfg.seed,
                 "subset": cfg.subset},
        figures=figures)
    return meta


# ---- recognising a file -----------------------------------------------------------------------

def sniff_format(path) -> str:
    """The registered format of a file, from its content; anything else is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory but not a cnnlab run directory (no config.yaml and "
                          "checkpoints/): give a run directory or an exported model file")
    if not path.exists():
        raise CnnlabError(f"{path} does not exist: give a run directory or a file written by `cnnlab export`")
    if path.stat().st_size == 0:
        raise CnnlabError(f"{path} is empty: export the model again")
    with open(path, "rb") as f:
        head = f.read(16)
    names = zip_names(path) if head[:2] == b"PK" else None
    candidates = [f for f in FORMATS.values() if f.zip == (names is not None)]
    for fmt in candidates:
        if fmt.recognise is not None and fmt.recognise(head, names, path):
            return fmt.name
    if names is not None:
        if any(n.endswith("/data.pkl") for n in names):
            raise CnnlabError(f"{path} is a PyTorch checkpoint or pickled state (torch.save), not an exported model: "
                              "give its run directory, or make a file with `cnnlab export RUN_DIR`")
        raise not_a_model(path, f"a zip archive holding no {' or '.join(f.title for f in candidates)} model")
    fallback = next((f for f in candidates if f.recognise is None), None)
    if fallback is None:
        raise not_a_model(path, "its content is none of the formats cnnlab reads")
    return fallback.name  # a format without a signature: reading it says whether it is one (not_a_model if not)


def extension_format(path):
    """The registered format whose extension `path` has, or None."""
    ext = Path(str(path)).suffix.lower().lstrip(".")
    return next((f for f in FORMATS.values() if f.ext == ext), None)


def not_a_model(path, why: str) -> CnnlabError:
    """The one line for a file no registered format reads: it names the file and the format its extension
    promises (or, without a known extension, the formats cnnlab reads), `why`, and the fix."""
    fmt = extension_format(path)
    if fmt is None:
        return CnnlabError(f"{path} is not a model file cnnlab can read ({why}; cnnlab reads "
                           f"{', '.join(f.title for f in FORMATS.values())}): give a file written by `cnnlab export`")
    article = "an" if fmt.title[:1].lower() in "aeio" else "a"
    return CnnlabError(f"{path} is not {article} {fmt.title} file cnnlab can read ({why}): export the run again "
                       f"with `cnnlab export RUN_DIR --format {fmt.name}`")


def zip_names(path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except zipfile.BadZipFile:
        raise CnnlabError(f"{path} is a damaged zip archive (truncated or corrupt): export the model again") from None


def check_zip(path):
    """Every member's CRC: a corrupt byte anywhere in a zip-based file (TorchScript, .keras) is caught here."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CnnlabError(f"{path} is damaged ({type(e).__name__}): export the model again") from None
    except Exception as e:  # zlib errors inside a member  # noqa: BLE001
        raise CnnlabError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:80]}): "
                          "export the model again") from None
    if bad is not None:
        raise CnnlabError(f"{path} is damaged: member {bad} fails its CRC check; export the model again")


def read_metadata(path) -> tuple[str, dict]:
    """(format, metadata) of an exported file, without loading its model (the weights are checked on load)."""
    path = Path(path)
    fmt = sniff_format(path)
    meta = parse_meta(FORMATS[fmt].read_meta(path), path)
    if meta.get("export_format") not in (None, fmt):
        raise CnnlabError(f"{path} is a {fmt} file but its metadata says {meta['export_format']}: export it again")
    return fmt, meta


# ---- the data a file was trained on -----------------------------------------------------------

def file_split(meta: dict, split: str = "test", data_dir=None, dataset: str | None = None):
    """A split of the dataset an exported file was trained on (its recorded name, validation size, seed and
    subset), or of `dataset`, which must have the file's image shape and classes named as the file's (any
    order, or some of them): the labels are the file's class indices (`cnnlab.evaluate.labels_for_model`)."""
    from cnnlab.data import load_dataset
    from cnnlab.dirs import SPLITS
    from cnnlab.evaluate import labels_for_model

    if split not in SPLITS:
        raise CnnlabError(f"unknown split '{split}': choose {', '.join(SPLITS)}")
    recorded = meta.get("dataset") or {}
    if dataset is None:
        if not recorded.get("name"):
            raise CnnlabError("the model file records no dataset: give one with --dataset")
        where = data_dir or (recorded.get("data_dir") if recorded.get("data_dir") and Path(recorded["data_dir"]).is_dir()
                             else None)
        data = load_dataset(recorded["name"], where, recorded.get("val_size"), recorded.get("seed") or 0,
                            recorded.get("subset"), min_classes=1)
        name = recorded["name"]
    else:
        data, name = load_dataset(dataset, data_dir, min_classes=1), dataset
    part = getattr(data, split)
    shape = tuple(int(v) for v in meta["input"]["shape"])
    if tuple(part.x.shape[1:]) != shape:
        raise CnnlabError(f"the model takes {'x'.join(map(str, shape))} images but {name} has "
                          f"{'x'.join(map(str, part.x.shape[1:]))}: give a dataset of the shape it was trained on")
    return labels_for_model(part, data.classes, meta["classes"], name)


def read_metadata_bytes(fmt, data: bytes) -> dict:
    """The metadata of a file's bytes (`fmt`: its Format), read as `read_metadata` reads a file."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cnnlab-meta-") as tmp:
        path = Path(tmp) / f"model.{fmt.ext}"
        path.write_bytes(data)
        return parse_meta(fmt.read_meta(path), f"the {fmt.title} data")
