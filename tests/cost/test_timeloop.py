"""The Timeloop backend: problem files, stats parsing, and the message when it is absent."""

import pytest
import yaml

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, Problem, conv_problem
from cnnlab.cost.timeloop import arch_yaml, constraints_yaml, parse_stats, problem_yaml, timeloop_layer_cost
from cnnlab.errors import CnnlabError

STATS = """\
Buffer and Arithmetic Levels
----------------------------
Level 0
-------
=== mac ===
    Computes (total)        : 352800
Summary Stats
-------------
GFLOPs (@1GHz): 18.00
Utilization: 0.07
Cycles: 19600
Energy: 5.60 uJ
EDP(J*cycle): 1.10e-01
Area: 0.00 mm^2

Computes = 352800
pJ/Compute
    mac                                    = 2.20
    Total                                  = 15.88

Operational Intensity Stats
---------------------------
    Total topology energy: 5601102.25 pJ
    Max topology cycles: 19600
"""


def test_parse_stats():
    assert parse_stats(STATS) == (19600, 5601102.25, 352800)
    # Without the topology lines it falls back on the summary.
    short = STATS.split("Operational")[0]
    cycles, energy, _ = parse_stats(short)
    assert cycles == 19600 and energy == pytest.approx(5.60e6)
    with pytest.raises(CnnlabError, match="no energy"):
        parse_stats("nothing here")


def test_problem_files():
    conv = yaml.safe_load(problem_yaml(Problem("conv", 3, 6, 5, 5, 28, 28, 1)))["problem"]
    assert conv["instance"] == {"C": 3, "M": 6, "R": 5, "S": 5, "N": 1, "P": 28, "Q": 28, "Hstride": 1, "Wstride": 1}
    assert conv["shape"]["dimensions"] == ["C", "M", "R", "S", "N", "P", "Q"]
    dw = yaml.safe_load(problem_yaml(conv_problem(32, 32, 3, 3, 2, 8, 8, groups=32)))["problem"]
    assert "M" not in dw["shape"]["dimensions"] and dw["instance"]["C"] == 32 and dw["instance"]["Hstride"] == 2
    weights = next(s for s in dw["shape"]["data-spaces"] if s["name"] == "Weights")
    assert weights["projection"] == [[["C"]], [["R"]], [["S"]]]
    arch = yaml.safe_load(arch_yaml(DEFAULT_ACCELERATOR))["architecture"]
    glb = arch["subtree"][0]["subtree"][0]["local"][0]
    assert glb["attributes"]["memory_depth"] * 4 * 2 == 128 * 1024
    cons = yaml.safe_load(constraints_yaml(Problem("conv", 3, 6, 5, 5, 28, 28), DEFAULT_ACCELERATOR))
    assert any(t.get("permutation") == "PQRS" for t in cons["constraints"]["targets"])


def test_clear_error_without_timeloop(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CnnlabError, match="timeloop-mapper"):
        timeloop_layer_cost(Problem("fc", 84, 10), DEFAULT_ACCELERATOR)


@pytest.fixture
def fake_mapper(tmp_path, monkeypatch):
    """A stand-in `timeloop-mapper` on PATH that writes STATS (and counts its runs), and an empty
    cache under tmp_path; gives (cache folder, runs file)."""
    import os
    import stat

    bin_dir, stats, runs = tmp_path / "bin", tmp_path / "stats.txt", tmp_path / "runs"
    bin_dir.mkdir()
    stats.write_text(STATS)
    exe = bin_dir / "timeloop-mapper"
    exe.write_text(f"#!/bin/sh\ncp '{stats}' timeloop-mapper.stats.txt\necho run >> '{runs}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "timeloop", runs


def _runs(runs):
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_timeloop_result_is_cached(fake_mapper):
    import json

    cache, runs = fake_mapper
    cost = timeloop_layer_cost(Problem("fc", 84, 10), DEFAULT_ACCELERATOR)
    assert (cost.cycles, cost.energy_pj) == (19600, 5601102.25) and _runs(runs) == 1
    (entry,) = cache.iterdir()
    assert json.loads(entry.read_text())["result"] == [19600, 5601102.25]
    again = timeloop_layer_cost(Problem("fc", 84, 10), DEFAULT_ACCELERATOR)
    assert (again.cycles, again.energy_pj) == (19600, 5601102.25) and _runs(runs) == 1  # from the cache


def test_timeloop_cache_write_is_atomic(fake_mapper, monkeypatch):
    """A write that fails part-way (the disk fills before the data reaches it) leaves no cache
    entry and no temporary file; a torn entry from an older version is mapped again and replaced."""
    import errno
    import json

    cache, runs = fake_mapper

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("cnnlab.io.os.fsync", disk_full)
        with pytest.raises(OSError) as e:
            timeloop_layer_cost(Problem("fc", 84, 10), DEFAULT_ACCELERATOR)
    assert e.value.errno == errno.ENOSPC and e.value.filename.startswith(str(cache))
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing torn, nothing temporary, no new folder

    timeloop_layer_cost(Problem("fc", 84, 10), DEFAULT_ACCELERATOR)
    (entry,) = cache.iterdir()
    entry.write_text('{"problem": [1, 2], "res')  # as a plain write killed half-way leaves it
    cost = timeloop_layer_cost(Problem("fc", 84, 10), DEFAULT_ACCELERATOR)
    assert cost.cycles == 19600 and _runs(runs) == 3
    assert json.loads(entry.read_text())["result"] == [19600, 5601102.25]
