"""The Numba backend: im2col, col2im and pooling as compiled, parallel loops.

The matrix products of convolution stay in BLAS (`cnnlab.scratch.kernels.make_conv`); what
Numba replaces is the data movement around them and the pooling loops, which NumPy runs as
K*K separate passes over the batch. Each loop nest here makes one pass, in parallel over
rows of `cols` (im2col), channels (col2im: a channel's pixels are written by one thread only,
so there are no races) or (image, channel) planes (pooling).

Kernels compile once per dtype and are cached on disk (`cache=True`), so only the first
run on a machine pays the compile time. `fastmath=False` keeps results bit-comparable with
the NumPy backend's order of operations where that order is the same.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import njit, prange

from cnnlab.scratch.kernels import make_conv, out_size

_jit = dict(parallel=True, cache=True, fastmath=False, nogil=True, boundscheck=False)


@njit(**_jit)
def _im2col(x, k, stride, pad, ho, wo):
    n, c, h, w = x.shape
    cols = np.empty((c * k * k, n * ho * wo), dtype=x.dtype)  # every entry is written below
    for row in prange(c * k * k):
        ch, a, b = row // (k * k), (row // k) % k, row % k
        # output columns s whose input column s*stride + b - pad lies inside the image
        s_lo = max(0, (pad - b + stride - 1) // stride)
        s_hi = max(s_lo, min(wo, (w - 1 + pad - b) // stride + 1))
        for i in range(n):
            for r in range(ho):
                y = r * stride + a - pad
                base = (i * ho + r) * wo
                if 0 <= y < h:
                    cols[row, base:base + s_lo] = 0
                    for s in range(s_lo, s_hi):
                        cols[row, base + s] = x[i, ch, y, s * stride + b - pad]
                    cols[row, base + s_hi:base + wo] = 0
                else:
                    cols[row, base:base + wo] = 0
    return cols


@njit(**_jit)
def _col2im(dcols, n, c, h, w, k, stride, pad, ho, wo):
    dx = np.zeros((n, c, h, w), dtype=dcols.dtype)
    for ch in prange(c):
        for a in range(k):
            for b in range(k):
                row = (ch * k + a) * k + b
                s_lo = max(0, (pad - b + stride - 1) // stride)
                s_hi = min(wo, (w - 1 + pad - b) // stride + 1)
                for i in range(n):
                    for r in range(ho):
                        y = r * stride + a - pad
                        if 0 <= y < h:
                            base = (i * ho + r) * wo
                            for s in range(s_lo, s_hi):
                                dx[i, ch, y, s * stride + b - pad] += dcols[row, base + s]
    return dx


def im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    return _im2col(np.ascontiguousarray(x), k, stride, pad, out_size(h, k, stride, pad), out_size(w, k, stride, pad))


def col2im(dcols, x_shape, k, stride, pad):
    n, c, h, w = x_shape
    return _col2im(dcols, n, c, h, w, k, stride, pad, out_size(h, k, stride, pad), out_size(w, k, stride, pad))


@njit(**_jit)
def _maxpool_forward(x, k, stride, ho, wo):
    n, c, h, w = x.shape
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    arg = np.empty((n, c, ho, wo), dtype=np.int32)  # flat index of the maximum within the plane
    for p in prange(n * c):
        i, ch = p // c, p % c
        for r in range(ho):
            for s in range(wo):
                best, where = x[i, ch, r * stride, s * stride], (r * stride) * w + s * stride
                for a in range(k):
                    for b in range(k):
                        v = x[i, ch, r * stride + a, s * stride + b]
                        if v > best:  # strictly greater: ties keep the first maximum
                            best, where = v, (r * stride + a) * w + s * stride + b
                out[i, ch, r, s] = best
                arg[i, ch, r, s] = where
    return out, arg


@njit(**_jit)
def _maxpool_backward(dout, arg, h, w):
    n, c, ho, wo = dout.shape
    dx = np.zeros((n, c, h, w), dtype=dout.dtype)
    for p in prange(n * c):
        i, ch = p // c, p % c
        for r in range(ho):
            for s in range(wo):
                j = arg[i, ch, r, s]
                dx[i, ch, j // w, j % w] += dout[i, ch, r, s]
    return dx


@njit(**_jit)
def _avgpool_forward(x, k, stride, ho, wo):
    n, c, h, w = x.shape
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    for p in prange(n * c):
        i, ch = p // c, p % c
        for r in range(ho):
            for s in range(wo):
                acc = x[i, ch, r * stride, s * stride] * 0
                for a in range(k):
                    for b in range(k):
                        acc += x[i, ch, r * stride + a, s * stride + b]
                out[i, ch, r, s] = acc / (k * k)
    return out


@njit(**_jit)
def _avgpool_backward(dout, k, stride, h, w):
    n, c, ho, wo = dout.shape
    dx = np.zeros((n, c, h, w), dtype=dout.dtype)
    for p in prange(n * c):
        i, ch = p // c, p % c
        for r in range(ho):
            for s in range(wo):
                share = dout[i, ch, r, s] / (k * k)
                for a in range(k):
                    for b in range(k):
                        dx[i, ch, r * stride + a, s * stride + b] += share
    return dx


def maxpool_forward(x, k, stride):
    n, c, h, w = x.shape
    out, arg = _maxpool_forward(np.ascontiguousarray(x), k, stride, out_size(h, k, stride), out_size(w, k, stride))
    return out, (x.shape, arg)


def maxpool_backward(dout, cache):
    (n, c, h, w), arg = cache
    return _maxpool_backward(np.ascontiguousarray(dout), arg, h, w)


def avgpool_forward(x, k, stride):
    n, c, h, w = x.shape
    return _avgpool_forward(np.ascontiguousarray(x), k, stride, out_size(h, k, stride), out_size(w, k, stride)), (x.shape, k, stride)


def avgpool_backward(dout, cache):
    (n, c, h, w), k, stride = cache
    return _avgpool_backward(np.ascontiguousarray(dout), k, stride, h, w)


def backend() -> SimpleNamespace:
    conv_forward, conv_backward = make_conv(im2col, col2im)
    return SimpleNamespace(
        name="numba", conv_forward=conv_forward, conv_backward=conv_backward,
        maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
        avgpool_forward=avgpool_forward, avgpool_backward=avgpool_backward,
    )
