"""Augmentation on whole batches of normalised float images (N, C, H, W), on any device.

An augmentation string joins operations with `+`, each with an optional `:argument`:

    crop[:P]      random crop after zero (black) padding by P pixels (default 4)
    translate[:P] random shift by up to P pixels (default 2), the border mirrored (reflect padding)
    flip          horizontal flip with probability 0.5
    altflip       alternating flip: each image is flipped or not at random in even epochs, and
                  the other way in odd ones, so every pair of epochs sees both (Jordan, 2024)
    cutout[:S]    zero one SxS square at a random centre per image (default 8; DeVries & Taylor, 2017)

Every operation draws its randomness from the generator it is given, so a batch's
augmentation is reproducible from (seed, epoch, batch) alone, which makes resumed runs exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError


def reflect_index(size: int, pad: int, device=None) -> torch.Tensor:
    """Source positions of a row or column padded by `pad` on each side with its mirror image
    (without repeating the edge, as numpy's and torch's "reflect")."""
    i = torch.arange(-pad, size + pad, device=device).abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def random_crop(x, gen, pad=4, reflect=False):
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    if reflect:  # by indexing, which works on uint8 too
        if pad >= min(h, w):
            raise CnnlabError(f"translate:{pad} shifts {h}x{w} images too far: use at most {min(h, w) - 1} pixels")
        padded = x[:, :, reflect_index(h, pad, x.device)][:, :, :, reflect_index(w, pad, x.device)]
    else:
        padded = F.pad(x, (pad, pad, pad, pad))
    # Every crop window of the padded batch as a view (no copy), then one pick per image.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, c, 2p+1, 2p+1, h, w)
    return windows[torch.arange(n, device=x.device), :, dy, dx]


def translate(x, gen, pad=2):
    return random_crop(x, gen, pad, reflect=True)


def flip(x, gen):
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def alternating_flip(x, gen, mask):
    """Flip the images where `mask` (bool, one per image) is set; the loader computes the mask from
    the images' indices and the epoch (cnnlab.data.loader.BatchLoader.altflip_mask)."""
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def cutout(x, gen, size=8):
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen).to(x.device)
    cx = torch.randint(0, w, (n,), generator=gen).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - cy[:, None] + size // 2  # in [0, size) inside the square
    xs = torch.arange(w, device=x.device)[None, :] - cx[:, None] + size // 2
    inside = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0)


OPS = {"crop": (random_crop, 4), "translate": (translate, 2), "flip": (flip, None), "altflip": (alternating_flip, None),
       "cutout": (cutout, 8)}
# Operations that only move pixels run on the uint8 batch, before normalisation: a quarter of the
# memory traffic. Cutout runs after it, so its square is zero, the mean colour (as DeVries & Taylor).
PIXEL_OPS = {"crop", "translate", "flip", "altflip"}


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
