"""Running a model on a runtime: PyTorch eager, TorchScript, ONNX Runtime or Keras, from a run or a file.

    pred = load_exported("runs/x/exports/model.onnx", device="cpu")   # any file `cnnlab export` wrote
    logits = pred(x)          # x: float32 NCHW batch, prepared as pred.norm() says; returns CPU logits
    run_once = pred.runner(x) # one synchronous pass over a placed batch, for latency measurements
    pred.meta                 # what the file records: source run, input shape, classes, mean/std, ...

Every exported file carries cnnlab's metadata (one JSON object) in its own format's place:
safetensors' metadata dict, ONNX `metadata_props`, a TorchScript extra file and a member of the
`.keras` zip, each under the name `cnnlab` / `cnnlab.json`. A file is recognised by its content, not
its name. A damaged file (truncated, corrupt bytes: zip CRCs, or the weights' SHA-256 recorded in the
metadata) or one that does not fit its own metadata is a one-line `CnnlabError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from cnnlab.device import synchronize
from cnnlab.errors import CnnlabError

META_FORMAT = "cnnlab-export"
META_VERSION = 1
META_KEY = "cnnlab"  # safetensors metadata key and ONNX metadata_props key
META_FILE = "cnnlab.json"  # TorchScript extra file and .keras zip member
FORMATS = ("safetensors", "onnx", "torchscript", "keras")
RUNTIMES = ("torch", "torchscript", "onnxruntime", "keras")
# the runtime each format's file runs on, and what else it can run on (a safetensors file rebuilds
# the PyTorch model, so everything a run directory can do)
FILE_RUNTIMES = {"safetensors": RUNTIMES, "onnx": ("onnxruntime",), "torchscript": ("torchscript",),
                 "keras": ("keras",)}
NATIVE_RUNTIME = {"safetensors": "torch", "onnx": "onnxruntime", "torchscript": "torchscript", "keras": "keras"}


# ---- metadata ---------------------------------------------------------------------------------

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
    h = hashlib.sha256()
    for name, a in sorted(named_arrays, key=lambda na: na[0]):
        a = np.ascontiguousarray(a)
        h.update(f"{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def state_dict_sha256(state: dict) -> str:
    return tensors_sha256((k, v.detach().cpu().numpy()) for k, v in state.items())


def onnx_weights_sha256(model_proto) -> str:
    from onnx import numpy_helper

    return tensors_sha256((t.name, numpy_helper.to_array(t)) for t in model_proto.graph.initializer)


def input_description(meta: dict) -> str:
    layout = meta["input"].get("layout", "NCHW")
    if meta["input"].get("normalization_baked"):
        return f"float32 pixel values 0-255, {layout}"
    return f"float32 (pixel/255 - mean) / std per channel, {layout}"


# ---- recognising a file -----------------------------------------------------------------------

def sniff_format(path) -> str:
    """safetensors, onnx, torchscript or keras, from the file's content; anything else is an error."""
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory but not a cnnlab run directory (no config.yaml and "
                          "checkpoints/): give a run directory or an exported model file")
    if not path.exists():
        raise CnnlabError(f"{path} does not exist: give a run directory or a file written by `cnnlab export`")
    size = path.stat().st_size
    if size == 0:
        raise CnnlabError(f"{path} is empty: export the model again")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return _zip_format(path)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) > 8 and head[8:9] == b"{" and 2 <= n:
        if 8 + n > size:
            raise CnnlabError(f"{path} is a damaged safetensors file: its header runs past the end of the file "
                              "(truncated?); export the model again")
        return "safetensors"
    return "onnx"  # protobuf has no magic number; parsing it says whether it is one


def _zip_format(path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        raise CnnlabError(f"{path} is a damaged zip archive (truncated or corrupt): export the model again") from None
    if "config.json" in names and any(n.startswith("model.weights") for n in names):
        return "keras"
    if any("/code/" in n for n in names) or any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        raise CnnlabError(f"{path} is a PyTorch checkpoint or pickled state (torch.save), not an exported model: "
                          "give its run directory, or make a file with `cnnlab export RUN_DIR`")
    raise CnnlabError(f"{path} is a zip archive but neither a TorchScript nor a .keras model: give a file written "
                      "by `cnnlab export`")


def _check_zip(path):
    """Every member's CRC: a corrupt byte anywhere in a TorchScript or .keras file is caught here."""
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
    if fmt == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                text = (f.metadata() or {}).get(META_KEY)
        except (SafetensorError, OSError, ValueError) as e:
            raise CnnlabError(f"{path} is a damaged safetensors file ({str(e).splitlines()[0][:80]}): "
                              "export the model again") from None
    elif fmt == "onnx":
        text = _onnx_meta_text(_load_onnx(path), path)
    elif fmt == "torchscript":
        _check_zip(path)
        text = _torchscript_load(path, "cpu")[1]
    else:
        _check_zip(path)
        with zipfile.ZipFile(path) as z:
            text = z.read(META_FILE).decode() if META_FILE in z.namelist() else None
    meta = parse_meta(text, path)
    if meta.get("export_format") not in (None, fmt):
        raise CnnlabError(f"{path} is a {fmt} file but its metadata says {meta['export_format']}: export it again")
    return fmt, meta


def _load_onnx(path_or_bytes, path=None):
    import onnx

    path = path or path_or_bytes
    try:
        if isinstance(path_or_bytes, (bytes, bytearray)):
            return onnx.load_from_string(bytes(path_or_bytes))
        return onnx.load(str(path_or_bytes))
    except OSError:
        raise  # a file that cannot be read is the CLI's one line, not a format question
    except Exception as e:  # protobuf's DecodeError, onnx's own errors: not a model, or a damaged one  # noqa: BLE001
        why = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise CnnlabError(f"{path} is neither an ONNX model nor another format cnnlab reads (safetensors, "
                          f"TorchScript, .keras), or it is damaged ({why}): give a file written by "
                          "`cnnlab export`") from None


def _onnx_meta_text(model_proto, path):
    if not model_proto.graph.node:
        raise CnnlabError(f"{path} is not a model cnnlab reads (safetensors, ONNX, TorchScript, .keras), or it "
                          "is damaged: give a file written by `cnnlab export`")
    return next((p.value for p in model_proto.metadata_props if p.key == META_KEY), None)


def _torchscript_load(source, device):
    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated in favour of torch.export
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(source, map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        where = source if isinstance(source, (str, Path)) else "the TorchScript data"
        raise CnnlabError(f"{where} is a damaged TorchScript file ({str(e).splitlines()[0][:80]}): "
                          "export the model again") from None
    text = extra[META_FILE]
    return module.eval(), (text.decode() if isinstance(text, bytes) else text) or None


# ---- predictors -------------------------------------------------------------------------------

def norm_for(meta: dict):
    """(mean, std) that cnnlab's loader applies before the model: the dataset's, or the identity on
    0-255 pixel values when the model normalises inside (baked in)."""
    c = len(meta["mean"])
    if meta["input"].get("normalization_baked"):
        return [0.0] * c, [1 / 255] * c  # the loader then yields pixel values 0..255 exactly
    return list(meta["mean"]), list(meta["std"])


class Predictor:
    """A model on one runtime and device. Call it on a float32 NCHW batch (prepared as `norm()` says,
    placed on `input_device`); it returns (N, classes) scores on the CPU."""

    runtime = "?"

    def __init__(self, meta: dict, device="cpu", source: str = ""):
        self.meta = meta
        self.device = torch.device(device)
        self.source = source
        self.threads = torch.get_num_threads()

    @property
    def input_device(self) -> torch.device:
        return self.device

    def norm(self):
        return norm_for(self.meta)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def runner(self, x: torch.Tensor):
        """A zero-argument function that runs one pass over `x` (placed once, here) and returns when done."""
        raise NotImplementedError

    def close(self):
        pass


class TorchPredictor(Predictor):
    """An nn.Module (PyTorch eager) or a TorchScript module, on a torch device."""

    def __init__(self, module, meta, device="cpu", source="", runtime="torch"):
        super().__init__(meta, device, source)
        self.runtime = runtime
        self.module = module.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, x):
        return self.module(x.to(self.device)).float().cpu()

    def runner(self, x):
        x = x.to(self.device)
        module, device = self.module, self.device

        @torch.no_grad()
        def run():
            module(x)
            synchronize(device)

        return run


def ort_providers(device: torch.device):
    """(providers, why not) for ONNX Runtime on a device."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cpu":
        return ["CPUExecutionProvider"], None
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            return None, ("this onnxruntime has no CUDA provider (install onnxruntime-gpu in place of "
                          "onnxruntime)")
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"], None
    return None, f"cnnlab runs ONNX Runtime on cpu or cuda, not {device.type}"


class OnnxPredictor(Predictor):
    """An ONNX model in an ONNX Runtime session (CPU, or CUDA when the CUDA provider is there), with
    as many intra-op threads as PyTorch uses, so the two compare on equal terms."""

    runtime = "onnxruntime"

    def __init__(self, model_bytes: bytes, meta, device="cpu", source=""):
        import onnxruntime as ort

        super().__init__(meta, device, source)
        providers, why = ort_providers(self.device)
        if why:
            raise CnnlabError(f"cannot run {source or 'the ONNX model'} on {self.device}: {why}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for invalid graphs  # noqa: BLE001
            raise CnnlabError(f"ONNX Runtime cannot load {source or 'the ONNX model'} "
                              f"({str(e).splitlines()[0][:100]}): it is damaged or not a cnnlab export; "
                              "export the model again") from None
        if self.device.type == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise CnnlabError(f"ONNX Runtime could not start its CUDA provider for {source or 'the model'} "
                              "(CUDA or cuDNN libraries missing?): use --devices cpu")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def input_device(self):
        return torch.device("cpu")  # ONNX Runtime takes host arrays (and copies them to the GPU itself)

    def __call__(self, x):
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x.cpu().numpy())})[0]
        return torch.from_numpy(out)

    def runner(self, x):
        if self.device.type == "cpu":
            arr = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
            sess, feed, out = self.session, {self.input_name: arr}, [self.output_name]
            return lambda: sess.run(out, feed)
        # on a GPU: input and output stay on the device (no copies timed), as for PyTorch
        xd = x.to(self.device).contiguous()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", self.device.index or 0, np.float32, tuple(xd.shape), xd.data_ptr())
        binding.bind_output(self.output_name, "cuda", self.device.index or 0)
        sess, device = self.session, self.device

        def run():
            sess.run_with_iobinding(binding)
            synchronize(device)

        run.keep_alive = xd  # the bound buffer must outlive the binding
        return run


class KerasPredictor(Predictor):
    """A Keras 3 model (NHWC input) on Keras's PyTorch backend."""

    runtime = "keras"

    def __init__(self, kmodel, meta, device="cpu", source=""):
        super().__init__(meta, device, source)
        self.kmodel = kmodel
        self.keras = import_keras()

    @property
    def input_device(self):
        return torch.device("cpu")

    def _scope(self):
        return self.keras.device("cpu" if self.device.type == "cpu" else f"gpu:{self.device.index or 0}")

    def __call__(self, x):
        with self._scope(), torch.no_grad():
            out = self.kmodel(x.permute(0, 2, 3, 1).contiguous(), training=False)
        if isinstance(out, torch.Tensor):  # the PyTorch backend
            return out.detach().float().cpu()
        return torch.as_tensor(np.asarray(self.keras.ops.convert_to_numpy(out))).float()

    def runner(self, x):
        xh = x.permute(0, 2, 3, 1).contiguous()
        kmodel, device, scope = self.kmodel, self.device, self._scope

        def run():
            with scope(), torch.no_grad():
                kmodel(xh, training=False)
            synchronize(device)

        return run


def import_keras():
    """Keras 3, on its PyTorch backend unless the user chose another with KERAS_BACKEND."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise CnnlabError("Keras is not installed: `pip install cnnlab[keras]` (Keras 3 on the PyTorch backend; "
                          "no TensorFlow needed)") from None
    except Exception as e:  # a backend that is named but not installed, e.g. KERAS_BACKEND=tensorflow  # noqa: BLE001
        raise CnnlabError(f"Keras could not start on backend '{os.environ.get('KERAS_BACKEND')}' "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:80]}): unset KERAS_BACKEND or set it to "
                          "torch") from None
    if not str(getattr(keras, "__version__", "0")).startswith(("3.", "4.")):
        raise CnnlabError(f"Keras {keras.__version__} is too old: `pip install cnnlab[keras]` (Keras 3)")
    return keras


# ---- loading a file ---------------------------------------------------------------------------

def build_torch_model(meta: dict, state: dict, path) -> torch.nn.Module:
    """The PyTorch model a safetensors file's metadata names, with its weights; a mismatch is one line."""
    from cnnlab.models import create_model
    from cnnlab.models.adapt import adapt_input, model_input_shape

    data_shape = meta["input"]["shape"]
    adapter = meta["input"].get("adapter") or {}  # a run trained with --resize / --input-channels
    resize, channels = adapter.get("resize"), adapter.get("input_channels")
    c, h, w = model_input_shape(data_shape, resize, channels)
    name = meta.get("model")
    if not name:
        raise CnnlabError(f"{path} does not record which model its weights belong to: export the run again")
    try:
        model = create_model(name, num_classes=int(meta["num_classes"]), in_channels=int(c), input_size=(int(h), int(w)),
                             **dict(meta.get("model_args") or {}))
        model = adapt_input(model, data_shape, resize, channels)
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


def load_exported(path, device="cpu") -> Predictor:
    """A Predictor for a file written by `cnnlab export`, on the file's own runtime: PyTorch for
    safetensors (the model is rebuilt from the metadata), ONNX Runtime, TorchScript or Keras.
    (`cnnlab.workflows.export.load_for_runtime` runs a safetensors file on the other runtimes too.)"""
    path = Path(path)
    device = torch.device(device)
    fmt = sniff_format(path)
    if fmt == "safetensors":
        state, meta = load_safetensors(path)
        return TorchPredictor(build_torch_model(meta, state, path), meta, device, str(path))
    if fmt == "onnx":
        proto = _load_onnx(path)
        meta = parse_meta(_onnx_meta_text(proto, path), path)
        if meta.get("weights_sha256") and onnx_weights_sha256(proto) != meta["weights_sha256"]:
            raise CnnlabError(f"{path} is damaged: its weights do not match the SHA-256 recorded at export; "
                              "export the model again")
        pred = OnnxPredictor(proto.SerializeToString(), meta, device, str(path))
        check_io(pred, path)
        return pred
    if fmt == "torchscript":
        _check_zip(path)
        module, text = _torchscript_load(str(path), device)
        meta = parse_meta(text, path)
        pred = TorchPredictor(module, meta, device, str(path), runtime="torchscript")
        check_io(pred, path)
        return pred
    fmt, meta = read_metadata(path)
    kmodel = load_keras_model(path, device)
    pred = KerasPredictor(kmodel, meta, device, str(path))
    check_io(pred, path)
    return pred


def load_keras_model(path, device="cpu"):
    keras = import_keras()
    device = torch.device(device)
    try:
        with keras.device("cpu" if device.type == "cpu" else f"gpu:{device.index or 0}"):
            return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad archive  # noqa: BLE001
        raise CnnlabError(f"Keras cannot load {path} ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}): "
                          "it is damaged; export the model again") from None


def check_io(pred: Predictor, path):
    """Run a 2-image batch of the recorded input shape: a model that does not take it, or does not give
    one score per recorded class, does not belong to its metadata."""
    c, h, w = pred.meta["input"]["shape"]
    try:
        out = pred(torch.zeros(2, int(c), int(h), int(w)))
    except CnnlabError:
        raise
    except Exception as e:  # the runtime's own error for a wrong input  # noqa: BLE001
        raise CnnlabError(f"{path} does not run on its recorded input {c}x{h}x{w} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:80] if str(e) else ''}): the model and its metadata do not "
                          "match; export the run again") from None
    if tuple(out.shape) != (2, int(pred.meta["num_classes"])):
        raise CnnlabError(f"{path} gives scores of shape {list(out.shape[1:])} per image, but its metadata records "
                          f"{pred.meta['num_classes']} classes: the model and its metadata do not match; export "
                          "the run again")


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
