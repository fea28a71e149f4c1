"""Word width (`bits`): bytes scale with bits/32, energy as documented, cycles unchanged."""

import json

import pytest
from torch import nn

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, at_bits, fc_problem, layer_cost, mac_energy_scale
from cnnlab.cost.report import analyze
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from tests.cli import cli, one_line_error


def _lenet():
    return create_model("lenet5", 10, 1, 28)


def test_bits_32_is_the_default_figure_for_figure():
    default, at32 = analyze(_lenet(), (1, 28, 28)), analyze(_lenet(), (1, 28, 28), bits=32)
    assert at32.to_dict() == default.to_dict() and at32.bits == 32
    assert at_bits(DEFAULT_ACCELERATOR, 32) is DEFAULT_ACCELERATOR


def test_bits_8_quarters_the_bytes_and_keeps_the_cycles():
    r32, r8 = analyze(_lenet(), (1, 28, 28)), analyze(_lenet(), (1, 28, 28), bits=8)
    assert r8.peak_activation * 4 == r32.peak_activation == (28 * 28 + 6 * 28 * 28) * 4
    assert r8.peak_layer == r32.peak_layer
    assert r8.totals["weight_bytes"] * 4 == r32.totals["weight_bytes"] == 61_706 * 4
    for a, b in zip(r8.rows, r32.rows):
        assert (a.in_bytes * 4, a.out_bytes * 4, a.weight_bytes * 4, a.activation_bytes * 4) == \
            (b.in_bytes, b.out_bytes, b.weight_bytes, b.activation_bytes)
        assert a.cycles == b.cycles
    assert r8.totals["cycles"] == r32.totals["cycles"] == 22_354
    assert 0 < r8.totals["energy_pj"] < analyze(_lenet(), (1, 28, 28), bits=16).totals["energy_pj"] \
        < r32.totals["energy_pj"]


def test_bits_8_energy_is_the_formula_on_a_tiny_layer():
    # Linear(4, 2): 8 MACs. MAC energy at 8 bits: 8 x 2.2 pJ x (0.03 + 0.2) / (0.9 + 3.7) = 0.88 pJ;
    # every storage level at 8/32 of its 32-bit energy, on the same mapping.
    assert mac_energy_scale(8) == pytest.approx(0.05)
    p = fc_problem(4, 2)
    c32, c8 = layer_cost(p), layer_cost(p, at_bits(DEFAULT_ACCELERATOR, 8))
    assert c8.mapping == c32.mapping and c8.cycles == c32.cycles
    assert c8.breakdown["mac"] == pytest.approx(0.88)
    storage32 = sum(v for k, v in c32.breakdown.items() if k != "mac")
    assert c8.energy_pj == pytest.approx(0.88 + storage32 / 4)
    rep = analyze(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (4,), bits=8)
    assert rep.totals["energy_pj"] == pytest.approx(0.88 + storage32 / 4)
    assert rep.peak_activation == 4 + 2  # (input + output elements) x 1 B


def test_bad_bits_are_refused():
    with pytest.raises(CnnlabError, match="8, 16 or 32"):
        analyze(_lenet(), (1, 28, 28), bits=4)
    with pytest.raises(CnnlabError, match="32-bit figures only"):
        analyze(_lenet(), (1, 28, 28), backend="timeloop", bits=8)


def test_cost_cli_bits(capsys):
    code, out, _ = cli(capsys, "cost", "lenet5", "--input", "1x28x28", "--bits", "8", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["bits"] == 8 and rep["peak_activation_bytes"] == 5_488
    code, out, _ = cli(capsys, "cost", "lenet5", "--input", "1x28x28")
    assert code == 0 and out.startswith("word width 32 bits") and "(competition rule, 4 B/element)" in out
    code, out, _ = cli(capsys, "cost", "lenet5", "--input", "1x28x28", "--bits", "8")
    assert code == 0 and out.startswith("word width 8 bits") and "5,488 bytes at features.0" in out
    for bad in ("4", "abc"):
        code, _, err = cli(capsys, "cost", "lenet5", "--bits", bad)
        one_line_error(code, err, "--bits")
    code, _, err = cli(capsys, "score", "no-such-run", "--bits", "4")
    one_line_error(code, err, "--bits")


def test_score_bits_8(tmp_path, capsys):
    from cnnlab.config import TrainConfig
    from cnnlab.train.loop import train

    run = tmp_path / "tiny"
    train(TrainConfig(dataset="synthetic:shape=1x12x12,classes=3,train=60,test=30", model="c4k3-relu-p2-fc3",
                      epochs=1, batch_size=30, val_size=30, device="cpu", threads=1, out=str(run)), quiet=True)
    code, out, _ = cli(capsys, "score", run, "--json")
    s32 = json.loads(out)
    code, out, _ = cli(capsys, "score", run, "--json", "--bits", "8")
    s8 = json.loads(out)
    assert code == 0 and (s32["bits"], s8["bits"]) == (32, 8)
    assert s8["peak_activation_bytes"] * 4 == s32["peak_activation_bytes"] == (12 * 12 + 4 * 12 * 12) * 4
    assert s8["cycles"] == s32["cycles"] and s8["energy_mj"] < s32["energy_mj"]
    assert json.loads((run / "score.json").read_text())["bits"] == 8
    code, out, _ = cli(capsys, "score", run, "--bits", "8")
    assert code == 0 and "8-bit words" in out
