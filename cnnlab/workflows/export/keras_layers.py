"""A PyTorch model as a Keras 3 model: the same layers, the same weights, channels-last.

Over 400 lines: one converter, one method per kind of PyTorch operation, all sharing its graph walk.

    kmodel = to_keras(model, input_shape=(1, 28, 28), normalize=None, name="lenet5")

The model is traced with torch.fx into its graph of layers and operations, and each one becomes the
Keras layer that computes the same function: Conv2d (any padding, stride, dilation, groups; depthwise
as DepthwiseConv2D), BatchNorm, Linear, ReLU/ReLU6/LeakyReLU/tanh/sigmoid/SiLU/hard-swish/GELU/ELU,
max/average/global pooling, flatten, dropout, residual addition, concatenation, multiplication
(squeeze-and-excitation gates) and scaling by a constant. Keras holds images as (N, H, W, C), the
layout every Keras backend runs on a CPU, so kernels are transposed, and the first Dense after a
flatten has its input rows reordered from PyTorch's (C, H, W) order to Keras's (H, W, C). The
CIFAR ResNets' parameter-free shortcut (strided subsampling and zero channels) becomes a fixed 1x1
strided convolution with 0/1 weights, which computes exactly the same values.

Anything else (reshapes, channel splits and shuffles, Python arithmetic on shapes) raises one line,
"... not supported, because ...". Needs Keras 3 (`pip install cnnlab[keras]`); it runs on the PyTorch
backend unless KERAS_BACKEND names another (`import_keras()`: that Keras, or one line saying what is
missing). Imported inside `cnnlab.workflows.export.keras`'s functions (it imports torch; see `formats`).
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.zoo.blocks import PadShortcut

SUPPORTED = ("conv, pooling, dense, batch norm, activations, flatten, dropout, add (and concatenation, "
             "multiplication and scaling)")

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                nn.GELU, nn.ELU, nn.Hardtanh, nn.Softmax)
_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
           nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.Identity, PadShortcut) + _ACTIVATIONS


def import_keras():
    """Keras 3, on its PyTorch backend unless the user chose another with KERAS_BACKEND."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise CnnlabError("Keras is not installed: `pip install cnnlab[keras]` (Keras 3 on the PyTorch backend; "
                          "no TensorFlow needed)") from None
    except Exception as e:  # a backend that is named but not installed, e.g. KERAS_BACKEND=tensorflow  # noqa: BLE001
        raise CnnlabError(f"Keras could not start on backend '{os.environ.get('KERAS_BACKEND')}' "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:80]}): unset KERAS_BACKEND or set it to "
                          "torch") from None
    if not str(getattr(keras, "__version__", "0")).startswith(("3.", "4.")):
        raise CnnlabError(f"Keras {keras.__version__} is too old: `pip install cnnlab[keras]` (Keras 3)")
    return keras


class Unsupported(CnnlabError):
    """A model (or one of its operations) with no Keras equivalent here."""


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


class _Value:
    """A Keras tensor standing for one PyTorch tensor: `img` (N, H, W, C for PyTorch's N, C, H, W) or
    `vec` (N, F); `perm[i]` is the PyTorch feature a Keras feature i holds (None: the same order)."""

    def __init__(self, tensor, shape, perm=None):
        self.t, self.shape, self.perm = tensor, tuple(shape), perm

    @property
    def kind(self):
        return "img" if len(self.shape) == 4 else "vec" if len(self.shape) == 2 else f"{len(self.shape)}-D"


def to_keras(model: nn.Module, input_shape, normalize=None, name: str = "model"):
    """A Keras functional model computing `model` on (N, H, W, C) input; with `normalize=(mean, std)`
    it first maps pixel values 0-255 to the normalised input (x - 255*mean) / (255*std)."""
    keras = import_keras()
    model = model.cpu().eval()
    c, h, w = (int(v) for v in input_shape)
    label = getattr(model, "model_name", None) or name
    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # what torch.fx raises for Python control flow on tensors  # noqa: BLE001
        raise Unsupported(f"cannot export '{label}' to Keras: not supported, because its forward computes with "
                          f"tensor values or shapes in Python ({str(e).splitlines()[0][:90]}), which has no Keras "
                          f"layer; Keras export covers {SUPPORTED}") from None
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, c, h, w))
    conv = _Converter(keras, gm, label)
    inp = keras.Input(shape=(h, w, c), name="input")
    x = inp
    if normalize is not None:
        mean, std = (np.asarray(v, dtype=np.float64) for v in normalize)
        x = keras.layers.Rescaling(scale=[float(v) for v in 1 / (255 * std)], offset=[float(v) for v in -mean / std],
                                   name="normalize")(x)
    out = conv.run(_Value(x, (1, c, h, w)))
    return keras.Model(inp, out, name=re.sub(r"[^A-Za-z0-9_]", "_", label)[:60] or "model")


class _Converter:
    def __init__(self, keras, gm, label):
        self.keras, self.L, self.gm, self.label = keras, keras.layers, gm, label
        self.env = {}

    # ---- helpers

    def fail(self, node, why):
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        where = node.name
        if stack:
            path, cls = stack[-1] if isinstance(stack[-1], tuple) else (str(stack[-1]), None)
            cls = cls if isinstance(cls, type) else type(self.gm.get_submodule(path)) if path else None
            where = f"{path} ({cls.__name__})" if cls else path
        raise Unsupported(f"cannot export '{self.label}' to Keras: not supported, because {why} (in {where}); "
                          f"Keras export covers {SUPPORTED}")

    def shape(self, node):
        tm = node.meta.get("tensor_meta")
        if tm is None or not hasattr(tm, "shape"):
            self.fail(node, f"'{node.target}' does not give one tensor")
        return tuple(tm.shape)

    def apply(self, layer, node, *inputs, weights=None, perm=None):
        t = layer(inputs[0].t if len(inputs) == 1 else [v.t for v in inputs])
        if weights is not None:
            layer.set_weights([np.ascontiguousarray(wt, dtype=np.float32) for wt in weights])
        return _Value(t, self.shape(node), perm)

    def value(self, node, arg):
        if not isinstance(arg, torch.fx.Node) or not isinstance(self.env.get(arg), _Value):
            self.fail(node, f"it passes {'a size' if isinstance(arg, torch.fx.Node) else 'a constant'} where a "
                            "tensor is expected")
        return self.env[arg]

    def lname(self, node, suffix=""):
        return f"{node.name}{suffix}"

    # ---- the graph

    def run(self, inp: _Value):
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = inp
            elif node.op == "output":
                out = node.args[0]
                if not isinstance(out, torch.fx.Node):
                    self.fail(node, "the model returns more than one tensor")
                v = self.env[out]
                if v.kind != "vec" or v.perm is not None:
                    self.fail(node, f"the model's output is {v.kind}, not one score vector per image")
                return v.t
            elif node.op == "call_module":
                self.env[node] = self.module(node, self.gm.get_submodule(node.target))
            elif node.op in ("call_function", "call_method"):
                self.env[node] = self.function(node)
            elif node.op == "get_attr":
                self.fail(node, f"it uses the tensor attribute '{node.target}' directly")
        raise Unsupported(f"cannot export '{self.label}' to Keras: its graph has no output")

    def module(self, node, m):
        L = self.L
        x = self.value(node, node.args[0])
        if isinstance(m, (nn.Identity,)):
            return x
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            return self.apply(L.Dropout(m.p, name=self.lname(node)), node, x, perm=x.perm)
        if isinstance(m, _ACTIVATIONS):
            return self.apply(self.activation(node, m), node, x, perm=x.perm)
        if isinstance(m, nn.Conv2d):
            return self.conv(node, m, x)
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            return self.batchnorm(node, m, x)
        if isinstance(m, nn.Linear):
            if x.kind != "vec":
                self.fail(node, f"a Linear layer gets a {x.kind} input (Keras's Dense here takes flat features)")
            kernel = m.weight.detach().numpy().T
            if x.perm is not None:
                kernel = kernel[x.perm]
            weights = [kernel] + ([m.bias.detach().numpy()] if m.bias is not None else [])
            return self.apply(L.Dense(m.out_features, use_bias=m.bias is not None, name=self.lname(node)), node, x,
                              weights=weights)
        if isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                self.fail(node, f"it flattens dimensions {m.start_dim}..{m.end_dim}, not all but the batch")
            return self.flatten(node, x)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            return self.pool(node, m, x)
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return self.adaptive_pool(node, isinstance(m, nn.AdaptiveMaxPool2d), x)
        if isinstance(m, PadShortcut):
            return self.pad_shortcut(node, m, x)
        self.fail(node, f"{type(m).__name__} has no Keras layer here")

    def activation(self, node, m):
        L, name = self.L, self.lname(node)
        if isinstance(m, nn.ReLU):
            return L.ReLU(name=name)
        if isinstance(m, nn.ReLU6) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)):
            return L.ReLU(max_value=6.0, name=name)
        if isinstance(m, nn.LeakyReLU):
            return L.LeakyReLU(negative_slope=m.negative_slope, name=name)
        if isinstance(m, nn.GELU) and m.approximate != "none":
            self.fail(node, "GELU with the tanh approximation differs from Keras's gelu")
        if isinstance(m, nn.ELU) and m.alpha != 1.0:
            self.fail(node, f"ELU with alpha {m.alpha} differs from Keras's elu")
        if isinstance(m, nn.Softmax):
            if m.dim not in (1, -1) or len(self.shape(node)) != 2:
                self.fail(node, "softmax over another axis than the classes")
            return L.Softmax(name=name)
        names = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu", nn.Hardswish: "hard_silu",
                 nn.Hardsigmoid: "hard_sigmoid", nn.GELU: "gelu", nn.ELU: "elu"}
        if type(m) not in names:
            self.fail(node, f"{type(m).__name__} has no Keras activation here")
        return L.Activation(names[type(m)], name=name)

    def conv(self, node, m, x):
        L = self.L
        if x.kind != "img":
            self.fail(node, "a convolution gets flat features")
        if m.padding_mode != "zeros":
            self.fail(node, f"the convolution pads with '{m.padding_mode}', Keras only with zeros")
        (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
        if (dh, dw) != (1, 1) and (sh, sw) != (1, 1):
            self.fail(node, "a dilated convolution with a stride (Keras takes one or the other)")
        t, padding = x, "valid"
        if isinstance(m.padding, str):
            padding = m.padding
        else:
            ph, pw = m.padding
            if (sh, sw) == (1, 1) and 2 * ph == dh * (kh - 1) and 2 * pw == dw * (kw - 1):
                padding = "same" if ph or pw else "valid"  # symmetric "same" padding: exactly Keras's
            elif ph or pw:
                t = self.apply(L.ZeroPadding2D(((ph, ph), (pw, pw)), name=self.lname(node, "_pad")), node, x)
        cin, cout, g = m.in_channels, m.out_channels, m.groups
        wt = m.weight.detach().numpy()  # (cout, cin/g, kh, kw)
        bias = [m.bias.detach().numpy()] if m.bias is not None else []
        common = dict(strides=(sh, sw), padding=padding, dilation_rate=(dh, dw), use_bias=m.bias is not None,
                      name=self.lname(node))
        if g == 1:
            layer, kernel = L.Conv2D(cout, (kh, kw), **common), wt.transpose(2, 3, 1, 0)
        elif g == cin:  # depthwise, depth multiplier cout/cin: output channel i*m+j reads input channel i
            mult = cout // cin
            layer = L.DepthwiseConv2D((kh, kw), depth_multiplier=mult, **common)
            kernel = wt.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)
        else:
            layer, kernel = L.Conv2D(cout, (kh, kw), groups=g, **common), wt.transpose(2, 3, 1, 0)
        out = layer(t.t)
        layer.set_weights([np.ascontiguousarray(kernel, dtype=np.float32)] + [b.astype(np.float32) for b in bias])
        return _Value(out, self.shape(node))

    def batchnorm(self, node, m, x):
        if m.running_mean is None or m.running_var is None:
            self.fail(node, "a batch norm without running statistics normalises by the batch's own")
        if isinstance(m, nn.BatchNorm1d) and x.kind != "vec":
            self.fail(node, f"BatchNorm1d on a {x.kind} input")
        if isinstance(m, nn.BatchNorm2d) and x.kind != "img":
            self.fail(node, f"BatchNorm2d on a {x.kind} input")
        weights = ([m.weight.detach().numpy(), m.bias.detach().numpy()] if m.affine else []) + \
            [m.running_mean.numpy(), m.running_var.numpy()]
        if x.perm is not None:
            weights = [wt[x.perm] for wt in weights]
        layer = self.L.BatchNormalization(axis=-1, epsilon=m.eps, momentum=1 - (m.momentum or 0.1), center=m.affine,
                                          scale=m.affine, name=self.lname(node))
        return self.apply(layer, node, x, weights=weights, perm=x.perm)

    def flatten(self, node, x):
        if x.kind == "vec":
            return x
        if x.kind != "img":
            self.fail(node, f"flattening a {x.kind} tensor")
        _, c, h, w = x.shape
        perm = None if h * w == 1 else np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
        return self.apply(self.L.Flatten(name=self.lname(node)), node, x, perm=perm)

    def pool(self, node, m, x):
        L = self.L
        if x.kind != "img":
            self.fail(node, "pooling flat features")
        k = _pair(m.kernel_size)
        s = _pair(m.stride or m.kernel_size)
        p = _pair(m.padding)
        is_max = isinstance(m, nn.MaxPool2d)
        if is_max and _pair(m.dilation) != (1, 1):
            self.fail(node, "dilated max pooling")
        if not is_max and m.divisor_override:
            self.fail(node, "average pooling with a divisor override")
        _, _, h, w = x.shape
        floor = ((h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)
        if tuple(self.shape(node)[2:]) != floor:
            self.fail(node, "the pooling rounds its output size up (ceil_mode) on an input it does not divide")
        t = x
        if p != (0, 0):
            if is_max:
                self.fail(node, "max pooling with padding (PyTorch pads with -inf, Keras has no such padding)")
            if not m.count_include_pad:
                self.fail(node, "average pooling with padding that is not counted")
            t = self.apply(L.ZeroPadding2D(((p[0], p[0]), (p[1], p[1])), name=self.lname(node, "_pad")), node, x)
        cls = L.MaxPooling2D if is_max else L.AveragePooling2D
        out = cls(pool_size=k, strides=s, padding="valid", name=self.lname(node))(t.t)
        return _Value(out, self.shape(node))

    def adaptive_pool(self, node, is_max, x):
        L = self.L
        if x.kind != "img":
            self.fail(node, "adaptive pooling of flat features")
        _, _, h, w = x.shape
        oh, ow = self.shape(node)[2:]
        if (oh, ow) == (1, 1):
            cls = L.GlobalMaxPooling2D if is_max else L.GlobalAveragePooling2D
            return self.apply(cls(keepdims=True, name=self.lname(node)), node, x)
        if h % oh or w % ow:
            self.fail(node, f"adaptive pooling from {h}x{w} to {oh}x{ow} has windows of different sizes")
        cls = L.MaxPooling2D if is_max else L.AveragePooling2D
        return self.apply(cls(pool_size=(h // oh, w // ow), name=self.lname(node)), node, x)

    def pad_shortcut(self, node, m, x):
        """x[:, :, ::s, ::s] with zero channels around it, as a fixed 1x1 convolution of stride s."""
        cin = x.shape[1]
        cout = self.shape(node)[1]
        kernel = np.zeros((1, 1, cin, cout), dtype=np.float32)
        kernel[0, 0, np.arange(cin), np.arange(cin) + m.extra // 2] = 1.0
        layer = self.L.Conv2D(cout, 1, strides=m.stride, use_bias=False, trainable=False, name=self.lname(node))
        return self.apply(layer, node, x, weights=[kernel])

    # ---- functions and methods

    def function(self, node):
        L, t = self.L, node.target
        args = node.args
        name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
        if name == "size" or (name == "getattr" and len(args) == 2 and args[1] == "shape"):
            return _SIZE  # only used by the reshape that consumes it, which checks shapes itself
        if any(isinstance(a, torch.fx.Node) and self.env.get(a) is _SIZE for a in args):
            if name in ("getitem", "add", "sub", "mul", "floordiv", "truediv"):
                return _SIZE  # arithmetic on sizes
        if name == "getitem":
            self.fail(node, "it indexes or slices a tensor (e.g. x[:, :c]) or splits it into parts")
        if name in ("chunk", "split", "unbind", "tensor_split"):
            self.fail(node, f"it splits a tensor into parts ('{name}')")
        if name in ("transpose", "permute", "swapaxes"):
            self.fail(node, f"it rearranges a tensor's dimensions ('{name}')")
        if name in ("add", "iadd", "mul", "imul", "truediv", "sub") and len(args) == 2:
            return self.arith(node, name.lstrip("i") if name in ("iadd", "imul") else name, args)
        if name in ("cat", "concat"):
            tensors = args[0]
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim", 0)
            vals = [self.value(node, a) for a in tensors]
            kinds = {v.kind for v in vals}
            if len(kinds) != 1 or dim not in (1, -3 if "img" in kinds else -1) or any(v.perm is not None for v in vals):
                self.fail(node, f"a concatenation along dimension {dim}")
            return self.apply(L.Concatenate(axis=-1, name=self.lname(node)), node, *vals)
        if name in ("flatten", "view", "reshape"):
            x = self.value(node, args[0])
            out = self.shape(node)
            if len(out) == 2 and out[0] == x.shape[0] and (x.kind == "img" or x.kind == "vec"):
                return self.flatten(node, x)
            self.fail(node, f"it reshapes a tensor ('{name}' from {list(x.shape)} to {list(out)}); of the reshapes, "
                            "only flattening maps to Keras")
        if name in ("relu", "sigmoid", "tanh", "silu", "relu6", "hardswish", "hardsigmoid", "gelu", "elu"):
            if node.kwargs.get("approximate", "none") != "none":
                self.fail(node, "GELU with the tanh approximation")
            x = self.value(node, args[0])
            keras_name = {"relu6": None, "hardswish": "hard_silu", "hardsigmoid": "hard_sigmoid"}.get(name, name)
            layer = (L.ReLU(max_value=6.0, name=self.lname(node)) if name == "relu6"
                     else L.Activation(keras_name, name=self.lname(node)))
            return self.apply(layer, node, x, perm=x.perm)
        if name == "leaky_relu":
            x = self.value(node, args[0])
            slope = args[1] if len(args) > 1 else node.kwargs.get("negative_slope", 0.01)
            return self.apply(L.LeakyReLU(negative_slope=slope, name=self.lname(node)), node, x, perm=x.perm)
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            return self.adaptive_pool(node, "max" in name, self.value(node, args[0]))
        if name in ("dropout", "contiguous", "clone") or (name == "float" and node.op == "call_method"):
            return self.value(node, args[0])
        self.fail(node, f"'{name}' has no Keras layer here")

    def arith(self, node, op, args):
        L = self.L
        a, b = args
        if isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node):
            va, vb = self.value(node, a), self.value(node, b)
            if op not in ("add", "mul", "sub"):
                self.fail(node, f"'{op}' of two tensors")
            if not _broadcastable(va, vb) or (va.perm is not None or vb.perm is not None) and not np.array_equal(
                    va.perm, vb.perm):
                self.fail(node, f"'{op}' of tensors shaped {list(va.shape)} and {list(vb.shape)}")
            cls = {"add": L.Add, "mul": L.Multiply, "sub": L.Subtract}[op]
            return self.apply(cls(name=self.lname(node)), node, va, vb, perm=va.perm)
        tensor, const = (a, b) if isinstance(a, torch.fx.Node) else (b, a)
        if not isinstance(const, (int, float)):
            self.fail(node, f"'{op}' with a {type(const).__name__}")
        v = self.value(node, tensor)
        if op == "truediv" and tensor is not a:
            self.fail(node, "a constant divided by a tensor")
        if op == "sub":
            scale, offset = (1.0, -float(const)) if tensor is a else (-1.0, float(const))
        else:
            scale, offset = {"add": (1.0, float(const)), "mul": (float(const), 0.0),
                             "truediv": (1.0 / float(const), 0.0)}[op]
        return self.apply(L.Rescaling(scale=scale, offset=offset, name=self.lname(node)), node, v, perm=v.perm)


_SIZE = object()


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _broadcastable(a: _Value, b: _Value) -> bool:
    if a.kind != b.kind:
        return False
    return all(x == y or x == 1 or y == 1 for x, y in zip(a.shape[1:], b.shape[1:]))

