"""Trace one batch-1 forward pass and count what every operation costs.

Forward hooks on the modules say which leaf module is running; a TorchDispatchMode sees
every ATen operation, including functional ones (`F.relu`, `x + skip`, `torch.flatten`)
that are not modules. Each leaf module call becomes one row with the operations it ran;
a costed operation outside any leaf becomes a row of its own. An operation cnnlab has no
rule for is listed in `Trace.uncounted`, never silently dropped; so is a convolution whose
MACs are counted but which the accelerator model cannot map (transposed, 3-D, or with
different strides or dilations on the two axes): it gets 0 cycles and 0 energy.

Conventions: MACs are multiply-accumulates of convolutions and matrix products; FLOPs
count 2 per MAC (bias additions not included, as torch.utils.flop_counter does), 1 per
element of element-wise operations, 2 per element of an inference batch norm, one per
input element of pooling. The same pass measures the peak of live tensor memory.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.cost.accelerator import conv_problem, fc_problem

aten = torch.ops.aten


@dataclass
class Row:
    name: str
    type: str
    in_shape: tuple
    out_shape: tuple
    params: int = 0
    macs: int = 0
    flops: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    weight_bytes: int = 0
    problems: list = field(default_factory=list)  # accelerator problems (conv and matmul ops)
    module: nn.Module | None = None
    residual_input_bytes: int = 0  # input size of the innermost enclosing residual block


@dataclass
class Trace:
    rows: list
    uncounted: list  # (operation, where) pairs with no cost rule, or no accelerator rule (noted in the operation)
    params: int
    peak_live_bytes: int  # measured: the most bytes held by live tensors at once
    input_bytes: int


def _numel(shape):
    return math.prod(shape) if shape else 1


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _first_tensor(obj):
    return next(iter(_tensors(obj)), None)


# Operations that only move, view or make data: no arithmetic.
_FREE = {
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "clone", "contiguous", "detach",
    "alias", "flatten", "squeeze", "unsqueeze", "select", "slice", "cat", "stack", "split", "split_with_sizes",
    "chunk", "unbind", "zeros", "zeros_like", "empty", "empty_like", "ones", "ones_like", "full", "new_empty",
    "new_zeros", "_to_copy", "copy_", "lift_fresh", "lift_fresh_copy", "constant_pad_nd", "zero_", "fill_",
    "as_strided", "_reshape_alias", "expand_as", "channel_shuffle", "pixel_shuffle", "index_select", "narrow",
    "_native_batch_norm_legit_functional", "dropout", "native_dropout", "feature_dropout", "is_same_size",
    "_local_scalar_dense", "scalar_tensor", "arange", "roll", "flip", "repeat", "unfold",
}
# 1 FLOP per output element.
_ELEMENTWISE = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "relu", "relu_", "hardtanh", "hardtanh_",
    "leaky_relu", "leaky_relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish", "hardswish_",
    "hardsigmoid", "hardsigmoid_", "silu", "silu_", "gelu", "gelu_", "elu", "elu_", "clamp", "clamp_",
    "clamp_min", "clamp_min_", "clamp_max", "neg", "exp", "log", "sqrt", "rsqrt", "pow", "abs", "maximum",
    "minimum", "where", "threshold", "mish", "softplus", "addcmul", "reciprocal", "rsub", "square", "sign",
    "erf",
}
_NORM = {"_native_batch_norm_legit_no_training", "native_batch_norm", "_native_batch_norm_legit",
         "cudnn_batch_norm", "miopen_batch_norm", "native_group_norm", "native_layer_norm"}
_REDUCE = {"mean", "sum", "amax", "max", "amin", "min", "_adaptive_avg_pool2d", "adaptive_max_pool2d",
           "avg_pool2d", "max_pool2d_with_indices", "_softmax", "_log_softmax", "logsumexp", "var", "std",
           "argmax", "avg_pool1d", "adaptive_avg_pool1d", "max_pool2d"}


# Where the arguments of each convolution operation sit: the indices of
# (input, weight, stride, dilation, transposed, groups); `transposed` is an index or a constant.
_CONV_ARGS = {
    "convolution": (0, 1, 3, 5, 6, 8),
    "_convolution": (0, 1, 3, 5, 6, 8),
    "convolution_overrideable": (0, 1, 3, 5, 6, 8),
    "cudnn_convolution": (0, 1, 3, 4, False, 5),
    "mkldnn_convolution": (0, 1, 4, 5, False, 6),
    "cudnn_convolution_transpose": (0, 1, 4, 5, True, 6),
}


def _one_value(values, used):
    """The one stride (or dilation) the accelerator's problem takes for all spatial axes, or
    None when the axes differ. An axis where it has no effect (one output, or a kernel of
    one) does not count."""
    vals = [int(v) for v in values]
    if len(set(vals)) == 1:
        return vals[0]
    relevant = {v for v, u in zip(vals, used) if u}
    if len(relevant) > 1:
        return None
    return relevant.pop() if relevant else 1


def _conv_cost(name, args, out):
    """(MACs, FLOPs, accelerator problems, why the accelerator cannot run it or None)."""
    ix, iw, istride, idil, itrans, igroups = _CONV_ARGS[name]
    x, w = args[ix], args[iw]
    stride, dilation, groups = args[istride], args[idil], int(args[igroups])
    transposed = itrans if isinstance(itrans, bool) else bool(args[itrans])
    o = _first_tensor(out)
    dims = w.dim() - 2
    k = _numel(w.shape[2:])
    if transposed:
        # weight (C_in, C_out/groups, *kernel): every input element meets C_out/groups x kernel weights
        # (what PyTorch computes and torch.utils.flop_counter counts, the products cut off by padding included).
        macs = x.numel() * w.shape[1] * k
        return macs, 2 * macs, [], f"conv_transpose{dims}d: no accelerator rule, 0 cycles and energy"
    # weight (C_out, C_in/groups, *kernel): one dot product of C_in/groups x kernel per output element;
    # dilation spreads the taps but does not change their number.
    macs = o.numel() * w.shape[1] * k
    if dims not in (1, 2):
        return macs, 2 * macs, [], f"conv{dims}d: no accelerator rule, 0 cycles and energy"
    # A 1-d convolution is the 2-d one PyTorch runs it as: height 1, kernel 1 x k.
    kernel = (1, *w.shape[2:]) if dims == 1 else tuple(w.shape[2:])
    out_hw = (1, *o.shape[2:]) if dims == 1 else tuple(o.shape[2:])
    strides = (1, *stride) if dims == 1 else tuple(stride)
    dilations = (1, *dilation) if dims == 1 else tuple(dilation)
    s = _one_value(strides, [e > 1 for e in out_hw])
    d = _one_value(dilations, [e > 1 for e in kernel]) if max(kernel) > 1 else 1
    if s is None or d is None:
        what = " and ".join(f"{label} {'x'.join(map(str, v))}" for label, v, one in
                            (("stride", strides, s), ("dilation", dilations, d)) if one is None)
        return (macs, 2 * macs, [], f"conv{dims}d with {what}: the accelerator model takes one stride and one "
                                    f"dilation for both axes, 0 cycles and energy")
    n = x.shape[0] if x.dim() == dims + 2 else 1
    probs = [conv_problem(x.shape[-dims - 1], w.shape[0], kernel[0], kernel[1], s, out_hw[0], out_hw[1],
                          groups, d)] * n
    return macs, 2 * macs, probs, None


def op_cost(name, args, out):
    """(MACs, FLOPs, accelerator problems, note) of one ATen operation, or None when unknown.
    `note` says why an operation with MACs has no accelerator problem (else None)."""
    if name in _CONV_ARGS:
        return _conv_cost(name, args, out)
    if name in ("mm", "addmm", "bmm", "baddbmm"):
        a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
        batch = a.shape[0] if a.dim() == 3 else 1
        m, kdim, n = a.shape[-2], a.shape[-1], b.shape[-1]
        macs = batch * m * kdim * n
        return macs, 2 * macs, [fc_problem(kdim, n, rows=batch * m)], None
    if name in _FREE:
        return 0, 0, [], None
    o = _first_tensor(out)
    if name in _ELEMENTWISE:
        return 0, o.numel() if o is not None else 0, [], None
    if name in _NORM:
        return 0, 2 * _first_tensor(args).numel(), [], None
    if name in _REDUCE:
        return 0, _first_tensor(args).numel(), [], None
    return None


class _Counter(TorchDispatchMode):
    """Sees every ATen op: costs it, and tracks live tensor storages for the memory peak."""

    def __init__(self, tracer, weights):
        super().__init__()
        self.tracer = tracer
        # Views of weights (a transposed Linear weight) are not activations.
        self.weights = {t.untyped_storage()._cdata for t in weights}
        self.live = {}  # storage key -> [bytes, live tensor count]
        self.live_bytes = 0
        self.peak = 0

    def track(self, t):
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = st._cdata  # one per storage, shared by its views; works for meta tensors too
        if key in self.weights:
            return
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [st.nbytes(), 0]
            self.live_bytes += entry[0]
            self.peak = max(self.peak, self.live_bytes)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key):
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.live_bytes -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.tracer.on_op(func.overloadpacket.__name__, args, out)
        for t in _tensors(out):
            self.track(t)
        return out


def _is_residual_block(m: nn.Module) -> bool:
    flag = getattr(m, "cost_residual", None)
    if flag is not None:
        return bool(flag)
    name = type(m).__name__
    if name in ("BasicBlock", "Bottleneck", "SpecResidual"):
        return True
    if name == "InvertedResidual":  # only with its skip connection
        return bool(getattr(m, "use_res_connect", getattr(m, "residual", True)))
    return False


class _Tracer:
    def __init__(self, model):
        self.model = model
        self.rows = []
        self.uncounted = []
        self.stack = []  # (name, module) of the modules running now
        self.current = None  # the Row of the leaf module running now
        self.block_inputs = []  # input bytes of the residual blocks running now
        self.seen = {}
        self.param_ids = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}

    def where(self):
        return self.stack[-1][0] if self.stack else "(model)"

    def on_op(self, name, args, out):
        cost = op_cost(name, args, out)
        if cost is None:
            self.uncounted.append((f"aten.{name}", self.where()))
            return
        macs, flops, probs, note = cost
        if note:  # counted, but with no accelerator rule: its cycles and energy are missing
            self.uncounted.append((f"aten.{name} ({note})", self.where()))
        if self.current is not None:
            self.current.macs += macs
            self.current.flops += flops
            self.current.problems += probs
            return
        if macs == 0 and flops == 0:
            return
        ins = [t for t in _tensors(args) if id(t) not in self.param_ids]
        o = _first_tensor(out)
        row = Row(f"{self.where()}:{name}" if self.stack else name, f"aten.{name}",
                  tuple(ins[0].shape) if ins else (), tuple(o.shape) if o is not None else (),
                  macs=macs, flops=flops, problems=list(probs),
                  in_bytes=sum(t.numel() * t.element_size() for t in ins),
                  out_bytes=o.numel() * o.element_size() if o is not None else 0,
                  residual_input_bytes=self.block_inputs[-1] if self.block_inputs else 0)
        self.rows.append(row)

    def pre_hook(self, name, module, inputs):
        self.stack.append((name, module))
        if _is_residual_block(module):
            x = _first_tensor(inputs)
            self.block_inputs.append(x.numel() * 4 if x is not None else 0)
        if not any(True for _ in module.children()):
            count = self.seen.get(name, 0)
            self.seen[name] = count + 1
            ins = list(_tensors(inputs))
            own = list(module.parameters(recurse=False))
            self.current = Row(
                name if count == 0 else f"{name}#{count + 1}", type(module).__name__,
                tuple(ins[0].shape) if ins else (), (),
                params=sum(p.numel() for p in own) if count == 0 else 0,
                in_bytes=sum(t.numel() * t.element_size() for t in ins),
                weight_bytes=sum(p.numel() * p.element_size() for p in own),
                module=module, residual_input_bytes=self.block_inputs[-1] if self.block_inputs else 0)

    def post_hook(self, name, module, inputs, output):
        if self.current is not None and self.current.module is module:
            o = _first_tensor(output)
            self.current.out_shape = tuple(o.shape) if o is not None else ()
            self.current.out_bytes = sum(t.numel() * t.element_size() for t in _tensors(output))
            self.rows.append(self.current)
            self.current = None
        if _is_residual_block(module):
            self.block_inputs.pop()
        self.stack.pop()


def as_torch_model(model) -> nn.Module:
    """A torch module from a torch module or anything with `to_torch()` (the NumPy engine's models)."""
    if isinstance(model, nn.Module):
        return model
    if hasattr(model, "to_torch"):
        return model.to_torch()
    raise TypeError(f"cannot cost a {type(model).__name__}: give a torch.nn.Module or an object with to_torch()")


def trace(model, in_shape, device: str = "meta") -> Trace:
    """Run one (1, *in_shape) forward pass in eval mode and count every operation.

    By default the pass runs on PyTorch's "meta" device: shapes only, no arithmetic, so a
    large model costs milliseconds. A model whose forward needs real values (it reads a
    tensor's contents) is run again on the CPU with its own weights.
    """
    model = as_torch_model(model)
    if device == "meta":
        try:
            return _trace(model, in_shape, meta=True)
        except (NotImplementedError, RuntimeError):
            pass
    return _trace(model, in_shape, meta=False)


def _trace(model, in_shape, meta: bool) -> Trace:
    tracer = _Tracer(model)
    handles = []
    for name, m in model.named_modules():
        label = name or type(m).__name__
        handles.append(m.register_forward_pre_hook(lambda mod, inp, n=label: tracer.pre_hook(n, mod, inp)))
        handles.append(m.register_forward_hook(lambda mod, inp, out, n=label: tracer.post_hook(n, mod, inp, out)))
    was_training = model.training
    model.eval()
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(model.named_buffers(remove_duplicate=False))
    if meta:
        state = {k: torch.empty_like(v, device="meta") for k, v in state.items()}
    tracer.param_ids = {id(v) for v in state.values()}
    p = next(iter(state.values()), None)
    x = torch.zeros((1, *in_shape), dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32,
                    device="meta" if meta else (p.device if p is not None else "cpu"))
    counter = _Counter(tracer, state.values())
    try:
        with torch.no_grad(), counter:
            counter.track(x)
            out = torch.func.functional_call(model, state, (x,)) if meta else model(x)
            del out
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return Trace(tracer.rows, tracer.uncounted, params, counter.peak, x.numel() * x.element_size())
