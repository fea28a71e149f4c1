"""Reference loops: the definition of convolution and pooling, one multiply-add at a time.

These are far too slow to train with; they exist as ground truth. The NumPy (im2col) and
Numba kernels are tested against them on small shapes. Layout is NCHW, weights are
(F, C // groups, K, K) as in PyTorch; padding is zeros on all four sides.
"""

from __future__ import annotations

import numpy as np


def out_size(size: int, k: int, stride: int, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


def conv_forward(x, w, b, stride=1, pad=0, groups=1):
    n, c, h, wd = x.shape
    f, cg, k, _ = w.shape
    fg = f // groups
    ho, wo = out_size(h, k, stride, pad), out_size(wd, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, f, ho, wo), dtype=x.dtype)
    for i in range(n):
        for o in range(f):
            g = o // fg
            for r in range(ho):
                for s in range(wo):
                    patch = xp[i, g * cg:(g + 1) * cg, r * stride:r * stride + k, s * stride:s * stride + k]
                    out[i, o, r, s] = np.sum(patch * w[o]) + b[o]
    return out


def conv_backward(dout, x, w, stride=1, pad=0, groups=1):
    """Gradients of sum(out * dout) with respect to x, w and b."""
    n, c, h, wd = x.shape
    f, cg, k, _ = w.shape
    fg = f // groups
    _, _, ho, wo = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(n):
        for o in range(f):
            g = o // fg
            for r in range(ho):
                for s in range(wo):
                    rows, cols = slice(r * stride, r * stride + k), slice(s * stride, s * stride + k)
                    chans = slice(g * cg, (g + 1) * cg)
                    dw[o] += dout[i, o, r, s] * xp[i, chans, rows, cols]
                    dxp[i, chans, rows, cols] += dout[i, o, r, s] * w[o]
    db = dout.sum(axis=(0, 2, 3))
    return dxp[:, :, pad:pad + h, pad:pad + wd], dw, db


def maxpool_forward(x, k, stride):
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, stride), out_size(w, k, stride)
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    for i in range(n):
        for ch in range(c):
            for r in range(ho):
                for s in range(wo):
                    out[i, ch, r, s] = x[i, ch, r * stride:r * stride + k, s * stride:s * stride + k].max()
    return out


def maxpool_backward(dout, x, k, stride):
    """Each output's gradient goes to the first maximum of its window (row-major), as in PyTorch."""
    n, c, ho, wo = dout.shape
    dx = np.zeros_like(x)
    for i in range(n):
        for ch in range(c):
            for r in range(ho):
                for s in range(wo):
                    window = x[i, ch, r * stride:r * stride + k, s * stride:s * stride + k]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    dx[i, ch, r * stride + a, s * stride + b] += dout[i, ch, r, s]
    return dx


def avgpool_forward(x, k, stride):
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, stride), out_size(w, k, stride)
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    for r in range(ho):
        for s in range(wo):
            out[:, :, r, s] = x[:, :, r * stride:r * stride + k, s * stride:s * stride + k].mean(axis=(2, 3))
    return out


def avgpool_backward(dout, x, k, stride):
    dx = np.zeros_like(x)
    _, _, ho, wo = dout.shape
    for r in range(ho):
        for s in range(wo):
            dx[:, :, r * stride:r * stride + k, s * stride:s * stride + k] += dout[:, :, r, s, None, None] / (k * k)
    return dx
