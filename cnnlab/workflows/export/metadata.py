"""The cnnlab metadata every exported file carries, and recognising a file by its content.

    meta = export_metadata(run, "onnx")            # what an export of a LoadedRun records
    meta = model_metadata("resnet20", (3, 32, 32), classes, mean, std, "onnx")   # any model, no run
    fmt = sniff_format("model.bin")                # "onnx": from the bytes, not the name
    fmt, meta = read_metadata("model.onnx")        # without loading the model
    test = file_split(meta, "test")                # the dataset split the file was trained on

The metadata is one JSON object (`meta_json`) in the format's own place (safetensors' metadata
dict, ONNX `metadata_props`, a TorchScript extra file, a member of the `.keras` zip), under
META_KEY / META_FILE. `parse_meta` checks the keys predict and bench rely on; damaged or foreign
metadata is a one-line `CnnlabError`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
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
    """The metadata JSON of a file, checked for the keys predict and bench rely on."""
    if not text:
        raise CnnlabError(f"{path} has no cnnlab metadata: it was not written by `cnnlab export` (or was "
                          "re-saved without it); export the run again with `cnnlab export RUN_DIR`")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CnnlabError(f"{path} has damaged cnnlab metadata (not JSON): export the run again") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise CnnlabError(f"{path} has metadata under 'cnnlab' that is not cnnlab's export metadata: "
                          "export the run again with `cnnlab export RUN_DIR`")
    if meta.get("version", 0) > META_VERSION:
        raise CnnlabError(f"{path} was exported by a newer cnnlab ({meta.get('cnnlab_version')}): upgrade cnnlab")
    try:
        c, h, w = (int(v) for v in meta["input"]["shape"])
        assert len(meta["classes"]) == int(meta["num_classes"]) >= 1 and min(c, h, w) >= 1
        assert len(meta["mean"]) == len(meta["std"]) == c
    except (KeyError, TypeError, ValueError, AssertionError):
        raise CnnlabError(f"{path} has incomplete cnnlab metadata (input shape, classes, mean and std are "
                          "needed): export the run again") from None
    return meta


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
        tta=bool(cfg.tta),
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
        raise CnnlabError(f"{path} is a zip archive but neither {' nor '.join('a ' + f.title for f in candidates)} "
                          "model: give a file written by `cnnlab export`")
    fallback = next((f for f in candidates if f.recognise is None), None)
    if fallback is None:
        raise CnnlabError(f"{path} is not a model cnnlab reads ({', '.join(f.title for f in FORMATS.values())}): "
                          "give a file written by `cnnlab export`")
    return fallback.name  # a format without a signature: reading it says whether it is one


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
    subset), or of `dataset`, which must have the file's image shape and class count."""
    from cnnlab.data import load_dataset
    from cnnlab.dirs import SPLITS

    if split not in SPLITS:
        raise CnnlabError(f"unknown split '{split}': choose {', '.join(SPLITS)}")
    recorded = meta.get("dataset") or {}
    if dataset is None:
        if not recorded.get("name"):
            raise CnnlabError("the model file records no dataset: give one with --dataset")
        where = data_dir or (recorded.get("data_dir") if recorded.get("data_dir") and Path(recorded["data_dir"]).is_dir()
                             else None)
        data = load_dataset(recorded["name"], where, recorded.get("val_size"), recorded.get("seed") or 0,
                            recorded.get("subset"))
        name = recorded["name"]
    else:
        data, name = load_dataset(dataset, data_dir), dataset
    part = getattr(data, split)
    shape = tuple(int(v) for v in meta["input"]["shape"])
    if tuple(part.x.shape[1:]) != shape:
        raise CnnlabError(f"the model takes {'x'.join(map(str, shape))} images but {name} has "
                          f"{'x'.join(map(str, part.x.shape[1:]))}: give a dataset of the shape it was trained on")
    if len(data.classes) != int(meta["num_classes"]):
        raise CnnlabError(f"the model scores {meta['num_classes']} classes but {name} has {len(data.classes)}: "
                          "give a dataset with the classes it was trained on")
    return part
