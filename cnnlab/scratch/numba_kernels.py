"""The Numba backend: im2col, col2im and pooling as compiled, parallel loops.

The matrix products of convolution stay in BLAS (`cnnlab.scratch.kernels.make_conv`); what
Numba replaces is the data movement around them and the pooling loops, which NumPy runs as
K*K separate passes over the batch. Each loop nest here makes one pass, in parallel over
images (im2col, col2im: an image's pixels are written by one thread only, so there are no
races) or (image, channel) planes (pooling). Large outputs are allocated by NumPy (the column
matrices by the workspace in cnnlab.scratch.kernels) and filled by Numba.

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

from cnnlab.scratch.kernels import WORKSPACE, make_conv, out_size

_jit = dict(parallel=True, cache=True, fastmath=False, nogil=True, boundscheck=False)


@njit(**_jit)
def _im2col(xp, k, stride, ho, wo, cols):
    """cols[i, (c, a, b), (r, s)] = xp[i, c, r*stride + a, s*stride + b], for an already padded xp.

    Padding first makes every column run a plain copy of one input row, with no edge cases."""
    n, c = xp.shape[0], xp.shape[1]
    for i in prange(n):
        for row in range(c * k * k):
            ch, a, b = row // (k * k), (row // k) % k, row % k
            for r in range(ho):
                cols[i, row, r * wo:(r + 1) * wo] = xp[i, ch, r * stride + a, b:b + stride * (wo - 1) + 1:stride]


@njit(**_jit)
def _col2im(dcols, n, c, h, w, k, stride, pad, ho, wo):
    dx = np.zeros((n, c, h, w), dtype=dcols.dtype)
    for i in prange(n):  # an image's pixels are written by one thread only: no races
        for ch in range(c):
            for a in range(k):
                for b in range(k):
                    row = (ch * k + a) * k + b
                    s_lo = max(0, (pad - b + stride - 1) // stride)
                    s_hi = min(wo, (w - 1 + pad - b) // stride + 1)
                    for r in range(ho):
                        y = r * stride + a - pad
                        if 0 <= y < h:
                            base = r * wo
                            for s in range(s_lo, s_hi):
                                dx[i, ch, y, s * stride + b - pad] += dcols[i, row, base + s]
    return dx


def _pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else np.ascontiguousarray(x)


def im2col(x, k, stride, pad):
    """(N, C, H, W) -> cols (N, C*K*K, Ho*Wo), the layout of `cnnlab.scratch.kernels.im2col`."""
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    cols = WORKSPACE.take((n, c * k * k, ho * wo), x.dtype)
    _im2col(_pad(x, pad), k, stride, ho, wo, cols)
    return cols


def col2im(dcols, x_shape, k, stride, pad):
    n, c, h, w = x_shape
    return _col2im(dcols, n, c, h, w, k, stride, pad, out_size(h, k, stride, pad), out_size(w, k, stride, pad))


@njit(**_jit)
def _maxpool_forward(x, k, stride, ho, wo, out, arg):
    """out = the window maxima; arg = where each maximum sits in its window (a*k + b)."""
    n, c = x.shape[0], x.shape[1]
    for p in prange(n * c):
        i, ch = p // c, p % c
        for r in range(ho):
            for s in range(wo):
                best, where = x[i, ch, r * stride, s * stride], 0
                for a in range(k):
                    for b in range(k):
                        v = x[i, ch, r * stride + a, s * stride + b]
                        if v > best:  # strictly greater: ties keep the first maximum
                            best, where = v, a * k + b
                out[i, ch, r, s] = best
                arg[i, ch, r, s] = where


@njit(**_jit)
def _maxpool_backward(dout, arg, k, stride, h, w):
    n, c, ho, wo = dout.shape
    tiled = k == stride  # windows tile the plane: every dx pixel is written once, no zeroing pass
    dx = np.empty((n, c, h, w), dtype=dout.dtype) if tiled else np.zeros((n, c, h, w), dtype=dout.dtype)
    zero = dout.dtype.type(0)
    for p in prange(n * c):
        i, ch = p // c, p % c
        if tiled:
            for y in range(ho * k, h):  # rows and columns no window covers
                dx[i, ch, y, :] = zero
            for y in range(ho * k):
                dx[i, ch, y, wo * k:] = zero
        for r in range(ho):
            for s in range(wo):
                j, g = arg[i, ch, r, s], dout[i, ch, r, s]
                if tiled:
                    for a in range(k):
                        for b in range(k):
                            dx[i, ch, r * k + a, s * k + b] = g if a * k + b == j else zero
                else:
                    dx[i, ch, r * stride + j // k, s * stride + j % k] += g
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
    ho, wo = out_size(h, k, stride), out_size(w, k, stride)
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    arg = np.empty((n, c, ho, wo), dtype=np.int8 if k * k <= 127 else np.int32)  # a 2x2 window: 1 byte, not 4
    _maxpool_forward(np.ascontiguousarray(x), k, stride, ho, wo, out, arg)
    return out, (x.shape, arg, k, stride)


def maxpool_backward(dout, cache):
    (n, c, h, w), arg, k, stride = cache
    return _maxpool_backward(np.ascontiguousarray(dout), arg, k, stride, h, w)


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
    conv_forward, conv_backward, conv_release = make_conv(im2col, col2im)
    return SimpleNamespace(
        name="numba", conv_forward=conv_forward, conv_backward=conv_backward, conv_release=conv_release,
        maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
        avgpool_forward=avgpool_forward, avgpool_backward=avgpool_backward,
    )
