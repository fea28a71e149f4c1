"""Costing a submitted ONNX file (cnnlab.cost.onnx_graph): every registered model, exported as `cnnlab
export` exports it, costs the cycles, MACs, energy and peak activation of its PyTorch module, holds
its parameters less what the exporter folded away, and computes what ONNX Runtime computes. Also the
other exporter, input adapters and baked normalisation; and what it refuses, in one line."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
import torch.utils._pytree as pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.build import build_for
from cnnlab.cost import analyze
from cnnlab.cost.onnx_graph import OnnxModule
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models
from cnnlab.workflows.export import model_metadata, onnx_bytes
from cnnlab.workflows.export.tracing import with_normalization

CLASSES = [f"c{i}" for i in range(10)]
# Narrower versions (the same layers, fewer channels) of the models with a width argument: exporting
# ResNet-50's 94 MB of weights takes seconds and tests nothing the narrow one does not.
NARROW = {"resnet18": {"base": 16}, "resnet34": {"base": 16}, "resnet50": {"base": 16}, "preact_resnet18": {"base": 16},
          "se_resnet18": {"base": 16}, "resnet9": {"width": 16}, "vgg11_bn": {"width": 0.25},
          "vgg16_bn": {"width": 0.25}, "densenet_bc_100": {"depth": 40}, "efficientnet_b0": {"width": 0.5},
          "mobilenet_v2": {"width": 0.5}, "shufflenet_v2": {"width": 0.5}, "fastnet": {"widths": (16, 32, 32)}}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One thread (tests/conftest.py): tiny batches gain nothing from more."""


class _Uses(TorchDispatchMode):
    """How many ATen operations take each tensor as an input (every tensor is kept alive, so no id
    is reused during the pass)."""

    def __init__(self):
        super().__init__()
        self.uses, self.kept = Counter(), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for a in pytree.tree_leaves((args, kwargs or {})):
            if isinstance(a, torch.Tensor):
                self.uses[id(a)] += 1
                self.kept.append(a)
        out = func(*args, **(kwargs or {}))
        self.kept.append(out)
        return out


def folded_norm_params(model, shape) -> int:
    """Parameters torch.onnx folds away in eval mode: a batch norm that alone uses a convolution's
    output goes into that convolution (its 2 per channel), which gains a bias (1 per channel) if it
    had none."""
    made, pairs = {}, []

    def conv_out(m, i, o):
        made[id(o)] = (m, o)

    def norm_in(m, i):
        if id(i[0]) in made:
            pairs.append((made[id(i[0])], m))

    hooks = [m.register_forward_hook(conv_out) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(norm_in) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    counter = _Uses()
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sum(2 * bn.num_features - (bn.num_features if conv.bias is None else 0)
               for (conv, out), bn in pairs if counter.uses[id(out)] == 1)


def randomise_norms(model):
    """Batch norms with statistics of their own, so that folding them changes the weights."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def check_equivalent(net, shape, data, folded=None):
    graph = OnnxModule(data)
    assert graph.input_shape == tuple(shape)
    want, got = analyze(net, shape), analyze(graph, shape)
    for key in ("cycles", "macs"):
        assert got.totals[key] == want.totals[key], key
    assert got.totals["energy_pj"] == pytest.approx(want.totals["energy_pj"], rel=1e-12)
    assert got.peak_activation == want.peak_activation
    folded = folded_norm_params(net, shape) if folded is None else folded
    assert got.totals["params"] == want.totals["params"] - folded
    assert {op for op, _ in got.uncounted} == {op for op, _ in want.uncounted}
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        out = graph(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    return want, got


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_costs_as_its_pytorch_module(name):
    shape = (3, 32, 32)
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, in_channels=3, input_size=shape[1:], **NARROW.get(name, {})).eval()
    randomise_norms(net)
    data = onnx_bytes(net, model_metadata(name, shape, CLASSES, [0.5] * 3, [0.25] * 3, "onnx"))
    check_equivalent(net, shape, data)


def test_residual_blocks_count_their_input_as_the_pytorch_rule_does():
    """ResNet-20's peak is a block's first convolution plus the block's input, held for the addition."""
    net = create_model("resnet20", num_classes=10, in_channels=3, input_size=(32, 32)).eval()
    data = onnx_bytes(net, model_metadata("resnet20", (3, 32, 32), CLASSES, [0.5] * 3, [0.25] * 3, "onnx"))
    _, got = check_equivalent(net, (3, 32, 32), data)
    assert got.peak_activation == (16 * 32 * 32 * 2 + 16 * 32 * 32) * 4
    assert "." in got.peak_layer  # inside a residual block module


def test_the_dynamo_exporter_adapters_and_baked_normalisation():
    net = create_model("resnet20", num_classes=10, in_channels=3, input_size=(32, 32)).eval()
    meta = model_metadata("resnet20", (3, 32, 32), CLASSES, [0.5] * 3, [0.25] * 3, "onnx")
    # the dynamo exporter writes every batch norm as element-wise arithmetic on constants: its parameters go
    norms = sum(2 * m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    check_equivalent(net, (3, 32, 32), onnx_bytes(net, meta, opset=18, exporter="dynamo"), norms)
    # a model that resizes and repeats 1x28x28 digits itself (--resize 32 --input-channels 3), normalisation baked in
    net = build_for({"model": "c8k3-bn-relu-r[c8k3-bn-relu-c8k3-bn]-relu-gap", "resize": 32, "input_channels": 3},
                    (1, 28, 28), 10).eval()
    meta = model_metadata("spec", (1, 28, 28), CLASSES, [0.13], [0.31], "onnx", bake_normalization=True)
    meta["input"]["adapter"] = {"resize": 32, "input_channels": 3}
    data = onnx_bytes(net, meta)
    assert {"Resize", "Expand"} <= {n.op_type for n in onnx.load_from_string(data).graph.node}
    check_equivalent(with_normalization(net, meta), (1, 28, 28), data, folded_norm_params(net, (1, 28, 28)))


# ---- refusals -----------------------------------------------------------------------------------------

def _graph(nodes, inputs=None, initializers=(), opset=17):
    inputs = inputs or [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", inputs, [out], initializer=list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def refusal(data) -> str:
    with pytest.raises(CnnlabError) as e:
        OnnxModule(data)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_what_it_cannot_cost_is_one_line_naming_it():
    assert "Hardmax" in refusal(_graph([helper.make_node("Hardmax", ["input"], ["logits"], name="h")]))
    custom = _graph([helper.make_node("Gelu", ["input"], ["logits"], domain="com.microsoft", name="g")])
    assert "com.microsoft" in refusal(custom)
    external = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    external.data_location = TensorProto.EXTERNAL
    external.ClearField("float_data")
    entry = external.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    assert "stored in another file" in refusal(_graph([helper.make_node("Add", ["input", "w"], ["logits"])],
                                                      initializers=[external]))
    two = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, 4, 4]) for n in ("input", "other")]
    assert "one input" in refusal(_graph([helper.make_node("Add", ["input", "other"], ["logits"])], two))
    dynamic = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    assert "fixed C, H and W" in refusal(_graph([helper.make_node("Relu", ["input"], ["logits"])], dynamic))
    huge = helper.make_tensor("shape", TensorProto.INT64, [4], [1 << 20, 1 << 20, 1, 1])
    big = _graph([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="big"),
                  helper.make_node("Add", ["input", "c"], ["logits"])], initializers=[huge])
    assert "big" in refusal(big)
    assert "not an ONNX model" in refusal(b"\x08\x07garbage that is no protobuf")
    backwards = _graph([helper.make_node("Relu", ["hidden"], ["logits"], name="second"),
                        helper.make_node("Relu", ["input"], ["hidden"], name="first")])
    assert "second" in refusal(backwards) and "out of order" in refusal(backwards)


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_an_int8_export_costs_as_its_float_model_and_computes_what_ort_computes(name, shape):
    """`cnnlab export --int8` writes QDQ graphs (ONNX Runtime's static quantization): the quantize and
    dequantize nodes are elementwise, and a weight's dequantization folds into a constant, so the file
    costs what the float model costs, and the interpreter computes ONNX Runtime's scores."""
    from cnnlab.workflows.export.onnx import onnx_int8

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=shape[0], input_size=shape[1:]).eval()
    meta = model_metadata(name, shape, CLASSES, [0.5] * shape[0], [0.25] * shape[0], "onnx")
    data = onnx_int8(model, meta, torch.randn(64, *shape, generator=torch.Generator().manual_seed(1)))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load_from_string(data).graph.node}
    want, got = analyze(model, shape), analyze(OnnxModule(data), shape)
    for key in ("cycles", "macs", "energy_pj"):
        assert got.totals[key] == pytest.approx(want.totals[key], rel=1e-12), key
    assert got.peak_activation == want.peak_activation
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(2))
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        out = OnnxModule(data)(x).numpy()
    # the same integer arithmetic, up to float32 rounding in a scale: at most one quantization step apart
    assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max() and (out.argmax(1) == ref.argmax(1)).all()
