"""The one way to build the network a configuration trains.

    model = build_for(config, (1, 28, 28), 10)                 # a TrainConfig, or its dict (a checkpoint's)
    model = build_for(config, shape, classes, device="meta")   # shapes only, no weights: costing, plans

`config` says the model (a registered name or a spec), its `model_args`, and how the dataset's
images reach it (`resize`, `input_channels`: the adapter of `cnnlab.models.adapt`, which runs
inside the model). `input_shape` is the dataset's own (C, H, W), and `classes` its class count.
Training, the search's costing, `cnnlab cost`, export, predict, reports and transfer all build
through here, so a candidate is costed, exported and evaluated as exactly the network that trained.
"""

from __future__ import annotations

import torch

from cnnlab.models.adapt import adapt_input, model_input_shape
from cnnlab.models.registry import create_model


def _get(config, key, default=None):
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def build_for(config, input_shape, classes: int, device=None) -> torch.nn.Module:
    """The network `config` trains, for images of `input_shape` (the dataset's C, H, W) and
    `classes` classes: built from the registry, with the input adapter when the run resizes or
    repeats channels. `device="meta"` builds it without memory for its weights."""
    resize, channels = _get(config, "resize"), _get(config, "input_channels")
    c, h, w = model_input_shape(input_shape, resize, channels)
    args = dict(_get(config, "model_args") or {})
    if device is None:
        model = create_model(_get(config, "model"), num_classes=int(classes), in_channels=c, input_size=(h, w), **args)
    else:
        with torch.device(device):
            model = create_model(_get(config, "model"), num_classes=int(classes), in_channels=c, input_size=(h, w),
                                 **args)
    return adapt_input(model, tuple(int(v) for v in input_shape), resize, channels)
