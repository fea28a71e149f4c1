"""The Timeloop backend: run `timeloop-mapper` on each layer and read its totals.

Each distinct layer shape is written as a Timeloop problem, mapped on the same
architecture as the analytic model (generated from the `Accelerator` fields with the
competition's constraints and mapper settings), and its "Max topology cycles" and
"Total topology energy" are cached on disk by layer shape, since a search takes minutes.
The mapper's search is randomized, so results can differ from run to run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from cnnlab.cost.accelerator import Accelerator, LayerCost, Problem
from cnnlab.envinfo import user_cache_dir
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text


def problem_yaml(p: Problem) -> str:
    """The Timeloop problem for one layer (batch 1; padding shows only through P, Q)."""
    coeffs = [{"name": n, "default": 1} for n in ("Wstride", "Hstride", "Wdilation", "Hdilation")]
    inputs = {"name": "Inputs", "projection": [[["N"]], [["C"]], [["R", "Wdilation"], ["P", "Wstride"]],
                                               [["S", "Hdilation"], ["Q", "Hstride"]]]}
    if p.kind == "depthwise":
        dims = ["C", "R", "S", "N", "P", "Q"]
        spaces = [{"name": "Weights", "projection": [[["C"]], [["R"]], [["S"]]]}, inputs,
                  {"name": "Outputs", "projection": [[["N"]], [["C"]], [["P"]], [["Q"]]], "read-write": True}]
        instance = {"C": p.C, "R": p.R, "S": p.S, "N": 1, "P": p.P, "Q": p.Q}
    else:
        dims = ["C", "M", "R", "S", "N", "P", "Q"]
        spaces = [{"name": "Weights", "projection": [[["C"]], [["M"]], [["R"]], [["S"]]]}, inputs,
                  {"name": "Outputs", "projection": [[["N"]], [["M"]], [["P"]], [["Q"]]], "read-write": True}]
        instance = {"C": p.C, "M": p.M, "R": p.R, "S": p.S, "N": 1, "P": p.P, "Q": p.Q}
    instance.update(Hstride=p.stride, Wstride=p.stride)
    doc = {"problem": {"shape": {"name": "CNN-Layer", "dimensions": dims, "coefficients": coeffs,
                                 "data-spaces": spaces}, "instance": instance}}
    return yaml.safe_dump(doc, sort_keys=False)


def arch_yaml(arch: Accelerator) -> str:
    """The simple weight-stationary architecture with `arch`'s sizes (Timeloop v0.3 format)."""
    pes = arch.pe_rows * arch.pe_cols
    w = arch.word_bits
    reg = lambda name: {"name": name, "class": "reg_storage",
                        "attributes": {"depth": 1, "width": w, "meshX": arch.pe_cols}}
    doc = {"architecture": {"version": 0.3, "subtree": [{"name": "system", "local": [
        {"name": "DRAM", "class": "DRAM", "attributes": {"type": "LPDDR4", "width": 4 * w, "block-size": 4, "word-bits": w}}],
        "subtree": [{"name": "simple_ws", "attributes": {"technology": "45nm"}, "local": [
            {"name": "shared_glb", "class": "smartbuffer_SRAM", "attributes": {
                "memory_depth": arch.glb_words // 4, "memory_width": 4 * w, "n_banks": 32, "block-size": 4,
                "word-bits": w, "read_bandwidth": arch.glb_read_words_per_cycle,
                "write_bandwidth": arch.glb_write_words_per_cycle}}],
            "subtree": [{"name": f"PE[0..{pes - 1}]", "local": [
                {"name": "pe_spad", "class": "smartbuffer_SRAM", "attributes": {
                    "memory_depth": arch.spad_words, "memory_width": w, "block-size": 1, "word-bits": w,
                    "meshX": arch.pe_cols}},
                reg("weight_reg"), reg("input_activation_reg"), reg("output_activation_reg"),
                {"name": "mac", "class": "intmac", "attributes": {"datawidth": w, "meshX": arch.pe_cols}}]}]}]}]}}
    return yaml.safe_dump(doc, sort_keys=False)


def constraints_yaml(p: Problem, arch: Accelerator) -> str:
    keep = lambda target, dt: {"target": target, "type": "bypass", "keep": [dt],
                               "bypass": [d for d in ("Weights", "Inputs", "Outputs") if d != dt]}
    targets = [keep("pe_spad", "Weights"), keep("weight_reg", "Weights"),
               keep("input_activation_reg", "Inputs"), keep("output_activation_reg", "Outputs"),
               {"target": "pe_spad", "type": "temporal", "permutation": "PQRS"},
               {"target": "shared_glb", "type": "temporal", "factors": "R=1 S=1"},
               {"target": "DRAM", "type": "temporal", "factors": "R=1 S=1"}]
    if p.kind != "depthwise":  # the depthwise set frees the array
        targets.append({"target": "shared_glb", "type": "spatial", "factors": "N=1 P=1 Q=1 R=1 S=1",
                        "permutation": "CM", "split": 1})
    return yaml.safe_dump({"constraints": {"targets": targets}}, sort_keys=False)


MAPPER_YAML = yaml.safe_dump({"mapper": {
    "optimization-metrics": ["delay", "energy"], "live-status": False, "num-threads": 8,
    "algorithm": "random-pruned", "timeout": 200, "victory-condition": 200, "max-permutations-per-if-visit": 8}})


def parse_stats(text: str) -> tuple[int, float, int | None]:
    """(cycles, energy in pJ, computes) from a timeloop-mapper.stats.txt."""
    cyc = re.search(r"Max topology cycles\s*:\s*([\d.eE+]+)", text) or re.search(r"^Cycles\s*:\s*([\d.eE+]+)", text, re.M)
    en = re.search(r"Total topology energy\s*:\s*([\d.eE+]+)\s*pJ", text)
    if en:
        energy = float(en.group(1))
    else:
        m = re.search(r"^Energy\s*:\s*([\d.eE+]+)\s*(pJ|nJ|uJ|mJ)", text, re.M)
        if not m:
            raise CnnlabError("Timeloop's stats have no energy figure: the mapper probably found no valid mapping")
        energy = float(m.group(1)) * {"pJ": 1, "nJ": 1e3, "uJ": 1e6, "mJ": 1e9}[m.group(2)]
    if not cyc:
        raise CnnlabError("Timeloop's stats have no cycle count: the mapper probably found no valid mapping")
    comp = re.search(r"Computes\s*=\s*(\d+)", text)
    return int(float(cyc.group(1))), energy, int(comp.group(1)) if comp else None


def _cache_dir() -> Path:
    return user_cache_dir("timeloop")


def _read_cache(path: Path) -> tuple[int, float] | None:
    """(cycles, energy) of a cached mapping, or None when there is none or the entry is unreadable
    (a damaged entry, e.g. torn by an older version's plain write, is mapped again and replaced)."""
    try:
        cycles, energy = json.loads(path.read_text())["result"]
        return int(cycles), float(energy)
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or damaged
        return None


def timeloop_layer_cost(p: Problem, arch: Accelerator) -> LayerCost:
    exe = shutil.which("timeloop-mapper")
    if exe is None:
        raise CnnlabError("the timeloop backend needs `timeloop-mapper` on PATH (it is not installed here): "
                          "install Timeloop and Accelergy, or use --backend analytic")
    one = Problem(p.kind, p.C, p.M, p.R, p.S, p.P, p.Q, p.stride, 1)
    files = {"problem.yaml": problem_yaml(one), "arch.yaml": arch_yaml(arch),
             "constraints.yaml": constraints_yaml(one, arch), "mapper.yaml": MAPPER_YAML}
    key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:20]
    cache = _cache_dir() / f"{key}.json"
    cached = _read_cache(cache)
    if cached is not None:
        cycles, energy = cached
    else:
        with tempfile.TemporaryDirectory(prefix="cnnlab-timeloop-") as tmp:
            for name, text in files.items():
                Path(tmp, name).write_text(text)
            proc = subprocess.run([exe, *files], cwd=tmp, capture_output=True, text=True)
            stats = Path(tmp, "timeloop-mapper.stats.txt")
            if proc.returncode != 0 or not stats.exists():
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise CnnlabError(f"timeloop-mapper failed on layer {one}: {last[0]}")
            cycles, energy, _ = parse_stats(stats.read_text())
        # atomic: a run killed mid-write must not leave a torn entry behind (atomic_write makes the folder)
        atomic_write_text(cache, json.dumps({"problem": one.key(), "result": [cycles, energy]}))
    g = p.groups
    return LayerCost(cycles * g, energy * g, p.macs, one.macs / (cycles * arch.pe_rows * arch.pe_cols) if cycles else 0.0,
                     {}, "timeloop-mapper")
