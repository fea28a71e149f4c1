"""Parameter, MAC and activation counts against hand-computed values."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.commands.common import parse_bytes
from cnnlab.cost.report import analyze, format_table
from cnnlab.cost.trace import trace
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models


def by_name(rep):
    return {r.name: r for r in rep.rows}


def test_lenet5_hand_counts():
    rep = analyze(create_model("lenet5", 10, 3, 32), (3, 32, 32))
    rows = by_name(rep)
    # (params, MACs): conv1 3->6 k5 on 32x32 (no padding) -> 28x28, conv2 6->16 k5 on 14x14 -> 10x10, fc 400-120-84-10
    expected = {"features.0": (3 * 6 * 25 + 6, 6 * 28 * 28 * 3 * 25), "features.3": (6 * 16 * 25 + 16, 16 * 10 * 10 * 6 * 25),
                "classifier.1": (400 * 120 + 120, 400 * 120), "classifier.3": (120 * 84 + 84, 120 * 84),
                "classifier.5": (84 * 10 + 10, 84 * 10)}
    for name, (params, macs) in expected.items():
        assert (rows[name].params, rows[name].macs, rows[name].flops) == (params, macs, 2 * macs), name
    assert rep.totals["params"] == 62006 == sum(p for p, _ in expected.values())
    assert rep.totals["macs"] == 651720
    assert rows["features.1"].flops == 6 * 28 * 28  # a ReLU: one per element
    # Competition rule: conv1 (3*32*32 + 6*28*28) * 4 bytes.
    assert rep.peak_activation == 31104 and rep.peak_layer == "features.0"
    assert rows["features.0"].in_bytes == 3 * 32 * 32 * 4 and rows["features.0"].out_bytes == 6 * 28 * 28 * 4
    # Measured: input, conv1 output and ReLU output alive together.
    assert rep.peak_live_bytes == (3 * 32 * 32 + 2 * 6 * 28 * 28) * 4
    assert rep.uncounted == []


def resnet20_by_hand():
    """(params, MACs) of the CIFAR ResNet-20 (He et al., 2016) with identity (zero-pad) shortcuts."""
    params = 3 * 16 * 9 + 2 * 16  # stem conv + bn
    macs = 16 * 32 * 32 * 3 * 9
    c_in, size = 16, 32
    for width in (16, 32, 64):
        for block in range(3):
            stride = 2 if (block == 0 and width != 16) else 1
            size //= stride
            for cin in (c_in, width):
                params += cin * width * 9 + 2 * width
                macs += width * size * size * cin * 9
            c_in = width
    return params + 64 * 10 + 10, macs + 64 * 10


def test_resnet20_hand_counts():
    # A registry that lost resnet20 (a zoo module failing to import or register) is a failure here,
    # not a reason to skip the check.
    assert "resnet20" in list_models("zoo"), "resnet20 is not registered: the model registry is broken"
    model = create_model("resnet20", 10, 3, 32)
    rep = analyze(model, (3, 32, 32))
    params, macs = resnet20_by_hand()
    assert (rep.totals["params"], rep.totals["macs"]) == (params, macs) == (269722, 40551040)
    # The residual rule adds the block input (16x32x32 x 4 B) to the first block's conv:
    # (16*32*32 + 16*32*32) * 4 + 16*32*32 * 4.
    assert rep.peak_activation == 196608
    # The skip additions run outside leaf modules and are still counted.
    adds = [r for r in rep.rows if r.type.startswith("aten.add")]
    assert len(adds) == 9


def test_depthwise_separable_block():
    block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 64, 1, bias=False))
    rep = analyze(block, (32, 16, 16))
    rows = by_name(rep)
    assert (rows["0"].params, rows["0"].macs) == (32 * 9, 32 * 16 * 16 * 9)
    assert (rows["3"].params, rows["3"].macs) == (32 * 64, 64 * 16 * 16 * 32)
    assert rows["1"].params == 64 and rows["1"].flops == 2 * 32 * 16 * 16
    assert rows["0"].problems[0].kind == "depthwise"
    # Conv2d rule: (input + output / groups) elements.
    assert rows["0"].activation_bytes == (32 * 256 + 32 * 256 // 32) * 4
    assert rep.totals["cycles"] == rows["0"].cycles + rows["3"].cycles > 0


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = x + torch.sigmoid(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = F.linear(x, self.fc.weight) * 2.0
        return torch.cumsum(x, dim=1)  # no cost rule: must be listed


def test_functional_ops_are_counted_and_unknown_ops_listed():
    rep = analyze(Functional(), (3, 8, 8))
    types = [r.type for r in rep.rows]
    assert "aten.relu" in types and "aten.add" in types and "aten.sigmoid" in types
    mm = [r for r in rep.rows if r.type in ("aten.mm", "aten.addmm")]
    assert len(mm) == 1 and mm[0].macs == 8 * 4 and mm[0].problems and mm[0].cycles > 0
    assert rep.totals["macs"] == 8 * 8 * 8 * 27 + 32
    assert rep.uncounted == [("aten.cumsum", "Functional")]
    assert "NOT COUNTED" in format_table(rep) and "aten.cumsum" in format_table(rep)
    # Only leaves count in the competition rule; the fc module was never called as a module.
    assert rep.peak_layer == "conv"


def test_objects_with_to_torch_are_accepted():
    class NumpyNet:
        def to_torch(self):
            return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))

    rep = analyze(NumpyNet(), (3, 2, 2))
    assert rep.totals["params"] == 26 and rep.totals["macs"] == 24


def test_trace_leaves_the_model_as_it_was():
    model = create_model("lenet5", 10, 3, 32).train()
    trace(model, (3, 32, 32))
    assert model.training
    assert not model._forward_hooks and not model.features[0]._forward_pre_hooks


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_is_fully_counted(name):
    rep = analyze(create_model(name, 10, 3, 32), (3, 32, 32))
    assert rep.uncounted == [], rep.uncounted
    assert rep.totals["params"] == sum(p.numel() for p in create_model(name, 10, 3, 32).parameters())
    assert rep.totals["macs"] > 0 and rep.totals["cycles"] > 0 and rep.peak_activation > 0


def test_parse_bytes():
    assert parse_bytes("1MB") == 1_000_000
    assert parse_bytes("1MiB") == 1_048_576
    assert parse_bytes("512 KiB") == 524288
    assert parse_bytes("250000") == 250000
    with pytest.raises(CnnlabError, match="bad size"):
        parse_bytes("lots")


@pytest.mark.parametrize("name", list_models())
def test_quick_mac_count_of_the_model_list_equals_the_cost_analysis(name):
    from cnnlab.models.summary import count_macs

    model = create_model(name, 10, 3, 32)
    assert count_macs(model, (3, 32, 32)) == analyze(model, (3, 32, 32)).totals["macs"]
