"""The first convolution layer's filters as pictures: what `cnnlab plot` and TensorBoard show.

    found = first_conv(model)              # (name, nn.Conv2d) or None for a model without one
    tiles = filter_tiles(found[1].weight)  # (N, kH, kW, 1 or 3) floats in [0, 1]
    image = filter_mosaic(tiles)           # one (H, W, 3) uint8 picture of them all, for TensorBoard

Each filter is scaled to [0, 1] by its own minimum and maximum over all its input channels, so
black (or the darkest colour) is its most negative weight and white its most positive. A filter
over three input channels is shown in colour (channel order R, G, B, as the images are); over
one channel in grey; over any other number of channels, as the mean over them, in grey.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn


def first_conv(model: nn.Module):
    """(qualified name, module) of the first 2-D convolution in the model's module order, or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def filter_tiles(weight) -> np.ndarray:
    """(N, kH, kW, C') floats in [0, 1] from an (N, C, kH, kW) weight; C' is 3 for C == 3, else 1."""
    w = weight.detach().float().cpu().numpy() if hasattr(weight, "detach") else np.asarray(weight, np.float32)
    if w.ndim != 4:
        raise ValueError(f"a convolution weight is (N, C, kH, kW), got shape {w.shape}")
    if w.shape[1] != 3:
        w = w.mean(axis=1, keepdims=True)
    w = w.transpose(0, 2, 3, 1).astype(np.float64)  # (N, kH, kW, C)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    high = w.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return ((w - low) / span).astype(np.float32)


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    """(rows, cols) for n tiles: up to `max_cols` (or the square root, when that is wider) per row."""
    cols = max(1, min(n, max(max_cols, math.ceil(math.sqrt(n)))))
    return math.ceil(n / cols), cols


def filter_mosaic(tiles: np.ndarray, scale: int = 8, pad: int = 2, background: int = 64) -> np.ndarray:
    """All tiles in one (H, W, 3) uint8 image: each tile enlarged `scale` times (nearest neighbour),
    `pad` pixels of `background` grey between them."""
    n, kh, kw, c = tiles.shape
    rows, cols = grid_shape(n)
    th, tw = kh * scale, kw * scale
    out = np.full((rows * th + (rows + 1) * pad, cols * tw + (cols + 1) * pad, 3), background, np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        tile = np.repeat(np.repeat(tiles[i], scale, axis=0), scale, axis=1)
        if c == 1:
            tile = np.repeat(tile, 3, axis=2)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        out[y:y + th, x:x + tw] = np.round(tile * 255).astype(np.uint8)
    return out
