"""An ONNX graph as a PyTorch module, so the cost model costs an exported file as the network it came from.

    from cnnlab.cost.onnx_graph import OnnxModule
    net = OnnxModule(data)                   # ONNX bytes or a ModelProto; unknown or unsafe: one line
    rep = analyze(net, net.input_shape)      # cycles, energy, MACs, params, peak activation of the file
    logits = net(torch.randn(8, *net.input_shape))    # what ONNX Runtime computes, with torch ops

A class competition receives models as ONNX files, and the cost model (`cnnlab.cost.analyze`)
costs PyTorch modules: it charges convolutions and matrix products by their ATen operations and
the competition's activation rule by leaf module type. So each node becomes what the PyTorch
model ran (the table is `cnnlab.cost.onnx_ops.OPS`): Conv an `nn.Conv2d`, Gemm and a MatMul by
a constant an `nn.Linear`, BatchNormalization a batch-norm module, Relu, Clip(0, 6), Sigmoid,
Tanh, LeakyRelu, HardSwish and Elu their activation modules; everything else runs as torch
functions. Constants and shape arithmetic (Shape, Gather, Unsqueeze, Concat, ... of shape
values) are computed with numpy, once when built or in Python at run time, so they cost what
Python integers cost the PyTorch model: nothing.

Residual blocks: an Add of two computed tensors closes one. Its nodes (those that depend on the
tensor where the two branches split and lead to the Add) run inside a module marked
`cost_residual`, so the rule counts the block's input as live until the addition, as it does
for `BasicBlock` and `r[...]`; blocks nest. Every registered model, exported by `cnnlab export`,
costs the same cycles, energy, MACs and peak activation as its PyTorch module
(tests/cost/test_onnx_graph.py). Parameters are the file's: batch norms the exporter folded
into the convolution before them are not in the file (2 per channel fewer each, plus the bias
the fold gives a convolution that had none).

Refused, one CnnlabError line naming the node: an operator outside OPS or from another domain,
tensors stored outside the file (external data), a graph without exactly one input of static
(C, H, W) shape and one output, computed constants over MAX_CONSTANT elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnlab.cost.onnx_ops import MAX_CONSTANT, OPS, as_tensor, is_tensor, refuse
from cnnlab.errors import CnnlabError


@dataclass
class Node:
    index: int
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict
    opset: int


def load_proto(data):
    """A ModelProto from bytes (or a ModelProto), or a one-line CnnlabError."""
    import onnx

    if isinstance(data, onnx.ModelProto):
        return data
    try:
        return onnx.load_from_string(bytes(data))
    except Exception as e:  # protobuf's DecodeError and friends  # noqa: BLE001
        raise CnnlabError(f"not an ONNX model, or a damaged one ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})"
                          ": give a file written by `cnnlab export RUN_DIR --format onnx`") from None


def _array(tensor, where: str):
    import onnx
    from onnx import numpy_helper

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise CnnlabError(f"the ONNX tensor '{tensor.name}' ({where}) is stored in another file: cnnlab reads "
                          "self-contained files; export the model again with `cnnlab export`")
    arr = numpy_helper.to_array(tensor)
    if arr.size > MAX_CONSTANT:
        raise CnnlabError(f"the ONNX tensor '{tensor.name}' ({where}) has {arr.size:,} elements: too large to cost")
    return arr


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        if a.type == a.TENSOR:
            out[a.name] = _array(a.t, f"attribute of {node.name or node.op_type}")
        elif a.type in (a.GRAPH, a.GRAPHS, a.SPARSE_TENSOR, a.SPARSE_TENSORS):
            out[a.name] = None  # refused below: cnnlab's operators take no subgraphs
        else:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _nodes(proto) -> list[Node]:
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = []
    for i, n in enumerate(proto.graph.node):
        node = Node(i, n.op_type, n.name or f"{n.op_type}_{i}", list(n.input), list(n.output), _attrs(n), opset)
        if n.domain not in ("", "ai.onnx"):
            refuse(node, f"is from the operator domain '{n.domain}'")
        if n.op_type not in OPS:
            refuse(node, "is not an operator cnnlab can cost")
        if any(v is None for v in node.attrs.values()):
            refuse(node, "holds a subgraph or sparse tensor")
        nodes.append(node)
    return nodes


def call(node, args):
    """Run one node on its input values (tensors, numpy arrays, None); a tuple of its outputs."""
    entry = OPS[node.op]
    if not entry.numpy and not any(is_tensor(a) for a in args):
        args = [as_tensor(a) for a in args]  # constants through a torch-only operator
    out = entry.fn(node, *args)
    return out if isinstance(out, tuple) else (out,)


def _numpy(v):
    return v.detach().cpu().numpy() if is_tensor(v) else np.asarray(v)


# ---- the structure: constants, activations, residual blocks ------------------------------------

class _Graph:
    """The parsed graph: folded constants, which tensors are activations, and the residual blocks."""

    def __init__(self, proto):
        g = proto.graph
        if len(g.input) - len({t.name for t in g.initializer} & {i.name for i in g.input}) != 1 or len(g.output) != 1:
            raise CnnlabError("the ONNX graph must have one input (a batch of images) and one output (the scores): "
                              "export the model with `cnnlab export RUN_DIR --format onnx`")
        self.consts = {t.name: _array(t, "initializer") for t in g.initializer}
        if g.sparse_initializer:
            raise CnnlabError("the ONNX graph holds sparse initializers: export the model with `cnnlab export`")
        self.input = next(i.name for i in g.input if i.name not in self.consts)
        self.output = g.output[0].name
        dims = g.input[[i.name for i in g.input].index(self.input)].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(shape) != 4 or None in shape[1:]:
            raise CnnlabError(f"the ONNX graph's input '{self.input}' has shape {shape}, not (batch, C, H, W) with "
                              "fixed C, H and W: export the model with `cnnlab export RUN_DIR --format onnx`")
        self.input_shape = tuple(int(v) for v in shape[1:])
        self.nodes = _nodes(proto)
        known = {self.input, *self.consts}
        for n in self.nodes:
            missing = next((i for i in n.inputs if i and i not in known), None)
            if missing is not None:
                refuse(n, f"reads '{missing}' before any node makes it (a graph out of order, or damaged)")
            known.update(o for o in n.outputs if o)
        if self.output not in known:
            raise CnnlabError(f"no node of the ONNX graph makes its output '{self.output}': the file is damaged")
        self.run = [n for n in self.nodes if not self._fold(n)]  # nodes left for run time, in order
        self.producer = {o: n.index for n in self.run for o in n.outputs if o}
        self.activations = {self.input}
        for n in self.run:
            if n.op != "Shape" and n.op != "Size" and any(i in self.activations for i in n.inputs):
                self.activations.update(o for o in n.outputs if o)
        if self.output not in self.activations:
            raise CnnlabError("the ONNX graph's output does not depend on its input: it is not a classifier")

    def _fold(self, n: Node) -> bool:
        """Compute a node whose inputs are all constants, once; True when it was."""
        if any(i and i not in self.consts for i in n.inputs):
            return False
        outs = call(n, [self.consts[i] if i else None for i in n.inputs])
        for name, v in zip(n.outputs, outs):
            if name:
                v = _numpy(v)
                if v.size > MAX_CONSTANT:
                    refuse(n, f"makes a constant of {v.size:,} elements")
                self.consts[name] = v
        return True

    def blocks(self, is_leaf) -> list:
        """Residual blocks, innermost first: (input tensor, set of node indices, the Add's index).
        Only blocks that hold a leaf module (`is_leaf(node)`) and nest cleanly are kept."""
        order = {n.index: k for k, n in enumerate(self.run)}
        bit = {}  # activation tensor -> its bit, in execution order (the input first)
        for name in [self.input] + [o for n in self.run for o in n.outputs if o in self.activations]:
            bit.setdefault(name, len(bit))
        up = {self.input: 1 << bit[self.input]}  # activation tensor -> activation tensors it depends on (itself too)
        node_up = {}  # node index -> nodes it depends on (itself too), as a bit set over run order
        for n in self.run:
            mask = 1 << order[n.index]
            for i in n.inputs:
                if i in self.producer:
                    mask |= node_up[self.producer[i]]
            node_up[n.index] = mask
            for o in n.outputs:
                if o in self.activations:
                    up[o] = (1 << bit[o]) | _or(up.get(i, 0) for i in n.inputs if i in self.activations)
        by_bit = {b: name for name, b in bit.items()}
        found = []
        for n in self.run:
            if n.op != "Add" or len([i for i in n.inputs if i in self.activations]) != 2:
                continue
            common = up[n.inputs[0]] & up[n.inputs[1]]
            if not common:
                continue
            split = by_bit[common.bit_length() - 1]  # the latest tensor both branches come from
            members = {m.index for m in self.run if node_up[n.index] >> order[m.index] & 1
                       and any(i in up and up[i] >> bit[split] & 1 for i in m.inputs)}
            if any(is_leaf(self.nodes[m]) for m in members):
                found.append((split, frozenset(members), n.index))
        kept = []
        for block in sorted(found, key=lambda b: len(b[1])):
            if all(k[1] < block[1] or not (k[1] & block[1]) for k in kept):
                kept.append(block)
        return kept


def _or(masks):
    out = 0
    for m in masks:
        out |= m
    return out


# ---- the module -----------------------------------------------------------------------------------

@dataclass
class _Step:
    node: Node | None = None
    key: str | None = None  # the module that runs it, an attribute of the step list's owner
    block_input: str | None = None  # set for a residual block: its key names the _Block


def _run(owner: nn.Module, steps, env: dict):
    for step in steps:
        if step.block_input is not None:
            getattr(owner, step.key)(env[step.block_input], env)
            continue
        node = step.node
        if step.key is not None:
            module = getattr(owner, step.key)
            x = env[node.inputs[0]]
            if getattr(module, "onnx_pre_pad", None):
                x = torch.nn.functional.pad(x, module.onnx_pre_pad)
            outs = (module(x),)
        else:
            outs = call(node, [env[i] if i else None for i in node.inputs])
        for name, v in zip(node.outputs, outs):
            if name:
                env[name] = v


class _Block(nn.Module):
    """A residual block of the graph: its nodes run here, so the cost model sees the block's input."""

    cost_residual = True

    def __init__(self):
        super().__init__()
        self.steps = []

    def forward(self, x, env):
        _run(self, self.steps, env)


def _scope(node: Node) -> list[str]:
    """The module scopes in a node name from torch.onnx ('/layer1/layer1.0/conv1/Conv' -> [..., 'conv1'])."""
    parts = [p for p in node.name.split("/") if p]
    return parts[:-1] if len(parts) > 1 else []


def _common_prefix(lists: list) -> list:
    out = lists[0]
    for other in lists[1:]:
        k = 0
        while k < min(len(out), len(other)) and out[k] == other[k]:
            k += 1
        out = out[:k]
    return out


def _key(owner: nn.Module, wanted: str) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in wanted).strip("_") or "node"
    base = base if not base[0].isdigit() else f"n{base}"
    key, k = base, 2
    while hasattr(owner, key):
        key, k = f"{base}_{k}", k + 1
    return key


class OnnxModule(nn.Module):
    """An ONNX classifier as an nn.Module; `input_shape` is its (C, H, W). See the module docstring."""

    def __init__(self, model):
        super().__init__()
        g = _Graph(load_proto(model))
        self.input_shape, self.model_name = g.input_shape, "onnx"
        self._input, self._output = g.input, g.output
        modules = {}
        for n in g.run:
            entry = OPS[n.op]
            if entry.module is not None and n.inputs and n.inputs[0] in g.activations:
                m = entry.module(n, [g.consts.get(i) if i else None for i in n.inputs])
                if m is not None:
                    modules[n.index] = m
        blocks = g.blocks(lambda n: n.index in modules)
        try:
            self.steps = self._place(self, g, {n.index for n in g.run}, blocks, modules)
        except _Unordered:  # blocks that no order can run one after another: cost without them
            for name, _ in list(self.named_children()):
                delattr(self, name)
            self.steps = self._place(self, g, {n.index for n in g.run}, [], modules)
        used = {i for n in g.run for i in (n.inputs[:1] if n.index in modules else n.inputs)}
        self._consts = {k: v for k, v in g.consts.items() if k in used}

    def _place(self, owner, g: _Graph, members: set, blocks: list, modules: dict) -> list:
        """The steps that run `members` (node indices) in `owner`, each outermost block as one step."""
        outer = [b for b in blocks if not any(b[1] < o[1] for o in blocks if o is not b)]
        in_block = {i: b for b in outer for i in b[1]}
        units = {}  # unit id -> node indices: a node alone, or an outermost block
        for i in members:
            b = in_block.get(i)
            units.setdefault(("b", b[2]) if b else ("n", i), set()).add(i)
        producer_unit = {o: u for u, idx in units.items() for i in idx for o in g.nodes[i].outputs if o}
        deps = {u: {producer_unit[t] for i in idx for t in g.nodes[i].inputs if t in producer_unit} - {u}
                for u, idx in units.items()}
        steps, done = [], set()
        while len(done) < len(units):
            ready = [u for u in units if u not in done and deps[u] <= done]
            if not ready:
                raise _Unordered()
            u = min(ready, key=lambda u: min(units[u]))
            done.add(u)
            if u[0] == "n":
                n = g.nodes[u[1]]
                key = None
                if n.index in modules:
                    scope = _scope(n)
                    prefix = getattr(owner, "scope", [])
                    wanted = scope[-1] if scope and scope != prefix else n.op.lower()
                    key = _key(owner, wanted)
                    owner.add_module(key, modules[n.index])
                steps.append(_Step(n, key))
            else:
                block = next(b for b in outer if b[2] == u[1])
                inner = [b for b in blocks if b[1] < block[1]]
                common = _common_prefix([_scope(g.nodes[i]) for i in block[1]])
                module = _Block()
                module.scope = common
                key = _key(owner, common[-1] if common else "block")
                owner.add_module(key, module)
                module.steps = self._place(module, g, set(block[1]), inner, modules)
                steps.append(_Step(None, key, block[0]))
        return steps

    def forward(self, x):
        env = dict(self._consts)
        env[self._input] = x
        _run(self, self.steps, env)
        return env[self._output]


class _Unordered(Exception):
    pass
