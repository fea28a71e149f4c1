"""What the formats that trace or convert the PyTorch model share: baked-in normalisation, the
example input, and silence from torch's exporters.

    wrapped = with_normalization(model, meta)   # behind a Normalize layer when meta says it is baked in
    x = example_input(meta, 2)                  # zeros of the recorded input shape, batch 2
    with quiet():                               # torch.onnx / torch.jit / Keras saving, without their chatter
        ...

Imported inside the format modules' functions (it imports torch; see `formats`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn


class Normalize(nn.Module):
    """Pixel values 0-255 to the model's input, (x - 255*mean) * 1/(255*std): the loader's arithmetic."""

    def __init__(self, mean, std):
        super().__init__()
        c = len(mean)
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1) * 255)
        self.register_buffer("scale", 1 / (torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1) * 255))

    def forward(self, x):
        return (x - self.shift) * self.scale


def with_normalization(model: nn.Module, meta: dict) -> nn.Module:
    """The model, behind a Normalize layer when the metadata says normalisation is baked in."""
    if not meta["input"].get("normalization_baked"):
        return model.eval()
    return nn.Sequential(Normalize(meta["mean"], meta["std"]), model).eval()


def example_input(meta, n=2, device="cpu"):
    c, h, w = meta["input"]["shape"]
    return torch.zeros(n, c, h, w, device=device)


@contextlib.contextmanager
def quiet():
    """torch.onnx and torch.jit speak on warnings, loggers and stdout; the command's output stays ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
