"""The analytic accelerator model against Timeloop's reference figures."""

import csv
from pathlib import Path

import pytest

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, Accelerator, Problem, conv_problem, layer_cost
from cnnlab.cost.report import analyze
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

REFERENCE = Path(__file__).parent / "data" / "timeloop-reference.csv"
ROWS = list(csv.DictReader(REFERENCE.open()))


def problem(row):
    g = {k: int(row[k]) for k in ("C", "M", "R", "S", "P", "Q", "stride")}
    return Problem(row["kind"], **g)


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_layer_matches_timeloop(row):
    cost = layer_cost(problem(row))
    assert cost.macs == int(row["macs"])
    assert cost.cycles == pytest.approx(int(row["cycles"]), rel=0.05)
    assert cost.energy_pj == pytest.approx(float(row["energy_pj"]), rel=0.15)
    assert cost.utilization == pytest.approx(float(row["utilization"]), abs=1e-3)


def test_model_is_within_two_percent_on_every_reference_layer():
    # Tighter than the acceptance band: a regression in the access counts shows up here first.
    for row in ROWS:
        cost = layer_cost(problem(row))
        assert cost.cycles == int(row["cycles"]), row["name"]
        assert abs(cost.energy_pj / float(row["energy_pj"]) - 1) < 0.02, row["name"]


def test_lenet5_totals_are_the_sum_of_its_layers():
    rep = analyze(create_model("lenet5", 10, 3, 32), (3, 32, 32))
    names = ["lenet_conv1", "lenet_conv2", "lenet_fc1", "lenet_fc2", "lenet_fc3"]
    ref = {r["name"]: r for r in ROWS}
    costs = [layer_cost(problem(ref[n])) for n in names]
    assert rep.totals["cycles"] == sum(c.cycles for c in costs) == sum(int(ref[n]["cycles"]) for n in names)
    assert rep.totals["energy_pj"] == pytest.approx(sum(c.energy_pj for c in costs))
    assert rep.totals["energy_pj"] == pytest.approx(sum(float(ref[n]["energy_pj"]) for n in names), rel=0.02)
    assert rep.totals["cycles"] == sum(r.cycles for r in rep.rows)


def test_weights_bypass_the_buffer_for_fc_layers():
    # Through the 16 words/cycle buffer, fc1's 48,000 weights would take 3,000 cycles, not 200.
    cost = layer_cost(Problem("fc", 400, 120))
    assert cost.cycles == 200
    assert "keeps" in cost.mapping and "W" not in cost.mapping.split("keeps")[1].split(";")[0]


def test_deterministic_and_fast():
    import time

    p = Problem("conv", 48, 48, 3, 3, 24, 24, 1)
    t0 = time.perf_counter()
    a = layer_cost(p)
    assert time.perf_counter() - t0 < 2.0  # generous: milliseconds in practice
    layer_cost.__globals__["_layer_cost"].cache_clear()
    b = layer_cost(p)
    assert (a.cycles, a.energy_pj, a.mapping) == (b.cycles, b.energy_pj, b.mapping)


def test_depthwise_and_grouped_convolutions():
    dw = conv_problem(32, 32, 3, 3, 1, 16, 16, groups=32)
    assert dw.kind == "depthwise" and dw.macs == 32 * 9 * 16 * 16
    cost = layer_cost(dw)
    # 256 PEs, no M: channels across the columns, output rows across the rows.
    assert cost.cycles == dw.macs // 256
    grouped = conv_problem(32, 64, 3, 3, 1, 8, 8, groups=4)
    assert (grouped.kind, grouped.C, grouped.M, grouped.groups) == ("conv", 8, 16, 4)
    one = layer_cost(Problem("conv", 8, 16, 3, 3, 8, 8, 1))
    four = layer_cost(grouped)
    assert four.cycles == 4 * one.cycles and four.energy_pj == pytest.approx(4 * one.energy_pj)


def test_a_bigger_array_is_faster():
    big = Accelerator(pe_rows=32, pe_cols=32)
    p = Problem("conv", 64, 64, 3, 3, 16, 16, 1)
    assert layer_cost(p, big).cycles * 4 == layer_cost(p).cycles


def test_architecture_yaml_round_trip(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text(Accelerator(pe_rows=8, dram_pj=100.0).to_yaml())
    arch = Accelerator.load(path)
    assert arch.pe_rows == 8 and arch.dram_pj == 100.0 and arch.pe_cols == 16
    path.write_text("pe_rowz: 8\n")
    with pytest.raises(CnnlabError, match="unknown key 'pe_rowz'"):
        Accelerator.load(path)
    with pytest.raises(CnnlabError, match="not found"):
        Accelerator.load(tmp_path / "missing.yaml")


def test_kernel_too_big_for_the_scratchpad_is_a_clear_error():
    with pytest.raises(CnnlabError, match="scratchpad"):
        layer_cost(Problem("conv", 1, 1, 15, 15, 4, 4, 1))


def test_default_is_the_competition_architecture():
    a = DEFAULT_ACCELERATOR
    assert (a.pe_rows, a.pe_cols, a.glb_words * a.word_bits // 8, a.spad_words) == (16, 16, 128 * 1024, 192)
