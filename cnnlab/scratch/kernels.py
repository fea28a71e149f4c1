"""Convolution and pooling kernels, NumPy backend, and the backend switch.

Convolution is lowered to matrix products (im2col): every KxK window of the padded input
becomes a column, so for each image the layer is `W (F, C*K*K) @ cols[n] (C*K*K, Ho*Wo)`.
Columns are laid out image by image, `cols[n, (c, a, b), (r, s)] = xpad[n, c, r*S + a, s*S + b]`:
then the product for image n lands as out[n] in NCHW order (no transpose of the output or of
its gradient), a group's rows are one contiguous block, and each of the K*K copies below
moves long runs. One np.matmul over the batch runs a BLAS product per image; for the shallow
net's c32k7 layer that was 11.5 ms against 15.5 ms for one (F, C*K*K) @ (C*K*K, N*Ho*Wo)
product plus 4 ms of transposes (batch 128, 2 threads).

The column matrix is the largest array of a step (77 MB for c32k7 on a batch of 128). A fresh
array that size is new memory from the kernel every step, and first touching it cost ~10 ms
(16 ms against 6 ms for filling a reused one). So column matrices come from a `Workspace`:
the model hands a layer's columns back once its backward has run (`release`), and the next
forward reuses them.

Pooling walks the K*K offsets of the window; each step is one vectorised operation over
the whole batch. Max pooling sends the gradient to the first maximum of each window in
row-major order, which is what PyTorch does (it matters after ReLU, where ties at 0 are common).

Elementwise work avoids np.where and masked writes (`copyto(where=)`, boolean indexing): on a
random sign pattern they branch per element and run 5-20x slower than the arithmetic used here.

A backend is a namespace with `conv_forward/backward`, `conv_release`, `maxpool_forward/backward`,
`avgpool_forward/backward`; `cnnlab.scratch.backends.get_backend("numba")` returns the same
functions with the loops (im2col, col2im, pooling) compiled by Numba (numba_kernels.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def out_size(size: int, k: int, stride: int, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


# -------------------------------------------------------------------------- workspace


class Workspace:
    """Large arrays handed back after use, kept for the next request of the same shape and dtype.

    Only what is given back is reused: a layer's columns are given back by the model after its
    backward (`ScratchNet.loss`), never while a cache that holds them may still be used. At most
    `limit` arrays are kept; the oldest goes first."""

    def __init__(self, limit: int = 16):
        self.limit, self.free = limit, []

    def take(self, shape, dtype):
        shape, dtype = tuple(shape), np.dtype(dtype)
        for i in range(len(self.free) - 1, -1, -1):  # the most recently given first: its pages are warm
            a = self.free[i]
            if a.shape == shape and a.dtype == dtype:
                return self.free.pop(i)
        return np.empty(shape, dtype=dtype)  # NumPy allocates: it asks the kernel for huge pages

    def give(self, a):
        if a is not None and a.flags.c_contiguous and a.base is None:
            self.free.append(a)
            del self.free[:-self.limit]


WORKSPACE = Workspace()


# ----------------------------------------------------------------------------- im2col


def im2col(x, k, stride, pad):
    """(N, C, H, W) -> cols (N, C*K*K, Ho*Wo), from the workspace."""
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = WORKSPACE.take((n, c * k * k, ho * wo), x.dtype)
    view = cols.reshape(n, c, k, k, ho, wo)
    for a in range(k):
        for b in range(k):
            view[:, :, a, b] = xp[:, :, a:a + stride * ho:stride, b:b + stride * wo:stride]
    return cols


def col2im(dcols, x_shape, k, stride, pad):
    """The adjoint of im2col: add every column back onto the window it came from."""
    n, c, h, w = x_shape
    ho, wo = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    d = dcols.reshape(n, c, k, k, ho, wo)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for a in range(k):
        for b in range(k):
            dxp[:, :, a:a + stride * ho:stride, b:b + stride * wo:stride] += d[:, :, a, b]
    return dxp[:, :, pad:pad + h, pad:pad + w] if pad else dxp


# ----------------------------------------------------------------------- convolution


def make_conv(im2col, col2im, workspace=WORKSPACE):
    """Convolution forward/backward/release around a given im2col/col2im pair (NumPy or Numba).

    One np.matmul per call: the weights as (G, F/G, C/G*K*K) against the columns as
    (N, G, C/G*K*K, Ho*Wo), a BLAS product per image and group."""

    def conv_forward(x, w, b, stride=1, pad=0, groups=1):
        n, c, h, wd = x.shape
        f, cg, k, _ = w.shape
        ho, wo = out_size(h, k, stride, pad), out_size(wd, k, stride, pad)
        rows, fg, p = cg * k * k, f // groups, ho * wo
        cols = im2col(x, k, stride, pad)
        out = np.empty((n, f, p), dtype=x.dtype)
        np.matmul(w.reshape(groups, fg, rows), cols.reshape(n, groups, rows, p), out=out.reshape(n, groups, fg, p))
        out += b[:, None]
        return out.reshape(n, f, ho, wo), (x.shape, cols, w, stride, pad, groups)

    def conv_backward(dout, cache, need_dx=True):
        x_shape, cols, w, stride, pad, groups = cache
        f, cg, k, _ = w.shape
        n = x_shape[0]
        rows, fg = cg * k * k, f // groups
        d = np.ascontiguousarray(dout).reshape(n, groups, fg, -1)
        db = d.sum(axis=(0, 3)).reshape(f)
        c4 = cols.reshape(n, groups, rows, -1)
        # dW^T = cols @ dout^T per image, then summed: BLAS runs this orientation (the long
        # Ho*Wo dimension inner) faster than dout @ cols^T
        dw = np.matmul(c4, d.transpose(0, 1, 3, 2)).sum(axis=0).transpose(0, 2, 1).reshape(w.shape)
        dx = None
        if need_dx:
            dcols = workspace.take(cols.shape, cols.dtype)
            np.matmul(w.reshape(groups, fg, rows).transpose(0, 2, 1), d, out=dcols.reshape(c4.shape))
            dx = col2im(dcols, x_shape, k, stride, pad)
            workspace.give(dcols)
        return dx, dw, db

    def conv_release(cache):
        """Hand the columns back to the workspace: call only when nothing will use `cache` again."""
        workspace.give(cache[1])

    return conv_forward, conv_backward, conv_release


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

conv_forward, conv_backward, conv_release = make_conv(im2col, col2im)


def backend() -> SimpleNamespace:
    """The NumPy backend (`cnnlab.scratch.backends.get_backend` chooses between backends)."""
    return SimpleNamespace(
        name="numpy", conv_forward=conv_forward, conv_backward=conv_backward, conv_release=conv_release,
        maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
        avgpool_forward=avgpool_forward, avgpool_backward=avgpool_backward,
    )
