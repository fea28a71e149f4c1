"""Convolution and pooling kernels, NumPy backend, and the backend switch.

Convolution is lowered to one matrix product per group (im2col): every KxK window of the
padded input becomes a column, so the layer is `W (F, C*K*K) @ cols (C*K*K, N*Ho*Wo)`.
Columns are laid out channel-major, `cols[(c, a, b), (n, r, s)] = xpad[n, c, r*S + a, s*S + b]`,
because then each of the K*K copies below moves long contiguous rows, and a group's rows
are one contiguous block. The matrix products run in BLAS through NumPy.

Pooling walks the K*K offsets of the window; each step is one vectorised operation over
the whole batch. Max pooling sends the gradient to the first maximum of each window in
row-major order, which is what PyTorch does (it matters after ReLU, where ties at 0 are common).

Elementwise work avoids np.where and masked writes (`copyto(where=)`, boolean indexing): on a
random sign pattern they branch per element and run 5-20x slower than the arithmetic used here.

A backend is a namespace with `conv_forward/backward`, `maxpool_forward/backward`,
`avgpool_forward/backward`; `cnnlab.scratch.backends.get_backend("numba")` returns the same
functions with the loops (im2col, col2im, pooling) compiled by Numba (numba_kernels.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def out_size(size: int, k: int, stride: int, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


# ----------------------------------------------------------------------------- im2col


def im2col(x, k, stride, pad):
    """(N, C, H, W) -> cols (C*K*K, N*Ho*Wo)."""
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    xp = np.pad(x.transpose(1, 0, 2, 3), ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # (C, N, Hp, Wp)
    cols = np.empty((c, k, k, n, ho, wo), dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            cols[:, a, b] = xp[:, :, a:a + stride * ho:stride, b:b + stride * wo:stride]
    return cols.reshape(c * k * k, n * ho * wo)


def col2im(dcols, x_shape, k, stride, pad):
    """The adjoint of im2col: add every column back onto the window it came from."""
    n, c, h, w = x_shape
    ho, wo = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    d = dcols.reshape(c, k, k, n, ho, wo)
    dxp = np.zeros((c, n, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for a in range(k):
        for b in range(k):
            dxp[:, :, a:a + stride * ho:stride, b:b + stride * wo:stride] += d[:, a, b]
    return dxp[:, :, pad:pad + h, pad:pad + w].transpose(1, 0, 2, 3)


# ----------------------------------------------------------------------- convolution


def make_conv(im2col, col2im):
    """Convolution forward/backward around a given im2col/col2im pair (NumPy or Numba)."""

    def conv_forward(x, w, b, stride=1, pad=0, groups=1):
        n, c, h, wd = x.shape
        f, cg, k, _ = w.shape
        ho, wo = out_size(h, k, stride, pad), out_size(wd, k, stride, pad)
        cols = im2col(x, k, stride, pad)
        w2 = w.reshape(f, cg * k * k)
        rows, fg = cg * k * k, f // groups
        out = np.empty((f, n * ho * wo), dtype=x.dtype)
        for g in range(groups):
            np.matmul(w2[g * fg:(g + 1) * fg], cols[g * rows:(g + 1) * rows], out=out[g * fg:(g + 1) * fg])
        out += b[:, None]
        out = np.ascontiguousarray(out.reshape(f, n, ho, wo).transpose(1, 0, 2, 3))
        return out, (x.shape, cols, w, stride, pad, groups)

    def conv_backward(dout, cache, need_dx=True):
        x_shape, cols, w, stride, pad, groups = cache
        f, cg, k, _ = w.shape
        rows, fg = cg * k * k, f // groups
        d2 = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(f, -1)  # (F, N*Ho*Wo)
        db = d2.sum(axis=1)
        w2 = w.reshape(f, rows)
        dw = np.empty_like(w2)
        dcols = np.empty_like(cols) if need_dx else None
        for g in range(groups):
            fs, rs = slice(g * fg, (g + 1) * fg), slice(g * rows, (g + 1) * rows)
            # dW^T = cols @ dout^T: BLAS runs this orientation (long inner dimension last) ~3x faster
            dw[fs] = (cols[rs] @ d2[fs].T).T
            if need_dx:
                np.matmul(w2[fs].T, d2[fs], out=dcols[rs])
        dx = col2im(dcols, x_shape, k, stride, pad) if need_dx else None
        return dx, dw.reshape(w.shape), db

    return conv_forward, conv_backward


# --------------------------------------------------------------------------- pooling


def _windows(x, k, stride):
    """Yield (offset index, view of x at that window offset) for the K*K offsets."""
    _, _, h, w = x.shape
    ho, wo = out_size(h, k, stride), out_size(w, k, stride)
    for a in range(k):
        for b in range(k):
            yield a * k + b, (slice(None), slice(None), slice(a, a + stride * ho, stride), slice(b, b + stride * wo, stride))


def maxpool_forward(x, k, stride):
    out, arg = None, None
    for i, view in _windows(x, k, stride):
        v = x[view]
        if out is None:
            out, arg = v.copy(), np.zeros(v.shape, dtype=np.int8 if k * k < 128 else np.int32)
        else:
            better = v > out  # strictly greater: ties keep the first maximum
            np.maximum(out, v, out=out)
            # arg = i where better, else unchanged, as arithmetic (masked writes branch per element)
            arg *= ~better
            arg += better * arg.dtype.type(i)
    return out, (x.shape, arg, k, stride)


def maxpool_backward(dout, cache):
    x_shape, arg, k, stride = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i, view in _windows(dx, k, stride):
        dx[view] += dout * (arg == i)  # a product, not np.where: np.where is many times slower here
    return dx


def avgpool_forward(x, k, stride):
    out = None
    for _, view in _windows(x, k, stride):
        out = x[view].copy() if out is None else out + x[view]
    return out / (k * k), (x.shape, k, stride)


def avgpool_backward(dout, cache):
    x_shape, k, stride = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    share = dout / (k * k)
    for _, view in _windows(dx, k, stride):
        dx[view] += share
    return dx


# --------------------------------------------------------------------------- backends

conv_forward, conv_backward = make_conv(im2col, col2im)

def backend() -> SimpleNamespace:
    """The NumPy backend (`cnnlab.scratch.backends.get_backend` chooses between backends)."""
    return SimpleNamespace(
        name="numpy", conv_forward=conv_forward, conv_backward=conv_backward,
        maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
        avgpool_forward=avgpool_forward, avgpool_backward=avgpool_backward,
    )
