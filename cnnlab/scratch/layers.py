"""Layers, cs231n style: `forward(x, train) -> (out, cache)`, `backward(dout, cache) -> (dx, grads)`.

A layer owns its parameters in `params` (names as in the PyTorch module: `weight`, `bias`)
and BatchNorm its running statistics in `buffers`. `backward` returns the gradient with
respect to the input and a dict of parameter gradients with the same names as `params`.
Everything is NCHW (images) or NF (features), in the dtype of the input.

The formulas match PyTorch's modules exactly, down to the conventions that are a choice:
the gradient of ReLU at 0 is 0, BatchNorm normalises with the biased batch variance but
tracks the unbiased one, max pooling sends the gradient to the first maximum of a window.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.scratch.backends import get_backend


class Layer:
    params: dict
    buffers: dict

    def __init__(self, name: str = ""):
        self.name = name or type(self).__name__
        self.params, self.buffers = {}, {}

    def forward(self, x, train=False):
        raise NotImplementedError

    def backward(self, dout, cache):
        raise NotImplementedError

    def release(self, cache):
        """Say that `cache` will not be used again, so its large arrays can be reused (a no-op
        for most layers; a convolution hands its column matrix back to the workspace)."""

    def state_items(self) -> dict:
        """Parameters and buffers by name, in the order of the PyTorch module's state_dict."""
        return {**self.params, **self.buffers}

    def _expect(self, x, ndim, channels=None, what="channels"):
        if x.ndim != ndim or (channels is not None and x.shape[1] != channels):
            want = f"{ndim}-D input" + (f" with {channels} {what}" if channels is not None else "")
            raise CnnlabError(f"layer '{self.name}' expects a {want} (batch first), got shape {tuple(x.shape)}")

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


def _uniform(rng, shape, fan_in, dtype):
    # PyTorch's default init for conv and linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d(Layer):
    def __init__(self, in_channels, out_channels, k, stride=1, pad=0, groups=1, rng=None, dtype=np.float32,
                 backend="numpy", name=""):
        super().__init__(name or f"c{out_channels}k{k}")
        if in_channels % groups or out_channels % groups:
            raise CnnlabError(f"layer '{self.name}': {in_channels} in and {out_channels} out channels must both divide into {groups} groups")
        rng = rng or np.random.default_rng(0)
        fan_in = in_channels // groups * k * k
        self.params["weight"] = _uniform(rng, (out_channels, in_channels // groups, k, k), fan_in, dtype)
        self.params["bias"] = _uniform(rng, (out_channels,), fan_in, dtype)
        self.in_channels, self.k, self.stride, self.pad, self.groups = in_channels, k, stride, pad, groups
        self.kernels = get_backend(backend)
        self.need_dx = True  # the model turns this off for a first layer: nobody needs d(loss)/d(image)

    def forward(self, x, train=False):
        self._expect(x, 4, self.in_channels)
        h, w = x.shape[2:]
        if h + 2 * self.pad < self.k or w + 2 * self.pad < self.k:
            raise CnnlabError(f"layer '{self.name}': a {self.k}x{self.k} kernel does not fit a {h}x{w} input (padding {self.pad})")
        p = self.params
        return self.kernels.conv_forward(x, p["weight"], p["bias"], self.stride, self.pad, self.groups)

    def backward(self, dout, cache):
        dx, dw, db = self.kernels.conv_backward(dout, cache, self.need_dx)
        return dx, {"weight": dw, "bias": db}

    def release(self, cache):
        self.kernels.conv_release(cache)


class _Pool(Layer):
    def __init__(self, k, stride=None, backend="numpy", name=""):
        super().__init__(name)
        self.k, self.stride = k, stride or k
        self.kernels = get_backend(backend)

    def _check(self, x):
        self._expect(x, 4)
        if min(x.shape[2:]) < self.k:
            raise CnnlabError(f"layer '{self.name}': a {self.k}x{self.k} window does not fit a {x.shape[2]}x{x.shape[3]} input")


class MaxPool2d(_Pool):
    def forward(self, x, train=False):
        self._check(x)
        return self.kernels.maxpool_forward(x, self.k, self.stride)

    def backward(self, dout, cache):
        return self.kernels.maxpool_backward(dout, cache), {}


class AvgPool2d(_Pool):
    def forward(self, x, train=False):
        self._check(x)
        return self.kernels.avgpool_forward(x, self.k, self.stride)

    def backward(self, dout, cache):
        return self.kernels.avgpool_backward(dout, cache), {}


class GlobalAvgPool(Layer):
    """Mean over each channel's H x W plane, kept as (N, C, 1, 1) like nn.AdaptiveAvgPool2d(1)."""

    def forward(self, x, train=False):
        self._expect(x, 4)
        return x.mean(axis=(2, 3), keepdims=True), x.shape

    def backward(self, dout, shape):
        return np.broadcast_to(dout / (shape[2] * shape[3]), shape).copy(), {}


class Linear(Layer):
    def __init__(self, in_features, out_features, rng=None, dtype=np.float32, name=""):
        super().__init__(name or f"fc{out_features}")
        rng = rng or np.random.default_rng(0)
        self.params["weight"] = _uniform(rng, (out_features, in_features), in_features, dtype)
        self.params["bias"] = _uniform(rng, (out_features,), in_features, dtype)
        self.in_features = in_features

    def forward(self, x, train=False):
        self._expect(x, 2, self.in_features, "features")
        return x @ self.params["weight"].T + self.params["bias"], x

    def backward(self, dout, x):
        # dW^T = x^T @ dout: OpenBLAS runs this orientation ~2x faster than dout^T @ x
        return dout @ self.params["weight"], {"weight": (x.T @ dout).T, "bias": dout.sum(axis=0)}


class Flatten(Layer):
    def forward(self, x, train=False):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dout, shape):
        return dout.reshape(shape), {}


class ReLU(Layer):
    # Branch-free passes over memory: np.where and masked copies branch on every element of a
    # random sign pattern and run 5-20x slower on a 4M-element activation.
    def forward(self, x, train=False):
        return np.maximum(x, x.dtype.type(0)), x > 0

    def backward(self, dout, mask):
        return dout * mask, {}


class ReLU6(Layer):
    def forward(self, x, train=False):
        return np.clip(x, 0, 6), (x > 0) & (x < 6)

    def backward(self, dout, mask):
        return dout * mask, {}


class LeakyReLU(Layer):
    def __init__(self, slope=0.01, name=""):
        super().__init__(name)
        self.slope = slope

    def forward(self, x, train=False):
        scale = np.where(x > 0, 1, self.slope).astype(x.dtype)
        return x * scale, scale

    def backward(self, dout, scale):
        return dout * scale, {}


class Tanh(Layer):
    def forward(self, x, train=False):
        out = np.tanh(x)
        return out, out

    def backward(self, dout, out):
        return dout * (1 - out * out), {}


class Sigmoid(Layer):
    def forward(self, x, train=False):
        out = 0.5 * (1 + np.tanh(0.5 * x))  # the tanh form cannot overflow for large |x|
        return out, out

    def backward(self, dout, out):
        return dout * out * (1 - out), {}


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability p and scale the rest by 1/(1-p) while
    training, so evaluation is the identity. Its random stream is the layer's own `rng`."""

    def __init__(self, p=0.5, rng=None, name=""):
        super().__init__(name)
        self.p, self.rng = p, rng or np.random.default_rng(0)

    def forward(self, x, train=False):
        if not train or self.p == 0:
            return x, None
        if self.p >= 1:
            return np.zeros_like(x), np.zeros_like(x)
        mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * mask, mask

    def backward(self, dout, mask):
        return (dout if mask is None else dout * mask), {}


class BatchNorm(Layer):
    """Batch normalisation over the batch (and, for images, the spatial positions) of each channel.

    Training normalises with the batch mean and biased variance and moves the running
    statistics by `momentum` towards the batch mean and *unbiased* variance; evaluation
    normalises with the running statistics. As nn.BatchNorm1d/2d with their defaults.
    """

    def __init__(self, features, ndim=3, eps=1e-5, momentum=0.1, dtype=np.float32, name=""):
        super().__init__(name or "bn")
        self.features, self.ndim, self.eps, self.momentum = features, ndim, eps, momentum
        self.params["weight"] = np.ones(features, dtype)
        self.params["bias"] = np.zeros(features, dtype)
        self.buffers["running_mean"] = np.zeros(features, dtype)
        self.buffers["running_var"] = np.ones(features, dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def _axes_shape(self, x):
        if self.ndim == 3:
            self._expect(x, 4, self.features)
            return (0, 2, 3), (1, -1, 1, 1)
        self._expect(x, 2, self.features, "features")
        return (0,), (1, -1)

    def forward(self, x, train=False):
        axes, bshape = self._axes_shape(x)
        gamma, beta = self.params["weight"].reshape(bshape), self.params["bias"].reshape(bshape)
        if not train:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            inv = (1 / np.sqrt(var + self.eps)).astype(x.dtype)
            xhat = (x - mean.reshape(bshape)) * inv.reshape(bshape)
            return xhat * gamma + beta, (xhat, inv, axes, bshape, False)
        m = x.size // x.shape[1]
        if m < 2:
            raise CnnlabError(f"layer '{self.name}': batch norm needs more than one value per channel to train (got input {tuple(x.shape)})")
        mean = x.mean(axis=axes)
        xc = x - mean.reshape(bshape)
        var = (xc * xc).mean(axis=axes)
        inv = 1 / np.sqrt(var + self.eps)
        xhat = xc * inv.reshape(bshape)
        mom, b = self.momentum, self.buffers
        b["running_mean"] = ((1 - mom) * b["running_mean"] + mom * mean).astype(b["running_mean"].dtype)
        b["running_var"] = ((1 - mom) * b["running_var"] + mom * var * m / (m - 1)).astype(b["running_var"].dtype)
        b["num_batches_tracked"] = b["num_batches_tracked"] + 1
        return xhat * gamma + beta, (xhat, inv, axes, bshape, True)

    def backward(self, dout, cache):
        xhat, inv, axes, bshape, batch_stats = cache
        dgamma = (dout * xhat).sum(axis=axes)
        dbeta = dout.sum(axis=axes)
        if not batch_stats:  # evaluation mode: a fixed affine map per channel
            return dout * (self.params["weight"] * inv).reshape(bshape), {"weight": dgamma, "bias": dbeta}
        m = dout.size // dout.shape[1]
        # d/dx of gamma * (x - mean) / std, with mean and std functions of the batch
        dxhat = dout * self.params["weight"].reshape(bshape)
        dx = (inv.reshape(bshape) / m) * (m * dxhat - dxhat.sum(axis=axes).reshape(bshape)
                                          - xhat * (dxhat * xhat).sum(axis=axes).reshape(bshape))
        return dx, {"weight": dgamma, "bias": dbeta}


class _Joined(MutableMapping):
    """The params (or buffers) of several sublayers as one mapping, `<prefix>.<name>` -> the
    sublayer's own entry: reading gives the live array, writing replaces it in the sublayer."""

    def __init__(self, parts: dict, kind: str):
        self.parts, self.kind = parts, kind  # prefix -> sublayer

    def _find(self, key):
        for prefix, layer in self.parts.items():
            if key.startswith(prefix + "."):
                d, name = getattr(layer, self.kind), key[len(prefix) + 1:]
                if name in d:  # a nested block's own mapping resolves the rest
                    return d, name
        raise KeyError(key)

    def __getitem__(self, key):
        d, name = self._find(key)
        return d[name]

    def __setitem__(self, key, value):
        d, name = self._find(key)
        d[name] = value

    def __delitem__(self, key):
        raise TypeError("a residual block's parameters cannot be removed")

    def __iter__(self):
        for prefix, layer in self.parts.items():
            for name in getattr(layer, self.kind):
                yield f"{prefix}.{name}"

    def __len__(self):
        return sum(len(getattr(layer, self.kind)) for layer in self.parts.values())


class Residual(Layer):
    """A spec's residual block `r[...]`: out = body(x) + shortcut(x), the shortcut x itself or a
    strided 1x1 convolution. Backward: the output gradient flows into both branches and their
    input gradients add. Parameter names follow the PyTorch SpecResidual (`body.0.weight`,
    `shortcut.weight`)."""

    def __init__(self, body: list, shortcut=None, name=""):
        super().__init__(name or "r[...]")
        self.body, self.shortcut = list(body), shortcut
        parts = {f"body.{i}": layer for i, layer in enumerate(self.body)}
        if shortcut is not None:
            parts["shortcut"] = shortcut
        self.parts = parts
        self.params, self.buffers = _Joined(parts, "params"), _Joined(parts, "buffers")

    def state_items(self) -> dict:
        return {f"{prefix}.{n}": v for prefix, layer in self.parts.items() for n, v in layer.state_items().items()}

    def forward(self, x, train=False):
        caches, out = [], x
        for layer in self.body:
            out, cache = layer.forward(out, train)
            caches.append(cache)
        if self.shortcut is None:
            if out.shape != x.shape:
                raise CnnlabError(f"residual block '{self.name}': its body turns {tuple(x.shape)} into {tuple(out.shape)}")
            return out + x, (caches, None)
        skip, skip_cache = self.shortcut.forward(x, train)
        return out + skip, (caches, skip_cache)

    def backward(self, dout, cache):
        caches, skip_cache = cache
        grads, d = {}, dout
        for i in range(len(self.body) - 1, -1, -1):
            d, g = self.body[i].backward(d, caches[i])
            grads.update({f"body.{i}.{n}": v for n, v in g.items()})
        if self.shortcut is None:
            return d + dout, grads
        dskip, g = self.shortcut.backward(dout, skip_cache)
        grads.update({f"shortcut.{n}": v for n, v in g.items()})
        return d + dskip, grads

    def release(self, cache):
        caches, skip_cache = cache
        for layer, c in zip(self.body, caches):
            layer.release(c)
        if self.shortcut is not None:
            self.shortcut.release(skip_cache)
