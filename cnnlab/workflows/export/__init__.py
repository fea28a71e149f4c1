"""Export: a trained model as one file in a registered format, and such a file on a runtime.

    from cnnlab.workflows.export import export_run, load_for_runtime, load_exported
    info = export_run("runs/x", "onnx")                 # RUN_DIR/exports/model.onnx, checked first
    pred = load_exported(info["path"])                  # a Predictor on the file's own runtime
    pred = load_for_runtime("model.safetensors", "torchscript")
    info = export_run("runs/x", "openvino", int8=True)  # RUN_DIR/exports/model-int8.openvino, checked on the test split

    formats.py      Format, register_format, FORMATS  the registry: everything asked of a format by name
    metadata.py     export_metadata, sniff_format     the record every file carries; a file known by content
    predictor.py    Predictor, load_exported, prepare  a model on a runtime; a file on its own runtime; its input
    export.py       export_run, load_for_runtime       the checked write; a file or model on any runtime
    safetensors.py  safetensors_bytes                  the state dict, on PyTorch eager (any runtime)
    onnx.py         onnx_bytes, OnnxPredictor          the graph at an opset, on ONNX Runtime
    torchscript.py  torchscript_bytes                  the traced module, on TorchScript
    keras.py        keras_bytes, KerasPredictor        a Keras 3 file, on Keras's PyTorch backend
    keras_layers.py to_keras                           a PyTorch model as Keras 3 layers
    openvino.py     openvino_bytes, OpenVinoPredictor  OpenVINO IR in one zip, on OpenVINO's CPU device
    tracing.py      with_normalization, quiet          what the traced and converted formats share
    quantize.py     calibration_images, int8_check     int8: calibration from the train split, the test-split check

A format is one module ending in `register_format(Format(...))`, imported below; the order of the
imports is the order users see. Importing this package does not import torch (see formats.py).
"""

from cnnlab.workflows.export.formats import (FILE_RUNTIMES, FORMATS, INT8, NATIVE_RUNTIME, RUNTIMES, Format,
                                             all_runtime_names, auto_runtimes, format_for_runtime, get_format,
                                             int8_formats, register_format, runtime_available, split_runtime)
from cnnlab.workflows.export.metadata import (META_FILE, META_FORMAT, META_KEY, META_VERSION, export_metadata,
                                              file_split, model_metadata, read_metadata, sniff_format)
from cnnlab.workflows.export.predictor import Predictor, TorchPredictor, load_exported, prepare
from cnnlab.workflows.export.safetensors import build_torch_model, load_safetensors, safetensors_bytes
from cnnlab.workflows.export.onnx import DEFAULT_OPSET, EXPORTERS, OnnxPredictor, onnx_bytes, ort_providers
from cnnlab.workflows.export.torchscript import torchscript_bytes
from cnnlab.workflows.export.keras import KerasPredictor, keras_bytes, keras_model
from cnnlab.workflows.export.openvino import OpenVinoPredictor, openvino_bytes
from cnnlab.workflows.export.export import (compare, export_run, load_for_runtime, predictor_for_model,
                                            predictor_from_bytes)

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "FILE_RUNTIMES", "FORMATS", "INT8", "all_runtime_names", "auto_runtimes",
           "int8_formats", "runtime_available", "split_runtime", "META_FILE", "META_FORMAT", "META_KEY",
           "META_VERSION", "NATIVE_RUNTIME", "RUNTIMES", "Format", "KerasPredictor", "OnnxPredictor",
           "OpenVinoPredictor", "Predictor", "TorchPredictor", "build_torch_model", "compare", "export_metadata",
           "export_run", "file_split", "format_for_runtime", "get_format", "keras_bytes", "keras_model",
           "load_exported", "load_for_runtime", "load_safetensors", "model_metadata", "onnx_bytes", "openvino_bytes",
           "ort_providers", "predictor_for_model", "predictor_from_bytes", "prepare", "read_metadata",
           "register_format", "safetensors_bytes", "sniff_format", "torchscript_bytes"]
