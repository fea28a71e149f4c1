"""Input adaptation: a model that takes the dataset's images as they are and adapts them itself.

    shape = model_input_shape((1, 28, 28), resize=32, channels=3)     # (3, 32, 32): what the layers see
    model = adapt_input(create_model(..., in_channels=3, input_size=32), (1, 28, 28), resize=32, channels=3)

A base trained on 3x32x32 CIFAR images meets 1x28x28 MNIST digits: `resize` scales every batch
to SIZExSIZE (bilinear, one `F.interpolate` per batch) and `channels` repeats a one-channel image
to that many channels. Both run inside the model, as a forward pre-hook, so training,
evaluation, `cnnlab evaluate`/`predict`/`bench`, reports and the cost model all feed it the
dataset's own images and get the same result; the hook has no weights, so the state dict's
names are those of the model alone. (The other way to give a gray image to an RGB base, folding
the base's first convolution over its input channels, needs no adapter: cnnlab.weights.match.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def model_input_shape(data_shape, resize: int | None = None, channels: int | None = None) -> tuple:
    """(C, H, W) the model's layers see for images of `data_shape`."""
    c, h, w = (int(v) for v in data_shape)
    if resize:
        h = w = int(resize)
    return (int(channels) if channels else c), h, w


def _adapt(module, args):
    x, *rest = args
    channels, size = module.input_adapter
    if channels and x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)  # a gray channel, repeated
    if size and tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return (x, *rest)


def adapt_input(model: torch.nn.Module, data_shape, resize: int | None = None,
                channels: int | None = None) -> torch.nn.Module:
    """`model`, taking images of `data_shape` and resizing / repeating them first (nothing when
    neither is asked for). The adapter is a forward pre-hook, so it travels with the module
    (torch.compile, DistributedDataParallel, a deep copy) and adds nothing to its state dict."""
    if not resize and not channels:
        return model
    c = int(data_shape[0])
    if channels and c != 1:
        raise ValueError(f"input_channels repeats a one-channel image; these images have {c} channels")
    model.input_adapter = (int(channels) if channels else None, (int(resize), int(resize)) if resize else None)
    model.register_forward_pre_hook(_adapt)
    return model
