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

import os
from types import SimpleNamespace

import numba
import numpy as np
from numba import njit, prange

# Numba's own work-queue thread pool rather than OpenMP: on a machine shared with other work,
# the OpenMP layer made a 4M-element parallel loop 4x slower than a serial one (its threads
# wait for a descheduled sibling), the work queue did not. It has one limit: parallel kernels
# must not be launched from two Python threads at once. NUMBA_THREADING_LAYER overrides it.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from cnnlab.scratch.kernels import out_size

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


# ----------------------------------------------------------------------- convolution
#
# The same im2col + BLAS convolution as the NumPy backend, but over chunks of a few images:
# a chunk's columns (C*K*K, m*Ho*Wo) stay in cache between im2col writing them and the matrix
# product reading them, where the whole batch's columns (77 MB for a 7x7 layer on 128 CIFAR
# images) would go to memory and back. Backward recomputes a chunk's columns from the input
# (cheaper than storing and re-reading them), so the cache holds the input, not the columns.

KEEP_COLUMNS = False
CHUNK_ELEMENTS = 1 << 21  # about this many column entries per chunk (8 MB in float32)


@njit(**_jit)
def _rows_to_nchw(rows, b, out, i0):
    """out[i0 + i, f, p] = rows[f, i * P + p] + b[f]: a product's (F, m*P) result, bias added, into NCHW."""
    f, cols = rows.shape
    p = out.shape[2]
    m = cols // p
    for t in prange(m * f):
        i, ch = t // f, t % f
        for j in range(p):
            out[i0 + i, ch, j] = rows[ch, i * p + j] + b[ch]


@njit(**_jit)
def _nchw_to_rows(dout, i0, rows):
    """rows[f, i * P + p] = dout[i0 + i, f, p]: the inverse layout change, for the backward products."""
    f, cols = rows.shape
    p = dout.shape[2]
    m = cols // p
    for t in prange(m * f):
        i, ch = t // f, t % f
        for j in range(p):
            rows[ch, i * p + j] = dout[i0 + i, ch, j]


def _chunks(n, rows, pq):
    m = max(1, min(n, CHUNK_ELEMENTS // max(1, rows * pq)))
    return [(i, min(n, i + m)) for i in range(0, n, m)]


def conv_forward(x, w, b, stride=1, pad=0, groups=1):
    n, c, h, wd = x.shape
    f, cg, k, _ = w.shape
    ho, wo = out_size(h, k, stride, pad), out_size(wd, k, stride, pad)
    rows, fg, pq = cg * k * k, f // groups, ho * wo
    w2 = w.reshape(f, rows)
    out = np.empty((n, f, pq), dtype=x.dtype)
    xp = _pad(x, pad)
    chunks = _chunks(n, c * k * k, pq)
    if KEEP_COLUMNS:
        cols_buf = np.empty(c * k * k * n * pq, dtype=x.dtype)
    else:
        cols_buf = np.empty(c * k * k * (chunks[0][1] - chunks[0][0]) * pq, dtype=x.dtype)
    prod_buf = np.empty(f * (chunks[0][1] - chunks[0][0]) * pq, dtype=x.dtype)
    for i0, i1 in chunks:
        m = i1 - i0
        at = c * k * k * i0 * pq if KEEP_COLUMNS else 0
        cols = cols_buf[at:at + c * k * k * m * pq].reshape(c * k * k, m * pq)
        prod = prod_buf[:f * m * pq].reshape(f, m * pq)
        _im2col(xp[i0:i1], k, stride, ho, wo, cols)
        for g in range(groups):
            np.matmul(w2[g * fg:(g + 1) * fg], cols[g * rows:(g + 1) * rows], out=prod[g * fg:(g + 1) * fg])
        _rows_to_nchw(prod, b, out, i0)
    return out.reshape(n, f, ho, wo), (xp, x.shape, w, stride, pad, groups, cols_buf if KEEP_COLUMNS else None)


def conv_backward(dout, cache, need_dx=True):
    xp, (n, c, h, wd), w, stride, pad, groups, kept = cache
    f, cg, k, _ = w.shape
    ho, wo = dout.shape[2:]
    rows, fg, pq = cg * k * k, f // groups, ho * wo
    w2 = w.reshape(f, rows)
    dout3 = np.ascontiguousarray(dout).reshape(n, f, pq)
    dwt = np.zeros((rows, f), dtype=w.dtype)  # dW^T, accumulated chunk by chunk
    db = np.zeros(f, dtype=dout.dtype)
    dx = np.empty((n, c, h, wd), dtype=xp.dtype) if need_dx else None
    chunks = _chunks(n, c * k * k, pq)
    cols_buf = np.empty(c * k * k * (chunks[0][1] - chunks[0][0]) * pq, dtype=xp.dtype)
    d2_buf = np.empty(f * (chunks[0][1] - chunks[0][0]) * pq, dtype=xp.dtype)
    for i0, i1 in chunks:
        m = i1 - i0
        d2 = d2_buf[:f * m * pq].reshape(f, m * pq)
        if kept is not None:
            at = c * k * k * i0 * pq
            cols = kept[at:at + c * k * k * m * pq].reshape(c * k * k, m * pq)
        else:
            cols = cols_buf[:c * k * k * m * pq].reshape(c * k * k, m * pq)
            _im2col(xp[i0:i1], k, stride, ho, wo, cols)
        _nchw_to_rows(dout3, i0, d2)
        db += d2.sum(axis=1)
        dcols = np.empty_like(cols) if need_dx else None
        for g in range(groups):
            fs, rs = slice(g * fg, (g + 1) * fg), slice(g * rows, (g + 1) * rows)
            dwt[:, fs] += cols[rs] @ d2[fs].T  # the orientation BLAS runs fastest, as in make_conv
            if need_dx:
                np.matmul(w2[fs].T, d2[fs], out=dcols[rs])
        if need_dx:
            dx[i0:i1] = col2im(dcols, (m, c, h, wd), k, stride, pad)
    return dx, np.ascontiguousarray(dwt.T).reshape(w.shape), db


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
    return SimpleNamespace(
        name="numba", conv_forward=conv_forward, conv_backward=conv_backward,
        maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
        avgpool_forward=avgpool_forward, avgpool_backward=avgpool_backward,
    )
