"""The ONNX operators `OnnxModule` runs: each one as torch ops, and as numpy for constants and shapes.

    OPS["Relu"].module(node, consts)       # nn.ReLU(): the module the PyTorch model ran
    OPS["Reshape"].fn(node, x, shape)      # a torch tensor, or numpy when every input is numpy

An entry has `fn(node, *inputs) -> output or tuple of outputs` and, for the operators the cost
model charges by module type (convolutions, fully connected layers, batch norms and the
activations of the competition's rule), `module(node, consts) -> nn.Module or None`, built once
from the node's constant inputs (`consts[i]` is a numpy array, or None for a computed input);
None means "run `fn`". `numpy=True` entries take numpy inputs as they are (shape arithmetic:
Shape, Gather, Concat, ...), so a graph's shape computations cost nothing, as Python integers
cost nothing in the PyTorch model; the others see numpy inputs converted to tensors.

An operator or an attribute value outside this table is a one-line CnnlabError naming it.
Semantics follow the ONNX operator documents (opsets 9-23: attributes that later opsets moved to
inputs are read from either place). The module is over 400 lines because it is a table: one short
entry per operator, each read on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError

MAX_CONSTANT = 1 << 26  # elements of a computed constant (256 MB of float32): larger is refused


@dataclass
class Op:
    fn: Callable
    module: Callable | None = None
    numpy: bool = False


OPS: dict[str, Op] = {}


def op(*names, module=None, numpy=False):
    def register(fn):
        for name in names:
            OPS[name] = Op(fn, module, numpy)
        return fn
    return register


def refuse(node, why: str):
    raise CnnlabError(f"the ONNX graph's {node.op} node '{node.name}' {why}: cnnlab costs the operators that "
                      "`cnnlab export` writes; export the model with `cnnlab export RUN_DIR --format onnx`")


def is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


def as_tensor(v, like=None):
    """A numpy value as a tensor on `like`'s device (meta included), float64 made float32."""
    if v is None or is_tensor(v):
        return v
    arr = np.asarray(v)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif not arr.flags.writeable:
        arr = arr.copy()
    return torch.as_tensor(arr, device=like.device if like is not None else "cpu")


def ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def attr_or_input(node, name, value, default=None):
    """An attribute that later opsets moved to an input (axes, pads, min/max, ...): the input's
    constant `value` when given, else the attribute, else `default`."""
    if value is not None:
        if is_tensor(value):
            refuse(node, f"takes its {name} from a computed tensor")
        return np.asarray(value)
    return np.asarray(node.attrs[name]) if name in node.attrs else default


def _pairs(pads, dims):
    """ONNX pads (begins..., ends...) for the last `dims` axes -> ((begin, end) per axis)."""
    pads = list(pads) if pads is not None else [0] * 2 * dims
    return list(zip(pads[:dims], pads[dims:]))


def _torch_pad(pairs):
    """((begin, end) per axis, first axis first) -> F.pad's order, last axis first."""
    return [p for b, e in reversed(pairs) for p in (b, e)]


# ---- layers charged by the cost model: built as modules -----------------------------------------

class BatchNorm(nn.BatchNorm2d):
    """ONNX BatchNormalization (inference: the running statistics, in train() mode too) on any
    (N, C, ...) input, as one module type: the rule's batch norm."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def _conv_geometry(node, w):
    dims = w.ndim - 2
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        refuse(node, f"uses auto_pad {node.attrs['auto_pad']}")
    pairs = _pairs(node.attrs.get("pads"), dims)
    return (dims, [int(s) for s in node.attrs.get("strides", [1] * dims)],
            [int(d) for d in node.attrs.get("dilations", [1] * dims)], pairs)


def _conv_module(node, consts):
    w, b = consts[1], consts[2] if len(consts) > 2 else None
    if w is None or (len(node.inputs) > 2 and node.inputs[2] and b is None) or w.ndim not in (3, 4):
        return None
    dims, strides, dilations, pairs = _conv_geometry(node, w)
    symmetric = all(a == e for a, e in pairs)
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    conv = cls(w.shape[1] * int(node.attrs.get("group", 1)), w.shape[0], w.shape[2:], stride=strides,
               padding=[a for a, _ in pairs] if symmetric else 0, dilation=dilations,
               groups=int(node.attrs.get("group", 1)), bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
        if b is not None:
            conv.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32)))
    conv.onnx_pre_pad = None if symmetric else _torch_pad(pairs)
    return conv


@op("Conv", module=_conv_module)
def conv(node, x, w, b=None):
    w, b = as_tensor(w, x), as_tensor(b, x)
    dims, strides, dilations, pairs = _conv_geometry(node, w)
    x = F.pad(x, _torch_pad(pairs))
    fn = F.conv2d if dims == 2 else F.conv1d
    return fn(x, w, b, strides, 0, dilations, int(node.attrs.get("group", 1)))


def _linear(weight, bias):
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)))
        if bias is not None:
            lin.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
    return lin


def _gemm_module(node, consts):
    b = consts[1]
    c = consts[2] if len(consts) > 2 and node.inputs[2] else None
    if b is None or b.ndim != 2 or int(node.attrs.get("transA", 0)) or (len(consts) > 2 and node.inputs[2] and c is None):
        return None
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    weight = b if int(node.attrs.get("transB", 0)) else b.T  # (out, in), as nn.Linear keeps it
    if c is not None and c.size != weight.shape[0]:
        return None
    return _linear(weight * alpha if alpha != 1 else weight,
                   None if c is None else (c.reshape(-1) * beta if beta != 1 else c.reshape(-1)))


@op("Gemm", module=_gemm_module)
def gemm(node, a, b, c=None):
    a, b, c = as_tensor(a), as_tensor(b, a), as_tensor(c, a)
    a = a.t() if int(node.attrs.get("transA", 0)) else a
    b = b.t() if int(node.attrs.get("transB", 0)) else b
    y = float(node.attrs.get("alpha", 1.0)) * (a @ b)
    return y if c is None else y + float(node.attrs.get("beta", 1.0)) * c


def _matmul_module(node, consts):
    if consts[0] is not None or consts[1] is None or consts[1].ndim != 2:
        return None
    return _linear(consts[1].T, None)  # x @ W == linear(x, W.T)


@op("MatMul", module=_matmul_module)
def matmul(node, a, b):
    return torch.matmul(as_tensor(a, b if is_tensor(b) else None), as_tensor(b, a if is_tensor(a) else None))


def _bn_module(node, consts):
    scale, bias, mean, var = consts[1:5]
    if any(v is None for v in (scale, bias, mean, var)) or int(node.attrs.get("training_mode", 0)):
        return None
    bn = BatchNorm(scale.size, eps=float(node.attrs.get("epsilon", 1e-5)))
    with torch.no_grad():
        for t, v in ((bn.weight, scale), (bn.bias, bias), (bn.running_mean, mean), (bn.running_var, var)):
            t.copy_(torch.from_numpy(np.array(v, dtype=np.float32).reshape(-1)))
    return bn


@op("BatchNormalization", module=_bn_module)
def batch_norm(node, x, scale, bias, mean, var):
    if int(node.attrs.get("training_mode", 0)):
        refuse(node, "is in training mode")
    return F.batch_norm(x, *(as_tensor(v, x).reshape(-1) for v in (mean, var, scale, bias)), False, 0.0,
                        float(node.attrs.get("epsilon", 1e-5)))


op("Relu", module=lambda node, consts: nn.ReLU())(lambda node, x: torch.relu(x))
op("Sigmoid", module=lambda node, consts: nn.Sigmoid())(lambda node, x: torch.sigmoid(x))
op("Tanh", module=lambda node, consts: nn.Tanh())(lambda node, x: torch.tanh(x))
op("HardSwish", module=lambda node, consts: nn.Hardswish())(lambda node, x: F.hardswish(x))
op("LeakyRelu", module=lambda node, consts: nn.LeakyReLU(float(node.attrs.get("alpha", 0.01))))(
    lambda node, x: F.leaky_relu(x, float(node.attrs.get("alpha", 0.01))))
op("Elu", module=lambda node, consts: nn.ELU(float(node.attrs.get("alpha", 1.0))))(
    lambda node, x: F.elu(x, float(node.attrs.get("alpha", 1.0))))


def _clip_bounds(node, lo, hi):
    lo, hi = attr_or_input(node, "min", lo), attr_or_input(node, "max", hi)
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def _clip_module(node, consts):
    if any(name and v is None for name, v in zip(node.inputs[1:], consts[1:])):
        return None  # computed bounds: refused by clip()
    lo, hi = _clip_bounds(node, *(list(consts[1:]) + [None, None])[:2])
    return nn.ReLU6() if (lo, hi) == (0.0, 6.0) else None  # how torch exports ReLU6; any other clamp is functional


@op("Clip", module=_clip_module)
def clip(node, x, lo=None, hi=None):
    lo, hi = _clip_bounds(node, lo, hi)
    return torch.clamp(x, lo, hi)


@op("HardSigmoid")
def hard_sigmoid(node, x):
    return torch.clamp(float(node.attrs.get("alpha", 0.2)) * x + float(node.attrs.get("beta", 0.5)), 0, 1)


# ---- element-wise and reductions ---------------------------------------------------------------

def _binary(np_fn, torch_fn):
    def fn(node, a, b):
        if not is_tensor(a) and not is_tensor(b):
            return np_fn(np.asarray(a), np.asarray(b))
        like = a if is_tensor(a) else b
        return torch_fn(as_tensor(a, like), as_tensor(b, like))
    return fn


def _np_div(a, b):
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return (np.trunc(a / b)).astype(np.result_type(a, b))  # ONNX integer division truncates
    return (a / b).astype(np.result_type(a, b))


op("Add", numpy=True)(_binary(np.add, torch.add))
op("Sub", numpy=True)(_binary(np.subtract, torch.sub))
op("Mul", numpy=True)(_binary(np.multiply, torch.mul))
op("Div", numpy=True)(_binary(_np_div, torch.div))
op("Pow")(_binary(np.power, torch.pow))
op("Equal", numpy=True)(_binary(np.equal, torch.eq))
op("Greater", numpy=True)(_binary(np.greater, torch.gt))
op("Less", numpy=True)(_binary(np.less, torch.lt))
op("And", numpy=True)(_binary(np.logical_and, torch.logical_and))
op("Or", numpy=True)(_binary(np.logical_or, torch.logical_or))
op("Not", numpy=True)(lambda node, x: torch.logical_not(x) if is_tensor(x) else np.logical_not(x))
op("Max")(_binary(np.maximum, torch.maximum))
op("Min")(_binary(np.minimum, torch.minimum))
for _name, _fn in (("Erf", torch.erf), ("Exp", torch.exp), ("Log", torch.log), ("Sqrt", torch.sqrt),
                   ("Neg", torch.neg), ("Abs", torch.abs), ("Reciprocal", torch.reciprocal), ("Floor", torch.floor),
                   ("Ceil", torch.ceil)):
    op(_name)(lambda node, x, _fn=_fn: _fn(x))


@op("Where", numpy=True)
def where(node, cond, a, b):
    if not any(is_tensor(v) for v in (cond, a, b)):
        return np.where(cond, a, b)
    like = next(v for v in (cond, a, b) if is_tensor(v))
    return torch.where(as_tensor(cond, like).bool(), as_tensor(a, like), as_tensor(b, like))


@op("Softmax", "LogSoftmax")
def softmax(node, x):
    axis = int(node.attrs.get("axis", -1 if node.opset >= 13 else 1))
    if node.opset < 13 and axis != x.dim() - 1 and axis != -1:
        refuse(node, f"normalises over axes {axis}.. (opset {node.opset} semantics)")
    return (torch.softmax if node.op == "Softmax" else torch.log_softmax)(x, axis)


@op("ReduceMean", "ReduceSum", "ReduceMax")
def reduce(node, x, axes=None):
    axes = attr_or_input(node, "axes", axes)
    keep = bool(int(node.attrs.get("keepdims", 1)))
    dims = tuple(ints(axes)) if axes is not None and np.asarray(axes).size else tuple(range(x.dim()))
    if node.op == "ReduceMean":
        return x.mean(dims, keepdim=keep)
    return x.sum(dims, keepdim=keep) if node.op == "ReduceSum" else x.amax(dims, keepdim=keep)


# ---- pooling -----------------------------------------------------------------------------------

def _pool_args(node, x):
    dims = x.dim() - 2
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        refuse(node, f"uses auto_pad {node.attrs['auto_pad']}")
    if dims != 2:
        refuse(node, f"pools {dims}-D data (cnnlab costs 2-D pooling)")
    kernel = ints(node.attrs["kernel_shape"])
    strides = ints(node.attrs.get("strides", [1] * dims))
    pairs = _pairs(node.attrs.get("pads"), dims)
    return kernel, strides, pairs, bool(int(node.attrs.get("ceil_mode", 0)))


@op("MaxPool")
def max_pool(node, x):
    kernel, strides, pairs, ceil = _pool_args(node, x)
    if len(node.outputs) > 1 and node.outputs[1]:
        refuse(node, "returns indices")
    dilation = ints(node.attrs.get("dilations", [1, 1]))
    if all(a == e for a, e in pairs):
        return F.max_pool2d(x, kernel, strides, [a for a, _ in pairs], dilation, ceil_mode=ceil)
    return F.max_pool2d(F.pad(x, _torch_pad(pairs), value=-math.inf), kernel, strides, 0, dilation, ceil_mode=ceil)


@op("AveragePool")
def avg_pool(node, x):
    kernel, strides, pairs, ceil = _pool_args(node, x)
    include = bool(int(node.attrs.get("count_include_pad", 0)))
    if not all(a == e for a, e in pairs):
        if not include:
            refuse(node, "pads unevenly without counting the padding")
        return F.avg_pool2d(F.pad(x, _torch_pad(pairs)), kernel, strides, 0, ceil_mode=ceil)
    return F.avg_pool2d(x, kernel, strides, [a for a, _ in pairs], ceil_mode=ceil, count_include_pad=include)


op("GlobalAveragePool")(lambda node, x: x.mean(tuple(range(2, x.dim())), keepdim=True))
op("GlobalMaxPool")(lambda node, x: x.amax(tuple(range(2, x.dim())), keepdim=True))


# ---- moving data: shapes, views, copies --------------------------------------------------------

def _lib(*values):
    return torch if any(is_tensor(v) for v in values) else np


# ---- int8 (the QDQ graphs `cnnlab export --int8` writes): elementwise, charged nothing -----------

_QRANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _per_axis(v, x, axis: int):
    """A scale or zero point: one value, or one per channel of `axis`, shaped to broadcast over x."""
    v = v.float()
    if v.dim() == 0 or v.numel() == 1:
        return v.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = v.numel()
    return v.reshape(shape)


@op("QuantizeLinear")
def quantize_linear(node, x, scale, zero_point=None):
    """round(x / scale) + zero point (ties to even, as ONNX rounds), saturated to the zero point's type."""
    scale = as_tensor(scale, x)
    zp = as_tensor(zero_point, x) if zero_point is not None else torch.zeros((), dtype=torch.uint8)
    if zp.dtype not in _QRANGE:
        refuse(node, f"quantizes to {zp.dtype}, not int8 or uint8")
    lo, hi = _QRANGE[zp.dtype]
    axis = int(node.attrs.get("axis", 1))
    return (torch.round(x.float() / _per_axis(scale, x, axis)) + _per_axis(zp, x, axis)).clamp(lo, hi).to(zp.dtype)


@op("DequantizeLinear")
def dequantize_linear(node, x, scale, zero_point=None):
    """(x - zero point) * scale, in float32; on a weight it is folded into a float constant when loaded."""
    axis = int(node.attrs.get("axis", 1))
    zp = _per_axis(as_tensor(zero_point, x), x, axis) if zero_point is not None else 0.0
    return (x.float() - zp) * _per_axis(as_tensor(scale, x), x, axis)


@op("Identity", "Dropout", numpy=True)
def identity(node, x, *rest):
    if len(node.outputs) > 1 and node.outputs[1]:
        refuse(node, "returns its dropout mask")
    return x


@op("Constant", numpy=True)
def constant(node):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in node.attrs:
            v = np.asarray(node.attrs[key])
            return v.astype(np.float32) if key.startswith("value_float") else v.astype(np.int64) \
                if key.startswith("value_int") else v
    refuse(node, f"holds {', '.join(node.attrs) or 'no value'} (cnnlab reads numeric constants)")


@op("ConstantOfShape", numpy=True)
def constant_of_shape(node, shape):
    shape = ints(shape)
    if math.prod(shape) > MAX_CONSTANT:
        refuse(node, f"makes {math.prod(shape):,} elements")
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    return np.full(shape, value[0], dtype=value.dtype)


@op("Shape", numpy=True)
def shape(node, x):
    dims = list(x.shape)
    start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
    return np.asarray(dims[start:None if end is None else int(end)], dtype=np.int64)


@op("Size", numpy=True)
def size(node, x):
    return np.asarray(math.prod(x.shape), dtype=np.int64)


@op("Cast", numpy=True)
def cast(node, x):
    from onnx.helper import tensor_dtype_to_np_dtype

    dtype = np.dtype(tensor_dtype_to_np_dtype(int(node.attrs["to"])))
    if not is_tensor(x):
        return np.asarray(x).astype(dtype)
    return x.to(torch.from_numpy(np.zeros(0, dtype)).dtype)


@op("Gather", numpy=True)
def gather(node, x, index):
    axis = int(node.attrs.get("axis", 0))
    if is_tensor(index):
        refuse(node, "gathers with computed indices")
    index = np.asarray(index)
    if not is_tensor(x):
        return np.take(np.asarray(x), index, axis=axis)
    axis = axis % x.dim()
    idx = torch.as_tensor(index.reshape(-1) % x.shape[axis], device=x.device)
    out = torch.index_select(x, axis, idx)
    return out.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1:])


@op("Unsqueeze", numpy=True)
def unsqueeze(node, x, axes=None):
    axes = ints(attr_or_input(node, "axes", axes))
    rank = len(x.shape) + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a) if is_tensor(x) else np.expand_dims(x, a)
    return x


@op("Squeeze", numpy=True)
def squeeze(node, x, axes=None):
    axes = attr_or_input(node, "axes", axes)
    shape = list(x.shape)
    drop = {a % len(shape) for a in ints(axes)} if axes is not None else {i for i, d in enumerate(shape) if d == 1}
    new = [d for i, d in enumerate(shape) if i not in drop]
    return x.reshape(new) if is_tensor(x) else np.reshape(x, new)


@op("Concat", numpy=True)
def concat(node, *xs):
    axis = int(node.attrs["axis"])
    if _lib(*xs) is np:
        return np.concatenate([np.asarray(v) for v in xs], axis)
    like = next(v for v in xs if is_tensor(v))
    return torch.cat([as_tensor(v, like) for v in xs], axis)


@op("Reshape", numpy=True)
def reshape(node, x, shape):
    target = ints(shape)
    if not int(node.attrs.get("allowzero", 0)):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target) if is_tensor(x) else np.reshape(x, target)


@op("Flatten", numpy=True)
def flatten(node, x):
    axis = int(node.attrs.get("axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    target = [math.prod(x.shape[:axis]), math.prod(x.shape[axis:])]
    return x.reshape(target) if is_tensor(x) else np.reshape(x, target)


@op("Transpose", numpy=True)
def transpose(node, x):
    perm = ints(node.attrs["perm"]) if "perm" in node.attrs else list(range(len(x.shape)))[::-1]
    return x.permute(perm) if is_tensor(x) else np.transpose(x, perm)


@op("Slice", numpy=True)
def slice_(node, x, starts=None, ends=None, axes=None, steps=None):
    starts = ints(attr_or_input(node, "starts", starts))
    ends = ints(attr_or_input(node, "ends", ends))
    axes = attr_or_input(node, "axes", axes)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(attr_or_input(node, "steps", steps, [1] * len(starts)))
    index = [slice(None)] * len(x.shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st < 0 and is_tensor(x):
            refuse(node, "slices with a negative step")
        index[a] = slice(s, e, st)  # Python's slices clamp out-of-range bounds as ONNX's do
    return x[tuple(index)]


@op("Split", numpy=True)
def split(node, x, sizes=None):
    axis = int(node.attrs.get("axis", 0)) % len(x.shape)
    sizes = attr_or_input(node, "split", sizes)
    parts = len(node.outputs)
    sizes = ints(sizes) if sizes is not None else [-(-x.shape[axis] // parts)] * parts
    out, start = [], 0
    for s in sizes:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(start, min(start + s, x.shape[axis]))
        out.append(x[tuple(index)])
        start += s
    return tuple(out)


@op("Expand", numpy=True)
def expand(node, x, shape):
    target = np.broadcast_shapes(tuple(x.shape), tuple(ints(shape)))
    if math.prod(target) > MAX_CONSTANT:
        refuse(node, f"expands to {math.prod(target):,} elements")
    return x.expand(target) if is_tensor(x) else np.broadcast_to(x, target).copy()


@op("Pad")
def pad(node, x, pads=None, value=None, axes=None):
    pads = ints(attr_or_input(node, "pads", pads))
    mode = node.attrs.get("mode", "constant")
    if axes is not None:
        refuse(node, "pads chosen axes")
    fill = attr_or_input(node, "value", value)
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}
    if mode not in modes:
        refuse(node, f"uses pad mode {mode}")
    pairs = _pairs(pads, x.dim())
    while pairs and pairs[0] == (0, 0) and mode != "constant":
        pairs = pairs[1:]  # reflect / replicate pad only the trailing axes in torch
    return F.pad(x, _torch_pad(pairs), mode=modes[mode],
                 value=float(fill) if mode == "constant" and fill is not None and np.asarray(fill).size else None)


@op("Resize", "Upsample")
def resize(node, x, roi=None, scales=None, sizes=None):
    if node.op == "Upsample" or node.opset < 11:  # (X, scales) before opset 11
        scales, sizes = roi, None
    mode = node.attrs.get("mode", "nearest")
    how = node.attrs.get("coordinate_transformation_mode", "half_pixel" if node.op == "Resize" else "asymmetric")
    if sizes is not None and np.asarray(sizes).size:
        out = ints(sizes)[2:]
    elif scales is not None and np.asarray(scales).size:
        out = [int(math.floor(d * float(s))) for d, s in zip(x.shape[2:], np.asarray(scales).reshape(-1)[2:])]
    else:
        refuse(node, "gives neither scales nor sizes")
    if mode == "linear" and how in ("half_pixel", "pytorch_half_pixel", "align_corners") and x.dim() == 4:
        return F.interpolate(x, size=out, mode="bilinear", align_corners=how == "align_corners")
    if mode == "nearest" and how == "asymmetric" and node.attrs.get("nearest_mode", "floor") == "floor":
        return F.interpolate(x, size=out, mode="nearest")
    refuse(node, f"resizes with mode {mode} and coordinates {how}")
