"""One fused CPU pass for the usual CIFAR pipeline: crop or translate, flip, normalise, cutout.

The torch operations in `cnnlab.data.augment` are the reference and run on any device in any
order. On the CPU, for the order crop -> flip -> (normalise) -> cutout, this kernel reads each
uint8 pixel once and writes each float once, in parallel over images. It draws its random
numbers from the same generator, in the same order, as the torch operations, so both give the
same batch (tested). Its threads are Numba's work queue (set in cnnlab/__init__.py), as many as
the trainer gives torch (`cnnlab.device.set_threads`).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange


@njit(parallel=True, cache=True)
def _kernel(x, out, mean, inv_std, pad, reflect, dy, dx, flip, cy, cx, size):
    n, c, h, w = x.shape
    for i in prange(n):
        for ch in range(c):
            m, s = mean[ch], inv_std[ch]
            zero = (np.float32(0.0) - m) * s  # a padded pixel: 0 before normalisation
            for r in range(h):
                sr = r + dy[i] - pad
                if reflect:  # mirror the border (translate)
                    sr = -sr if sr < 0 else (2 * (h - 1) - sr if sr >= h else sr)
                in_rows = 0 <= sr < h
                for col in range(w):
                    scol = (w - 1 - col) if flip[i] else col
                    sc = scol + dx[i] - pad
                    if reflect:
                        sc = -sc if sc < 0 else (2 * (w - 1) - sc if sc >= w else sc)
                    if in_rows and 0 <= sc < w:
                        v = (np.float32(x[i, ch, sr, sc]) - m) * s
                    else:
                        v = zero
                    if size > 0 and 0 <= r - cy[i] + size // 2 < size and 0 <= col - cx[i] + size // 2 < size:
                        v = np.float32(0.0)
                    out[i, ch, r, col] = v


def fusable(ops) -> bool:
    """True for ops in the order [crop|translate] [flip|altflip] [cutout], each at most once."""
    names = [name for name, _, _ in ops]
    rank = {"crop": 0, "translate": 0, "flip": 1, "altflip": 1, "cutout": 2}
    return bool(names) and all(n in rank for n in names) and \
        [rank[n] for n in names] == sorted({rank[n] for n in names})


def fused_batch(x_uint8: torch.Tensor, ops, gen, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    """Normalised, augmented float32 batch from a uint8 CPU batch; `mean`/`inv_std` in uint8 units."""
    n, c, h, w = x_uint8.shape
    args = {name: arg for name, _, arg in ops}
    pad = args.get("crop", args.get("translate", 0)) or 0
    zeros = torch.zeros(n, dtype=torch.int64)
    # The same draws, in the same order, as random_crop, flip and cutout.
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen) if "crop" in args or "translate" in args else zeros
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen) if "crop" in args or "translate" in args else zeros
    if "altflip" in args:  # the mask the loader computed from the image indices (no draw)
        fl = args["altflip"].cpu()
    else:
        fl = (torch.rand(n, generator=gen) < 0.5) if "flip" in args else torch.zeros(n, dtype=torch.bool)
    size = args.get("cutout", 0) or 0
    cy = torch.randint(0, h, (n,), generator=gen) if size else zeros
    cx = torch.randint(0, w, (n,), generator=gen) if size else zeros
    out = torch.empty(n, c, h, w, dtype=torch.float32)
    _kernel(x_uint8.numpy(), out.numpy(), mean.reshape(-1).numpy(), inv_std.reshape(-1).numpy(), pad, "translate" in args,
            dy.numpy(), dx.numpy(), fl.numpy(), cy.numpy(), cx.numpy(), size)
    return out
