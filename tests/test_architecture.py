"""The shape of the code: layers, import cycles, and one home for every run-directory file name.

The layers, low to high (docs/architecture.md draws them): a module may import from its own
layer's unit or a lower layer, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cnnlab"

LAYERS = [
    {"cnnlab", "cnnlab.errors", "cnnlab.io", "cnnlab.text", "cnnlab.device", "cnnlab.envinfo", "cnnlab.database",
     "cnnlab.__main__"},
    {"cnnlab.config", "cnnlab.losses", "cnnlab.models", "cnnlab.data", "cnnlab.recipes"},
    {"cnnlab.build", "cnnlab.checkpoint", "cnnlab.evaluate", "cnnlab.cost"},
    {"cnnlab.dirs", "cnnlab.weights"},
    {"cnnlab.scratch", "cnnlab.train"},
    {"cnnlab.workflows", "cnnlab.api"},
    {"cnnlab.serve"},
    {"cnnlab.commands", "cnnlab.cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
RANK["cnnlab.__main__"] = len(LAYERS)  # `python -m cnnlab` runs the CLI


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def unit(module: str) -> str:
    """The layer unit of a module: a top-level module, or a top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def imports(module: str) -> set[str]:
    """Every cnnlab module `module` imports, at the top or inside functions."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports are not used in cnnlab
                pytest.fail(f"{module} uses a relative import")
            base = node.module or ""
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "cnnlab"}
    found.discard(module)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(RANK))
    assert not missing, f"add these to LAYERS (and docs/architecture.md): {missing}"


def test_no_import_reaches_up_a_layer():
    breaches = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                if RANK[unit(t)] > RANK[unit(m)]]
    assert not breaches, "layering breached:\n" + "\n".join(breaches)


def test_commands_are_imported_only_by_the_cli():
    outside = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
               if unit(t) == "cnnlab.commands" and unit(m) not in ("cnnlab.commands", "cnnlab.cli")]
    assert not outside, outside


def test_cost_is_analysis_only():
    banned = ("cnnlab.train", "cnnlab.data", "cnnlab.workflows", "cnnlab.dirs", "cnnlab.commands",
              "cnnlab.checkpoint")
    bad = [f"{m} -> {t}" for m, targets in GRAPH.items() if unit(m) == "cnnlab.cost"
           for t in targets if unit(t) in banned]
    assert not bad, bad


def test_no_import_cycles():
    """Between modules, counting imports inside functions too."""
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if t not in GRAPH:
                continue
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    # a package __init__ re-exporting its submodules is not a cycle of behaviour
    real = [c for c in cycles if not any(a == b.rsplit(".", 1)[0] or b == a.rsplit(".", 1)[0]
                                         for a, b in zip(c, c[1:]))]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_the_layer_checker_catches_a_breach():
    """The checks above are not vacuous: a cost module importing the trainer is caught."""
    assert RANK[unit("cnnlab.train.loop")] > RANK[unit("cnnlab.cost.report")]
    assert any(unit(t) == "cnnlab.dirs" for t in GRAPH["cnnlab.train.loop"])


# ---- directory file names ---------------------------------------------------------------------

# Every file name a cnnlab directory holds, by the module that alone may spell it.
DIR_NAMES = {
    "cnnlab.dirs.run": ["config.yaml", "metrics.csv", "iterations.csv", "train.log", "summary.json", "state.json",
                        "checkpoints", "last.pt", "best.pt", "predictions.csv", "score.json", "bench.csv",
                        "bench.json", "plots", "report.html", "exports", "evaluation", "per_class",
                        "confusion_matrix", "report.md", "loss.png", "accuracy.png", "lr.png", "filters.png",
                        "confusion.png", "mistakes.png"],
    "cnnlab.dirs.study": ["study.yaml", "results.md", "results.csv", "train_loss.png", "val_acc.png"],
    "cnnlab.dirs.search": ["search.db", "trials.csv", "pareto.png", "best.yaml", "best.json"],
}
RUN_DIR_NAMES = DIR_NAMES["cnnlab.dirs.run"]
STEMS = ("evaluation", "per_class", "confusion_matrix")  # run files named <stem>[-split].<ext>


def string_literals(path: Path):
    """Every string constant in a module, f-string pieces included, docstrings excluded."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def names_in(text: str, names=RUN_DIR_NAMES) -> set[str]:
    """Directory names a literal spells as a path: the whole literal, a path part, or a stem."""
    found = set()
    for part in text.replace("\\", "/").split("/"):
        for name in names:
            if part == name or (part.startswith(name) and part[len(name):len(name) + 1] in ("", ".", "-", "{")
                                and name in STEMS):
                found.add(name)
    return found


@pytest.mark.parametrize("home", sorted(DIR_NAMES))
def test_every_directory_file_name_is_spelled_in_its_kinds_module(home):
    names = DIR_NAMES[home]
    homes = {}
    for module, path in MODULES.items():
        for lit in string_literals(path):
            if " " in lit.strip():  # prose (help texts, messages) may mention files
                continue
            for name in names_in(lit, names):
                homes.setdefault(name, set()).add(module)
    assert set(homes) == set(names), f"not found anywhere: {set(names) - set(homes)}"
    strays = {n: sorted(m) for n, m in homes.items() if m != {home}}
    assert not strays, f"file names of {home} spelled elsewhere: {strays}"


def test_the_name_scanner_sees_paths_and_stems():
    assert names_in("checkpoints/last.pt") == {"checkpoints", "last.pt"}
    assert names_in("evaluation-val.json") == {"evaluation"}
    assert names_in("summary.json.tmp") == set()
