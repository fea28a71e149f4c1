"""The Numba backend: im2col, col2im and pooling as compiled, parallel loops.

The matrix products of convolution stay in BLAS (`cnnlab.scratch.kernels.make_conv`); what
Numba replaces is the data movement around them and the pooling loops, which NumPy runs as
K*K separate passes over the batch. Each loop nest here makes one pass, in parallel over
rows of `cols` (im2col), channels (col2im: a channel's pixels are written by one thread only,
so there are no races) or (image, channel) planes (pooling). Large outputs are allocated by
NumPy and filled by Numba: NumPy asks the kernel for huge pages on large arrays, which makes
first touching a fresh 77 MB column matrix markedly cheaper.

Kernels compile once per dtype and are cached on disk (`cache=True`), so only the first
run on a machine pays the compile time. `fastmath=False` keeps results bit-comparable with
the NumPy backend's order of operations where that order is the same.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import njit, prange

# These kernels, like the fused loader's, run on Numba's own work-queue thread pool rather than
# OpenMP (set for all of cnnlab in cnnlab/__init__.py): on a machine shared with other work, the
# OpenMP layer made a 4M-element parallel loop 4x slower than a serial one (its threads wait for a
# descheduled sibling), the work queue did not. It has one limit: parallel kernels must not be
# launched from two Python threads at once. NUMBA_THREADING_LAYER overrides it.

from cnnlab.scratch.kernels import make_conv, out_size

_jit = dict(parallel=True, cache=True, fastmath=False, nogil=True, boundscheck=False)


@njit(**_jit)
def _im2col(xp, k, stride, ho, wo, cols):
    """cols[(c, a, b), (i, r, s)] = xp[i, c, r*stride + a, s*stride + b], for an already padded xp.

    Padding first makes every column run a plain copy of one input row, with no edge cases."""
    n, c = xp.shape[0], xp.shape[1]
    for row in prange(c * k * k):
        ch, a, b = row // (k * k), (row // k) % k, row % k
        for i in range(n):
            for r in range(ho):
                start = (i * ho + r) * wo
                cols[row, start:start + wo] = xp[i, ch, r * stride + a, b:b + stride * (wo - 1) + 1:stride]


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


def _pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else np.ascontiguousarray(x)


def im2col(x, k, stride, pad):
    """(N, C, H, W) -> cols (C*K*K, N*Ho*Wo), the layout of `cnnlab.scratch.kernels.im2col`."""
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    cols = np.empty((c * k * k, n * ho * wo), dtype=x.dtype)  # NumPy allocates: it asks for huge pages
    _im2col(_pad(x, pad), k, stride, ho, wo, cols)
    return cols


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
    # Convolution is the NumPy backend's (one big BLAS product per group) around these im2col
    # and col2im. Working through the batch in cache-sized chunks was tried and dropped: it saves
    # memory traffic, but each chunk hands the cores back and forth between BLAS's threads and
    # Numba's, and on a shared machine every hand-over can wait a scheduler tick (4 ms).
    conv_forward, conv_backward = make_conv(im2col, col2im)
    return SimpleNamespace(
        name="numba", conv_forward=conv_forward, conv_backward=conv_backward,
        maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
        avgpool_forward=avgpool_forward, avgpool_backward=avgpool_backward,
    )
