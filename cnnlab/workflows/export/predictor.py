"""A model on one runtime and device (`Predictor`), and an exported file loaded on its own runtime.

    pred = load_exported("runs/x/exports/model.onnx", device="cpu")   # any file `cnnlab export` wrote
    logits = pred(x)          # x: float32 NCHW batch, prepared as pred.norm() says; returns CPU logits
    run_once = pred.runner(x) # one synchronous pass over a placed batch, for latency measurements
    pred.meta                 # what the file records: source run, input shape, classes, mean/std, ...

Each format's module has its runtime's Predictor (`TorchPredictor` here serves PyTorch eager and
TorchScript). A damaged file (truncated, corrupt bytes: zip CRCs, or the weights' SHA-256 recorded in
the metadata) or one that does not fit its own metadata is a one-line `CnnlabError`. torch is
imported inside the methods (see `cnnlab.workflows.export.formats`).
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.workflows.export.formats import FORMATS
from cnnlab.workflows.export.metadata import norm_for, sniff_format


class Predictor:
    """A model on one runtime and device. Call it on a float32 NCHW batch (prepared as `norm()` says,
    placed on `input_device`); it returns (N, classes) scores on the CPU."""

    runtime = "?"

    def __init__(self, meta: dict, device="cpu", source: str = ""):
        import torch

        self.meta = meta
        self.device = torch.device(device)
        self.source = source
        self.threads = torch.get_num_threads()

    @property
    def input_device(self):
        return self.device

    @property
    def label(self) -> str:
        """The runtime's name in tables: `onnxruntime`, or `onnxruntime-int8` for a quantized model."""
        return self.runtime + ("-int8" if self.meta.get("quantization") else "")

    def norm(self):
        return norm_for(self.meta)

    def __call__(self, x):
        raise NotImplementedError

    def runner(self, x):
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

    def __call__(self, x):
        import torch

        with torch.no_grad():
            return self.module(x.to(self.device)).float().cpu()

    def runner(self, x):
        import torch

        from cnnlab.device import synchronize

        x = x.to(self.device)
        module, device = self.module, self.device

        @torch.no_grad()
        def run():
            module(x)
            synchronize(device)

        return run


def prepare(x_uint8, mean, std):
    """uint8 images as cnnlab's loader hands them to a model: (x - 255*mean) * 1/(255*std)."""
    import torch

    from cnnlab.data.datasets import Split
    from cnnlab.data.loader import BatchLoader

    split = Split(x_uint8, torch.zeros(len(x_uint8), dtype=torch.long))
    return BatchLoader(split, max(1, len(x_uint8)), mean, std).batch(torch.arange(len(x_uint8)))[0]


def check_io(pred: Predictor, path):
    """Run a 2-image batch of the recorded input shape: a model that does not take it, or does not give
    one score per recorded class, does not belong to its metadata."""
    import torch

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


def load_exported(path, device="cpu") -> Predictor:
    """A Predictor for a file written by `cnnlab export`, on the file's own runtime: PyTorch for
    safetensors (the model is rebuilt from the metadata), ONNX Runtime, TorchScript or Keras.
    (`cnnlab.workflows.export.load_for_runtime` runs a safetensors file on the other runtimes too.)"""
    import torch

    path = Path(path)
    return FORMATS[sniff_format(path)].load(path, torch.device(device))
