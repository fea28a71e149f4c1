"""The registry of export formats: one `Format` record per format, and everything asked of it by name.

    fmt = get_format("onnx")          # the record; an unknown name is a one-line CnnlabError
    fmt.ext, fmt.runtime, fmt.runtimes      # "onnx", "onnxruntime", ("onnxruntime",)
    data = fmt.write(model, meta, **export_options(fmt, {"opset": 13}))   # defaults filled in, checked
    pred = fmt.load(path, torch.device("cpu"))    # a Predictor on the file's own runtime

A format module (safetensors.py, onnx.py, torchscript.py, keras.py) defines its functions and
ends with `register_format(Format(...))`; the package's __init__ imports it. Everything that names
formats or runtimes reads them here: `cnnlab export --format`, the run directory's default file
(`RunDir.export_file(fmt.ext)`), recognising a file by its content, `cnnlab bench --runtimes`,
`cnnlab predict FILE`. Registration order is the order users see (choices, messages).

`cnnlab export --format` builds its choices from this registry when the CLI starts, and the CLI
starts without importing torch (1.7 s here): the format modules, and the package modules they
import at their top, import torch, numpy and the formats' libraries inside their functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Format:
    """One export format: its name and file, how a file is written, recognised, read and checked."""

    name: str  # the --format value, and `export_format` in the file's metadata
    ext: str  # the file extension, no dot: RUN_DIR/exports/model.<ext>
    title: str  # the format in messages ("ONNX")
    runtime: str  # the runtime its files run on (a `cnnlab bench --runtimes` name)
    write: Callable  # (model, meta, **options) -> bytes: the whole file, the metadata inside
    load: Callable  # (path, device) -> Predictor on `runtime`; a damaged or mismatched file is a CnnlabError
    load_bytes: Callable  # (data, meta) -> Predictor on the CPU: the written bytes, read back for the check
    read_meta: Callable  # (path) -> the metadata JSON, str or bytes as stored (None: there is none), the model not loaded
    convert: Callable  # (model, meta, device, source, **options) -> Predictor: an nn.Module on `runtime`, in memory
    # (head: first 16 bytes, names: the zip's member names or None, path) -> True for a file of this
    # format; None: no signature (protobuf), so it takes any file that is no zip and no other format's
    recognise: Callable | None = None
    zip: bool = False  # its files are zip archives (recognised by their members, CRC-checked on load)
    bitwise: bool = False  # the check before writing needs bitwise-equal scores, not agreement within 1e-4
    layout: str = "NCHW"  # the input layout its model takes
    # (path) -> (nn.Module, meta): for a file holding weights, the PyTorch model it rebuilds, which then
    # runs on every runtime; None: the file runs on `runtime` only
    rebuild: Callable | None = None
    options: dict = field(default_factory=dict)  # export options it takes -> their value when not given
    resolve_options: Callable | None = None  # (options) -> options with defaults filled in; bad ones raise
    check_out: Callable | None = None  # (path) -> raise for an --out name the format cannot be saved under
    help: str = ""  # what a file is for, in `cnnlab export --help`
    # (model, meta, calibration, **options) -> bytes: the model quantized to int8 after calibration images
    # (prepared float32 NCHW), its metadata inside; None: the format has no int8 form (quantize.py)
    quantize: Callable | None = None
    stamp: Callable | None = None  # (data, updates) -> the file's bytes with `updates` merged into its metadata
    requires: tuple = ()  # the modules its runtime needs (the runtime is available where they import)
    # picked by `--runtimes auto` and by predict's fastest-runtime choice; False for a runtime that is
    # there to interchange, not to deploy (Keras: 3 s to import, slowest here)
    auto: bool = True

    @property
    def runtimes(self) -> tuple:
        """The runtimes a file of this format runs on, its own first."""
        if self.rebuild is None:
            return (self.runtime,)
        return (self.runtime,) + tuple(r for r in RUNTIMES if r != self.runtime)


FORMATS: dict[str, Format] = {}  # name -> Format, in registration order


def register_format(fmt: Format) -> Format:
    """Add a format to the registry (once per name and per runtime; at most one without a signature)."""
    if fmt.name in FORMATS:
        raise ValueError(f"export format '{fmt.name}' is already registered")
    if fmt.runtime in RUNTIMES:
        raise ValueError(f"runtime '{fmt.runtime}' already belongs to format '{RUNTIMES[fmt.runtime]}'")
    if fmt.recognise is None and (fmt.zip or any(f.recognise is None for f in FORMATS.values())):
        raise ValueError(f"export format '{fmt.name}' needs a recognise function: a zip format always does, "
                         "and one format without a signature is the fallback already")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise CnnlabError(f"unknown export format '{name}': choose {', '.join(FORMATS)}")
    return FORMATS[name]


def runtime_available(runtime: str) -> bool:
    """True when the runtime's modules import here (found, not imported: cheap)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in format_for_runtime(runtime).requires)


def auto_runtimes() -> tuple:
    """The runtimes `--runtimes auto` measures and predict chooses from: PyTorch eager and every deployable
    runtime installed here, in registry order."""
    return tuple(f.runtime for f in FORMATS.values() if f.auto and runtime_available(f.runtime))


INT8 = "-int8"  # a runtime name with this suffix runs the model quantized to int8 (`onnxruntime-int8`)


def split_runtime(name: str) -> tuple[str, bool]:
    """(runtime, int8) of a runtime name: "openvino-int8" -> ("openvino", True)."""
    return (name[:-len(INT8)], True) if name.endswith(INT8) else (name, False)


def int8_formats() -> list:
    return [f for f in FORMATS.values() if f.quantize is not None]


def format_for_runtime(runtime: str) -> Format:
    """The format whose files run on `runtime` (its writer converts a model for it)."""
    base, int8 = split_runtime(runtime)
    if base not in RUNTIMES or (int8 and FORMATS[RUNTIMES[base]].quantize is None):
        raise CnnlabError(f"unknown runtime '{runtime}': choose {', '.join(all_runtime_names())}")
    return FORMATS[RUNTIMES[base]]


def all_runtime_names() -> list:
    """Every runtime name: each format's runtime, and `<runtime>-int8` for formats with an int8 form."""
    return list(RUNTIMES) + [f.runtime + INT8 for f in int8_formats()]


def export_options(fmt: Format, given: dict) -> dict:
    """The options `fmt` takes, from `given` (name -> value; None or the default: not given), its
    defaults filled in and checked; an option of another format, given, is a one-line error."""
    for name, value in given.items():
        if name in fmt.options:
            continue
        owner = next((f for f in FORMATS.values() if name in f.options), None)
        if owner is None:
            raise CnnlabError(f"unknown export option '{name}'")
        if value is not None and value != owner.options[name]:
            raise CnnlabError(f"{' and '.join('--' + k for k in owner.options)} apply to --format {owner.name} only")
    options = {k: given[k] if given.get(k) is not None else default for k, default in fmt.options.items()}
    return fmt.resolve_options(options) if fmt.resolve_options else options


class _View(Mapping):
    """A read-only table computed from the registry when read, so formats registered later are in it."""

    def __init__(self, compute):
        self._compute = compute

    def __getitem__(self, key):
        return self._compute()[key]

    def __iter__(self):
        return iter(self._compute())

    def __len__(self):
        return len(self._compute())

    def __repr__(self):
        return repr(self._compute())


# the registry read by runtime, for callers that ask by name
RUNTIMES = _View(lambda: {f.runtime: f.name for f in FORMATS.values()})  # runtime -> its format
NATIVE_RUNTIME = _View(lambda: {f.name: f.runtime for f in FORMATS.values()})  # format -> its files' runtime
FILE_RUNTIMES = _View(lambda: {f.name: f.runtimes for f in FORMATS.values()})  # format -> runtimes its files run on
