"""The ONNX format: the traced graph at a chosen opset, the metadata in `metadata_props`, run on ONNX Runtime.

    data = onnx_bytes(model, meta, opset=13, exporter="torchscript")   # input `input`, output `logits`
    pred = OnnxPredictor(data, meta, "cuda")     # an ONNX Runtime session (CUDA with onnxruntime-gpu)
    providers, why_not = ort_providers(torch.device("cuda"))

Two torch.onnx exporters write it (EXPORTERS: the TorchScript-based one, opsets 9-20, and the
torch.export-based `dynamo`, 18-23); the file has exactly the opset asked for, or the export fails.
The check before writing needs agreement within 1e-4 x max(1, largest score).
"""

from __future__ import annotations

import io

from cnnlab import __version__
from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import FORMATS, Format, register_format
from cnnlab.workflows.export.metadata import (META_KEY, extension_format, meta_json, not_a_model, parse_meta,
                                              tensors_sha256)
from cnnlab.workflows.export.predictor import Predictor, check_io

DEFAULT_OPSET = 17  # ONNX Runtime 1.14+, TensorRT 8.6+, OpenVINO 2023+ and most edge toolchains read it
EXPORTERS = {"torchscript": (9, 20), "dynamo": (18, 23)}  # torch.onnx exporters and the opsets they write


# ---- writing ----------------------------------------------------------------------------------

def check_opset(opset, exporter):
    if exporter not in EXPORTERS:
        raise CnnlabError(f"unknown ONNX exporter '{exporter}': choose {' or '.join(EXPORTERS)}")
    lo, hi = EXPORTERS[exporter]
    if not isinstance(opset, int) or not lo <= opset <= hi:
        other = " (or --exporter dynamo for 18-23)" if exporter == "torchscript" else " (or --exporter torchscript for 9-20)"
        raise CnnlabError(f"--opset {opset} is out of range for the {exporter} exporter: choose {lo}-{hi}{other}")


def resolve_options(options: dict) -> dict:
    options = {**options, "opset": DEFAULT_OPSET if options.get("opset") is None else options["opset"]}
    check_opset(options["opset"], options["exporter"])
    return options


def onnx_weights_sha256(model_proto) -> str:
    from onnx import numpy_helper

    return tensors_sha256((t.name, numpy_helper.to_array(t)) for t in model_proto.graph.initializer)


def onnx_bytes(model, meta: dict, opset: int | None = None, exporter: str = "torchscript") -> bytes:
    """The model as an ONNX graph, input `input` (batch, C, H, W) with a dynamic batch, output `logits`,
    at exactly the chosen opset, the metadata in metadata_props."""
    import onnx
    import torch

    from cnnlab.workflows.export.tracing import example_input, quiet, with_normalization

    opset = DEFAULT_OPSET if opset is None else opset
    check_opset(opset, exporter)
    wrapped = with_normalization(model.cpu(), meta)
    x = example_input(meta, 2)
    try:
        with quiet(), torch.no_grad():
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
    meta = {**meta, "export_format": "onnx", "opset": opset, "onnx_exporter": exporter}
    return finish(proto, meta)


def finish(proto, meta: dict) -> bytes:
    """The graph's bytes with cnnlab as producer, `meta` (and the weights' SHA-256) in metadata_props, checked."""
    import onnx

    meta = {**meta, "weights_sha256": onnx_weights_sha256(proto)}
    proto.producer_name, proto.producer_version = "cnnlab", __version__
    trained = f" trained on {meta['dataset']['name']}" if (meta.get("dataset") or {}).get("name") else ""
    int8 = ", int8" if meta.get("quantization") else ""
    proto.doc_string = (f"{meta.get('model')}{trained}{int8}, exported by cnnlab; input batch x "
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


def onnx_int8(model, meta: dict, calibration, opset: int | None = None, exporter: str = "torchscript") -> bytes:
    """The ONNX graph quantized by ONNX Runtime's static quantization: QDQ nodes, int8 weights per output
    channel, uint8 activations whose ranges are the min and max over `calibration` (prepared float32 NCHW).
    ORT fuses each QuantizeLinear-op-DequantizeLinear group into its int8 kernel when it loads the file."""
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from cnnlab.workflows.export.quantize import quiet_quantizer

    fp32 = onnx_bytes(model, meta, opset, exporter)
    batches = [{"input": calibration[i:i + 32].numpy()} for i in range(0, len(calibration), 32)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="cnnlab-int8-") as tmp, quiet_quantizer():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:  # the quantizer's own errors: an operator it cannot quantize  # noqa: BLE001
            raise CnnlabError(f"ONNX Runtime cannot quantize '{meta.get('model')}' to int8 ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}): try --format "
                              "openvino --int8, or export float32") from None
        proto = onnx.load(str(dst))
    record = {**(meta.get("quantization") or {}), "dtype": "int8", "tool": f"onnxruntime {onnxruntime.__version__}",
              "method": "static post-training (QDQ): int8 weights per output channel, uint8 activations, "
                        "min-max ranges"}
    base = onnx.load_from_string(fp32)
    written = next(p.value for p in base.metadata_props if p.key == META_KEY)
    return finish(proto, {**parse_meta(written, "the ONNX data"), "quantization": record})


def stamp(data: bytes, updates: dict) -> bytes:
    """The file's bytes with `updates` merged into its cnnlab metadata (the graph unchanged)."""
    proto = _load_onnx(data, "the ONNX data")
    meta = parse_meta(_meta_text(proto, "the ONNX data"), "the ONNX data")
    return finish(proto, {**meta, **updates})


# ---- reading ----------------------------------------------------------------------------------

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
        raise _not_onnx(path, str(e).splitlines()[0][:80] if str(e) else type(e).__name__) from None


def _not_onnx(path, why: str) -> CnnlabError:
    """ONNX has no signature, so it is what a file no other format recognises is read as: a file that is not
    ONNX either is named by its extension's format, without the ONNX parser's words when that is another."""
    fmt = extension_format(path)
    if fmt is None or fmt.name == "onnx":
        return not_a_model(path, f"not an ONNX graph, or a damaged one: {why}")
    return not_a_model(path, f"its bytes are none of {', '.join(f.title for f in FORMATS.values())}")


def _meta_text(model_proto, path):
    if not model_proto.graph.node:
        raise _not_onnx(path, "no graph in it")
    return next((p.value for p in model_proto.metadata_props if p.key == META_KEY), None)


def ort_providers(device):
    """(providers, why not) for ONNX Runtime on a torch device."""
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
        import torch

        return torch.device("cpu")  # ONNX Runtime takes host arrays (and copies them to the GPU itself)

    def __call__(self, x):
        import numpy as np
        import torch

        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x.cpu().numpy())})[0]
        return torch.from_numpy(out)

    def runner(self, x):
        import numpy as np

        from cnnlab.device import synchronize

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


# ---- the registry's entry ---------------------------------------------------------------------

def read_meta(path):
    return _meta_text(_load_onnx(path), path)


def load(path, device):
    proto = _load_onnx(path)
    meta = parse_meta(_meta_text(proto, path), path)
    if meta.get("weights_sha256") and onnx_weights_sha256(proto) != meta["weights_sha256"]:
        raise CnnlabError(f"{path} is damaged: its weights do not match the SHA-256 recorded at export; "
                          "export the model again")
    pred = OnnxPredictor(proto.SerializeToString(), meta, device, str(path))
    check_io(pred, path)
    return pred


def load_bytes(data: bytes, meta: dict):
    _load_onnx(data, "the ONNX data")
    return OnnxPredictor(data, meta, "cpu", "the exported ONNX model")


def convert(model, meta, device, source="", opset: int | None = None):
    _, why = ort_providers(device)
    if why:
        raise CnnlabError(why)
    return OnnxPredictor(onnx_bytes(model.cpu(), meta, opset=opset), meta, device, source)


ONNX = register_format(Format(
    name="onnx", ext="onnx", title="ONNX", runtime="onnxruntime", write=onnx_bytes, load=load, load_bytes=load_bytes,
    read_meta=read_meta, convert=convert, recognise=None, options={"opset": None, "exporter": "torchscript"},
    resolve_options=resolve_options, quantize=onnx_int8, stamp=stamp, requires=("onnx", "onnxruntime"),
    help="an ONNX graph for ONNX Runtime and edge toolchains: input `input` (batch, C, H, W) with a "
         f"dynamic batch, output `logits`, at the chosen --opset (default {DEFAULT_OPSET})"))
