"""Convolutions beyond the plain 2-d one: dilated, 1-d, 3-d and transposed.

Every one gets its MACs and parameters right (checked by hand and against a brute-force
count that computes the layer by its definition); the ones the accelerator model cannot
map are listed as not counted, never given 0 cycles and energy silently.
"""

import itertools
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, LayerCost, Problem, _fills, _tile, layer_cost
from cnnlab.cost.report import analyze, format_table

# (1, 4, 16) in; the comment after each layer is its output (channels, spatial).
LAYERS = nn.Sequential(
    nn.Conv1d(4, 8, 3, dilation=2),  # 0: (8, 12)
    nn.ConvTranspose1d(8, 4, 3, stride=2, padding=1, output_padding=1),  # 1: (4, 24)
    nn.Unflatten(2, (4, 6)),  # 2: (4, 4, 6)
    nn.Conv2d(4, 8, 3, padding=2, dilation=2),  # 3: (8, 4, 6)
    nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, groups=2),  # 4: (6, 7, 11)
    nn.Unflatten(1, (3, 2)),  # 5: (3, 2, 7, 11), depth 2
    nn.Conv3d(3, 4, (2, 3, 3), padding=(0, 1, 1)),  # 6: (4, 1, 7, 11)
    nn.ConvTranspose3d(4, 2, 2, stride=2),  # 7: (2, 2, 14, 22)
)
IN_SHAPE = (4, 16)

# (params, MACs) by hand. A convolution: output elements x C_in/groups x kernel; a transposed
# one: input elements x C_out/groups x kernel (each input element meets that many weights).
EXPECTED = {
    "0": (8 * 4 * 3 + 8, (8 * 12) * 4 * 3),
    "1": (8 * 4 * 3 + 4, (8 * 12) * 4 * 3),
    "3": (8 * 4 * 9 + 8, (8 * 4 * 6) * 4 * 9),  # dilation spreads the taps, it does not add any
    "4": (8 * 3 * 9 + 6, (8 * 4 * 6) * 3 * 9),
    "6": (4 * 3 * 18 + 4, (4 * 1 * 7 * 11) * 3 * 18),
    "7": (4 * 2 * 8 + 2, (4 * 1 * 7 * 11) * 2 * 8),
}
NO_ACCELERATOR_RULE = {"1": "conv_transpose1d", "4": "conv_transpose2d", "6": "conv3d", "7": "conv_transpose3d"}


def by_name(rep):
    return {r.name: r for r in rep.rows}


def brute_force(m, x):
    """The layer's output on one image `x` by the definition, loop by loop, and the number of
    multiplications those loops do (taps on padding included, as for every convolution)."""
    x = x[0].double().numpy()
    w = m.weight.detach().double().numpy()
    nd = x.ndim - 1
    k, s, p, d, g = m.kernel_size, m.stride, m.padding, m.dilation, m.groups
    spatial = x.shape[1:]
    count = 0
    if not m.transposed:  # out[co, o] += x[ci, o*s - p + kk*d] * w[co, ci, kk]
        cout, cin_g = w.shape[:2]
        size = [(spatial[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd)]
        out = np.zeros((cout, *size))
        for co in range(cout):
            base = co // (cout // g) * cin_g
            for o in itertools.product(*map(range, size)):
                for ci in range(cin_g):
                    for kk in itertools.product(*map(range, k)):
                        count += 1
                        pos = tuple(o[i] * s[i] - p[i] + kk[i] * d[i] for i in range(nd))
                        if all(0 <= pos[i] < spatial[i] for i in range(nd)):
                            out[(co, *o)] += x[(base + ci, *pos)] * w[(co, ci, *kk)]
    else:  # out[co, i*s - p + kk*d] += x[ci, i] * w[ci, co, kk]
        cin, cout_g = w.shape[:2]
        size = [(spatial[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + m.output_padding[i] + 1 for i in range(nd)]
        out = np.zeros((cout_g * g, *size))
        for ci in range(cin):
            base = ci // (cin // g) * cout_g
            for i_ in itertools.product(*map(range, spatial)):
                for co in range(cout_g):
                    for kk in itertools.product(*map(range, k)):
                        count += 1
                        pos = tuple(i_[i] * s[i] - p[i] + kk[i] * d[i] for i in range(nd))
                        if all(0 <= pos[i] < size[i] for i in range(nd)):
                            out[(base + co, *pos)] += x[(ci, *i_)] * w[(ci, co, *kk)]
    out += m.bias.detach().double().numpy().reshape(-1, *[1] * nd)
    return out, count


def test_macs_and_params_by_hand_and_by_brute_force():
    rep = analyze(LAYERS, IN_SHAPE)
    rows = by_name(rep)
    for name, (params, macs) in EXPECTED.items():
        assert (rows[name].params, rows[name].macs, rows[name].flops) == (params, macs, 2 * macs), name
    assert rep.totals["params"] == sum(p.numel() for p in LAYERS.parameters()) == sum(p for p, _ in EXPECTED.values())
    assert rep.totals["macs"] == sum(m for _, m in EXPECTED.values())
    assert rows["7"].out_shape == (1, 2, 2, 14, 22)

    # Run the layers for real and count each one's multiplications by its definition.
    torch.manual_seed(0)
    inputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: inputs.__setitem__(n, (inp[0], out)))
             for n, m in LAYERS.named_children() if n in EXPECTED]
    try:
        with torch.no_grad():
            LAYERS(torch.randn(1, *IN_SHAPE))
    finally:
        for h in hooks:
            h.remove()
    for name in EXPECTED:
        m = LAYERS[int(name)]
        x, y = inputs[name]
        out, count = brute_force(m, x)
        assert np.allclose(out, y[0].double().numpy(), atol=1e-5), f"the brute force is not layer {name}"
        # ... and PyTorch's own count agrees
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
        assert rows[name].macs == count == fc.get_total_flops() // 2, name


def test_layers_without_an_accelerator_rule_are_listed():
    rep = analyze(LAYERS, IN_SHAPE)
    rows = by_name(rep)
    listed = {where: op for op, where in rep.uncounted}
    assert set(listed) == set(NO_ACCELERATOR_RULE), rep.uncounted
    for name, what in NO_ACCELERATOR_RULE.items():
        assert listed[name].startswith("aten.convolution (") and what in listed[name], listed[name]
        assert "no accelerator rule" in listed[name]
        assert (rows[name].cycles, rows[name].energy_pj, rows[name].problems) == (0, 0.0, [])
        assert rows[name].macs > 0  # counted all the same
    assert rep.to_dict()["uncounted_ops"] == [{"op": op, "where": where} for op, where in rep.uncounted]
    line = next(s for s in format_table(rep).splitlines() if s.startswith("NOT COUNTED"))
    assert line.split()[2] == "4"
    for name, what in NO_ACCELERATOR_RULE.items():
        assert f"{what}: no accelerator rule, 0 cycles and energy) (in {name})" in line
    # The 1-d and the dilated 2-d convolution run on the array.
    assert rows["0"].cycles > 0 and rows["3"].cycles > 0
    assert rep.totals["cycles"] == rows["0"].cycles + rows["3"].cycles


def test_a_layer_called_twice_is_listed_twice():
    up = nn.ConvTranspose2d(2, 2, 2, stride=2)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = up

        def forward(self, x):
            return self.up(self.up(x))

    rep = analyze(Twice(), (2, 3, 3))
    assert [w for _, w in rep.uncounted] == ["up", "up"]  # one entry per call
    assert rep.totals["macs"] == 2 * 9 * 2 * 4 + 2 * 36 * 2 * 4


def test_functional_transposed_convolution_is_listed():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, 5, 2, 2))

        def forward(self, x):
            return torch.nn.functional.conv_transpose2d(x, self.w, stride=2)

    rep = analyze(Decoder(), (3, 4, 4))
    assert rep.totals["macs"] == 3 * 16 * 5 * 4 and rep.totals["cycles"] == 0
    assert len(rep.uncounted) == 1 and "conv_transpose2d" in rep.uncounted[0][0]


def test_conv1d_runs_as_the_2d_convolution_pytorch_makes_of_it():
    one = analyze(nn.Conv1d(8, 16, 5, stride=2, dilation=2, padding=4), (8, 40))
    two = analyze(nn.Conv2d(8, 16, (1, 5), stride=(1, 2), dilation=(1, 2), padding=(0, 4)), (8, 1, 40))
    assert one.uncounted == [] == two.uncounted
    assert one.rows[0].problems == two.rows[0].problems == [Problem("conv", 8, 16, 1, 5, 1, 20, 2, 1, 2)]
    for key in ("macs", "params", "cycles", "energy_pj"):
        assert one.totals[key] == two.totals[key], key
    assert one.totals["cycles"] > 0


# ---------------------------------------------------------------- dilation


def test_dilated_conv_counts():
    conv = nn.Conv2d(3, 16, 3, padding=2, dilation=2)
    rep = analyze(conv, (3, 32, 32))
    (row,) = rep.rows
    assert rep.uncounted == []
    # Same MACs as the undilated 3x3 with the same 32x32 output.
    assert (row.params, row.macs) == (3 * 16 * 9 + 16, 16 * 32 * 32 * 3 * 9)
    assert row.macs == analyze(nn.Conv2d(3, 16, 3, padding=1), (3, 32, 32)).totals["macs"]
    (p,) = row.problems
    assert p == Problem("conv", 3, 16, 3, 3, 32, 32, 1, 1, 2)
    # The input window of all 32x32 outputs is the whole padded input: (32-1) + (3-1)*2 + 1 = 36 rows.
    full = dict(C=3, M=16, R=3, S=3, P=32, Q=32)
    assert _tile("I", full, p.stride, "conv", p.dilation) == 3 * 36 * 36
    assert (row.cycles, row.energy_pj) == (layer_cost(p).cycles, layer_cost(p).energy_pj)


def test_dilation_costs_the_extra_input_and_nothing_else():
    arch = DEFAULT_ACCELERATOR
    plain = layer_cost(Problem("conv", 3, 16, 3, 3, 32, 32, 1))  # a Timeloop reference layer
    dilated = layer_cost(Problem("conv", 3, 16, 3, 3, 32, 32, 1, 1, 2))
    assert plain.cycles == 9216 and dilated.cycles == plain.cycles  # compute-bound either way
    assert dilated.mapping == plain.mapping  # the GLB keeps the inputs, read once from DRAM
    extra = 3 * 36 * 36 - 3 * 34 * 34  # words of the wider padded input
    assert dilated.breakdown["dram"] - plain.breakdown["dram"] == pytest.approx(extra * arch.dram_pj)
    assert dilated.breakdown["glb"] - plain.breakdown["glb"] == pytest.approx(extra * arch.glb_write_pj)
    for level in ("mac", "reg", "spad"):
        assert dilated.breakdown[level] == plain.breakdown[level], level


def _boxes(ext, loops, stride, dilation):
    """Input words a tile receives, counted point by point: the first tile, then at every
    step the points of the new tile (the bounding box of rows p*stride + r*dilation, as
    Timeloop projects a tile) that the old one did not hold."""
    h = (ext["P"] - 1) * stride + (ext["R"] - 1) * dilation + 1
    w = (ext["Q"] - 1) * stride + (ext["S"] - 1) * dilation + 1
    total, old = 0, set()
    for idx in itertools.product(*(range(e) for _, e in loops)):
        off = dict.fromkeys("CMRSPQ", 0)
        for k, ((d, _), i) in enumerate(zip(loops, idx)):
            off[d] += i * ext[d] * math.prod(e for dd, e in loops[k + 1:] if dd == d)
        y0, x0 = off["P"] * stride + off["R"] * dilation, off["Q"] * stride + off["S"] * dilation
        box = {(c, y, x) for c in range(off["C"], off["C"] + ext["C"])
               for y in range(y0, y0 + h) for x in range(x0, x0 + w)}
        total += len(box - old)
        old = box
    return total


def test_input_traffic_with_dilation_matches_a_point_by_point_count():
    rng = random.Random(0)
    for _ in range(400):
        ext = {d: rng.choice([1, 1, 2, 3]) for d in "CMRSPQ"}
        loops = [(d, rng.choice([2, 3])) for d in rng.sample("CMRSPQ", rng.randint(1, 4))]
        if rng.random() < 0.3:
            loops.append((rng.choice("PQRS"), 2))  # a dimension split over two loops
        stride, dilation = rng.choice([1, 2]), rng.choice([1, 2, 3])
        assert _fills("I", ext, loops, stride, "conv", dilation) == _boxes(ext, loops, stride, dilation), \
            (ext, loops, stride, dilation)


def test_different_strides_or_dilations_on_the_two_axes():
    rep = analyze(nn.Sequential(nn.Conv2d(4, 4, 3, stride=(2, 1)), nn.Conv2d(4, 4, 3, dilation=(1, 2)),
                                nn.Conv2d(4, 4, (1, 3), dilation=(3, 2))), (4, 16, 16))
    rows = by_name(rep)
    listed = dict((w, op) for op, w in rep.uncounted)
    assert set(listed) == {"0", "1"}
    assert "stride 2x1" in listed["0"] and "dilation 1x2" in listed["1"]
    assert rows["0"].macs == 4 * 7 * 14 * 4 * 9 and rows["0"].cycles == 0
    assert rows["1"].macs == 4 * 5 * 10 * 4 * 9 and rows["1"].cycles == 0  # 7x14 in: rows 7-2, columns 14-2*2
    # A kernel one tap high makes its height dilation moot: the layer maps (5x10 in, 5x6 out).
    assert rows["2"].problems == [Problem("conv", 4, 4, 1, 3, 5, 6, 1, 1, 2)] and rows["2"].cycles > 0


def test_undilated_problems_are_unchanged():
    # The Timeloop reference layers are all undilated: the new field defaults to what they were.
    p = Problem("conv", 3, 6, 5, 5, 28, 28, 1)
    assert p.dilation == 1 and p == Problem("conv", 3, 6, 5, 5, 28, 28, 1, 1, 1)
    assert layer_cost(p).cycles == 19600


def test_the_timeloop_backend_lists_dilated_layers(monkeypatch):
    import cnnlab.cost.timeloop as timeloop

    seen = []

    def fake(p, arch):
        seen.append(p)
        return LayerCost(100, 1.0, p.macs, 0.5, {}, "fake")

    monkeypatch.setattr(timeloop, "timeloop_layer_cost", fake)
    rep = analyze(nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 3)), (3, 8, 8),
                  backend="timeloop")
    rows = by_name(rep)
    assert [p.dilation for p in seen] == [1]  # the dilated layer never reaches timeloop.py's problem writer
    assert rows["0"].cycles == 0 and rows["1"].cycles == 100
    assert len(rep.uncounted) == 1 and rep.uncounted[0][1] == "0" and "dilation 2" in rep.uncounted[0][0]
