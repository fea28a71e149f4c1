"""The OpenVINO format: OpenVINO IR (model.xml + model.bin) in one zip, the metadata in the IR's rt_info.

    ov_model = openvino_model(model, meta)   # the PyTorch model converted by openvino.convert_model
    data = openvino_bytes(model, meta)       # the zip's bytes: model.xml, model.bin
    pred = OpenVinoPredictor(ov_model, meta) # compiled for the CPU device, float32, cnnlab's thread count

Needs OpenVINO (`pip install cnnlab[deploy]`); it runs on the CPU only (edge CPUs are what it is for).

One file per export, as the registry and `cnnlab predict FILE` expect: IR is two files, so the file is a
zip holding both (`model.xml`, `model.bin`), recognised by those members like a `.keras` file. A zip
writes and moves as one file (atomically, as every export), its CRCs catch a damaged byte in either
part, and `unzip` gives the plain IR for any OpenVINO tool; an `.xml` with a `.bin` beside it would
need a second atomic write and a checksum to catch the pair going apart. The cnnlab metadata is the
IR's own rt_info entry `cnnlab` (`model.get_rt_info("cnnlab")`), so the unzipped IR still carries it;
`read_meta` reads it from the XML without OpenVINO.

The model is converted from the PyTorch module (openvino.convert_model with an example input) with a
dynamic batch dimension: converted so, or from cnnlab's ONNX bytes, every zoo model agrees with PyTorch
within 5e-7 on CIFAR-10 test images (measured), and the PyTorch route needs no onnx package. It is
saved in float32 (save_model's default compresses weights to float16).
It is compiled with INFERENCE_PRECISION_HINT f32: on CPUs with bfloat16 units (AMD EPYC here) the CPU
device otherwise defaults to bfloat16 and misses the 1e-4 check. The check before writing allows
1e-4 x max(1, largest score).
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import Format, register_format
from cnnlab.workflows.export.metadata import META_KEY, check_zip, meta_json, not_a_model, parse_meta, read_metadata
from cnnlab.workflows.export.predictor import Predictor, check_io

XML, BIN = "model.xml", "model.bin"  # the zip's members: OpenVINO IR's two files


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise CnnlabError("OpenVINO is not installed: `pip install cnnlab[deploy]`") from None
    return openvino


# ---- writing ----------------------------------------------------------------------------------

def openvino_model(model, meta: dict):
    """The PyTorch model (behind its baked normalisation) as an openvino.Model, input (batch, C, H, W)
    with a dynamic batch, the metadata in rt_info."""
    import torch

    from cnnlab.workflows.export.tracing import example_input, quiet, with_normalization

    ov = import_openvino()
    wrapped = with_normalization(model.cpu(), meta)
    c, h, w = (int(v) for v in meta["input"]["shape"])
    try:
        with quiet(), torch.no_grad():
            ov_model = ov.convert_model(wrapped, example_input=example_input(meta, 2),
                                        input=[(ov.PartialShape([-1, c, h, w]), ov.Type.f32)])
    except Exception as e:  # the converter's own errors: an operation OpenVINO has no form for  # noqa: BLE001
        raise CnnlabError(f"cannot convert '{meta.get('model')}' to OpenVINO ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}): export onnx, "
                          "torchscript or safetensors") from None
    ov_model.inputs[0].get_tensor().set_names({"input"})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    ov_model.set_rt_info(meta_json({**meta, "export_format": "openvino"}), META_KEY)
    return ov_model


def openvino_bytes(model, meta: dict) -> bytes:
    """The zip of the IR: model.xml (the graph, the metadata in its rt_info) and model.bin (float32 weights)."""
    return zip_ir(openvino_model(model, meta))


def openvino_int8(model, meta: dict, calibration) -> bytes:
    """The IR quantized by NNCF (post-training, its default symmetric preset with fast bias correction):
    FakeQuantize nodes whose ranges come from `calibration` (prepared float32 NCHW, one image per step, as
    NNCF collects its statistics), which OpenVINO's CPU plugin runs as int8 kernels."""
    from cnnlab.workflows.export.quantize import quiet_quantizer

    ov_model = openvino_model(model, meta)
    with quiet_quantizer():
        try:
            import nncf
        except ImportError:
            raise CnnlabError("NNCF is not installed (OpenVINO's int8 needs it): `pip install cnnlab[deploy]`") from None
        try:
            q = nncf.quantize(ov_model, nncf.Dataset([calibration[i:i + 1].numpy() for i in range(len(calibration))]),
                              subset_size=len(calibration))
        except Exception as e:  # NNCF's own errors  # noqa: BLE001
            raise CnnlabError(f"NNCF cannot quantize '{meta.get('model')}' to int8 ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}): export "
                              "float32") from None
    record = {**(meta.get("quantization") or {}), "dtype": "int8", "tool": f"nncf {nncf.__version__}",
              "method": "static post-training (NNCF, symmetric preset, fast bias correction): int8 weights "
                        "per output channel and activations, min-max ranges"}
    q.set_rt_info(meta_json({**meta, "export_format": "openvino", "quantization": record}), META_KEY)
    return zip_ir(q)


def zip_ir(ov_model) -> bytes:
    """An openvino.Model as the zip of its IR (weights as they are: float32, or int8 after quantization)."""
    ov = import_openvino()
    with tempfile.TemporaryDirectory(prefix="cnnlab-openvino-") as tmp:
        ov.save_model(ov_model, str(Path(tmp) / XML), compress_to_fp16=False)
        out = Path(tmp) / "model.zip"
        with zipfile.ZipFile(out, "w") as z:
            z.write(Path(tmp) / XML, XML, compress_type=zipfile.ZIP_DEFLATED)
            z.write(Path(tmp) / BIN, BIN, compress_type=zipfile.ZIP_STORED)  # float32 weights barely deflate
        return out.read_bytes()


# ---- reading ----------------------------------------------------------------------------------

def _members(data_or_path, source) -> tuple[bytes, bytes]:
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path) as z:
            return z.read(XML), z.read(BIN)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
        raise CnnlabError(f"{source} is damaged ({type(e).__name__}): export the model again") from None


def read_ir(xml: bytes, weights: bytes, source):
    """The openvino.Model of an IR's two parts; a damaged one is a one-line error."""
    import numpy as np

    ov = import_openvino()
    try:
        return ov.Core().read_model(model=xml, weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))
    except Exception as e:  # OpenVINO raises RuntimeError for a bad IR  # noqa: BLE001
        why = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise CnnlabError(f"OpenVINO cannot read {source} ({why}): it is damaged or not a cnnlab export; "
                          "export the model again") from None


class OpenVinoPredictor(Predictor):
    """An openvino.Model compiled for the CPU device in float32, with as many inference threads as
    PyTorch uses (as ONNX Runtime gets), so the runtimes compare on equal terms."""

    runtime = "openvino"

    def __init__(self, ov_model, meta, device="cpu", source=""):
        super().__init__(meta, device, source)
        if self.device.type != "cpu":
            raise CnnlabError(f"cannot run {source or 'the OpenVINO model'} on {self.device}: cnnlab runs the "
                              "openvino runtime on the CPU only")
        ov = import_openvino()
        try:
            self.compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": self.threads,
                                                                      "INFERENCE_PRECISION_HINT": "f32"})
        except Exception as e:  # noqa: BLE001
            raise CnnlabError(f"OpenVINO cannot compile {source or 'the model'} for the CPU "
                              f"({str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__}): "
                              "export the model again") from None
        self.request = self.compiled.create_infer_request()

    @property
    def input_device(self):
        import torch

        return torch.device("cpu")

    def __call__(self, x):
        import numpy as np
        import torch

        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        out = self.request.infer({0: arr})[0]
        return torch.from_numpy(np.array(out, dtype=np.float32))  # a copy: the request reuses its buffer

    def runner(self, x):
        import numpy as np

        ov = import_openvino()
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        request = self.compiled.create_infer_request()
        # the input placed once, as for the other runtimes: passing it per call costs LeNet-5 0.064 ms a
        # batch-1 pass here against 0.043 ms (OpenVINO's Python wrapping of the inputs and outputs)
        request.set_input_tensor(ov.Tensor(arr, shared_memory=True))

        def run():
            request.infer()

        run.keep_alive = arr  # the shared input buffer must outlive the request
        return run


# ---- the registry's entry ---------------------------------------------------------------------

def recognise(head: bytes, names, path) -> bool:
    return XML in names and BIN in names


def read_meta(path):
    """The metadata from model.xml's rt_info, read as XML (no OpenVINO needed, the weights not read)."""
    check_zip(path)
    xml, _ = _members(path, path)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise not_a_model(path, f"model.xml is not XML ({e})") from None
    entry = root.find(f"rt_info/{META_KEY}")
    return None if entry is None else entry.get("value")


def load(path, device):
    _, meta = read_metadata(path)  # CRCs and the metadata checked first
    xml, weights = _members(path, path)
    pred = OpenVinoPredictor(read_ir(xml, weights, path), meta, device, str(path))
    check_io(pred, path)
    return pred


def stamp(data: bytes, updates: dict) -> bytes:
    """The file's bytes with `updates` merged into its cnnlab metadata (the IR otherwise as it was)."""
    xml, weights = _members(data, "the OpenVINO data")
    ov_model = read_ir(xml, weights, "the OpenVINO data")
    meta = parse_meta(ov_model.get_rt_info(META_KEY).astype(str), "the OpenVINO data")
    ov_model.set_rt_info(meta_json({**meta, **updates}), META_KEY)
    return zip_ir(ov_model)


def load_bytes(data: bytes, meta: dict):
    xml, weights = _members(data, "the exported OpenVINO model")
    return OpenVinoPredictor(read_ir(xml, weights, "the exported OpenVINO model"), meta, "cpu",
                             "the exported OpenVINO model")


def convert(model, meta, device, source=""):
    if device.type != "cpu":
        raise CnnlabError("cnnlab runs the openvino runtime on the CPU only")
    return OpenVinoPredictor(openvino_model(model.cpu(), meta), meta, device, source)


OPENVINO = register_format(Format(
    name="openvino", ext="openvino", title="OpenVINO", runtime="openvino", write=openvino_bytes, load=load,
    load_bytes=load_bytes, read_meta=read_meta, convert=convert, recognise=recognise, zip=True,
    quantize=openvino_int8, stamp=stamp, requires=("openvino",),
    help="OpenVINO IR for edge CPUs, as one zip (unzip it for model.xml and model.bin): input `input` "
         "(batch, C, H, W) with a dynamic batch, output `logits`, float32 weights; runs on OpenVINO's CPU "
         "device; needs `pip install cnnlab[deploy]`"))
