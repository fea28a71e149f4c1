"""Augmentation on whole batches of normalised float images (N, C, H, W), on any device.

An augmentation string joins operations with `+`, each with an optional `:argument`:

    crop[:P]      random crop after zero (black) padding by P pixels (default 4)
    translate[:P] the same operation under its other common name
    flip          horizontal flip with probability 0.5
    cutout[:S]    zero one SxS square at a random centre per image (default 8; DeVries & Taylor, 2017)

Every operation draws its randomness from the generator it is given, so a batch's
augmentation is reproducible from (seed, epoch, batch) alone, which makes resumed runs exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError


def random_crop(x, gen, pad=4):
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    # Every crop window of the padded batch as a view (no copy), then one pick per image.
    windows = F.pad(x, (pad, pad, pad, pad)).unfold(2, h, 1).unfold(3, w, 1)  # (n, c, 2p+1, 2p+1, h, w)
    return windows[torch.arange(n, device=x.device), :, dy, dx]


def flip(x, gen):
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def cutout(x, gen, size=8):
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen).to(x.device)
    cx = torch.randint(0, w, (n,), generator=gen).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - cy[:, None] + size // 2  # in [0, size) inside the square
    xs = torch.arange(w, device=x.device)[None, :] - cx[:, None] + size // 2
    inside = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0)


OPS = {"crop": (random_crop, 4), "translate": (random_crop, 4), "flip": (flip, None), "cutout": (cutout, 8)}
# Operations that only move pixels run on the uint8 batch, before normalisation: a quarter of the
# memory traffic. Cutout runs after it, so its square is zero, the mean colour (as DeVries & Taylor).
PIXEL_OPS = {"crop", "translate", "flip"}


def parse_augment(text: str | None):
    """'crop:4+flip' -> [(name, fn, arg)]; 'none' or '' -> []."""
    if not text or text.strip().lower() == "none":
        return []
    ops = []
    for part in text.lower().replace(",", "+").split("+"):
        name, _, arg = part.strip().partition(":")
        if name not in OPS:
            raise CnnlabError(f"unknown augmentation '{name}': choose from {', '.join(OPS)} joined by '+', e.g. crop:4+flip")
        fn, default = OPS[name]
        if arg and default is None:
            raise CnnlabError(f"augmentation '{name}' takes no argument")
        try:
            value = int(arg) if arg else default
        except ValueError:
            raise CnnlabError(f"augmentation '{part}': the argument must be an integer number of pixels") from None
        ops.append((name, fn, value))
    return ops


def split_pixel_ops(ops):
    """The leading run of pixel-moving ops (safe on uint8), and the rest, in the user's order."""
    k = 0
    while k < len(ops) and ops[k][0] in PIXEL_OPS:
        k += 1
    return ops[:k], ops[k:]


def apply_augment(ops, x, gen):
    for _, fn, arg in ops:
        x = fn(x, gen) if arg is None else fn(x, gen, arg)
    return x
