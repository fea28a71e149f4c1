"""Recipes: ready training configs, by name (`cnnlab train --recipe NAME`, `cnnlab recipes`).

A recipe is an ordinary config file (cnnlab/recipes/NAME.yaml, TrainConfig keys) that a user can
read, copy and change; flags given with --recipe override it, as they override --config. Its
leading comment lines describe it: first what it is for, then from a line starting with
`# measured:` the figures measured with it (BENCHMARKS.md has the commands and machines).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.io import load_yaml_mapping

HERE = Path(__file__).resolve().parent


def recipe_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, recipe_names(), n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise CnnlabError(f"unknown recipe '{name}'{hint}: choose one of {', '.join(recipe_names())} "
                          f"(`cnnlab recipes` describes them)")
    return path


def load_recipe(name: str) -> dict:
    """The recipe's config keys, as a mapping (validated later with the rest of the config)."""
    return load_yaml_mapping(recipe_path(name), f"recipe '{name}'")


def describe(name: str) -> dict:
    """{"name", "path", "about", "measured": [lines], "config": {...}} from the recipe's comments and keys."""
    path = recipe_path(name)
    about, measured = [], []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.lower().startswith("measured:"):
            measured.append(text.split(":", 1)[1].strip())
        elif text and measured:  # a measured line continues
            measured[-1] += " " + text
        elif text:
            about.append(text)
    return {"name": name, "path": str(path), "about": " ".join(about), "measured": measured,
            "config": load_recipe(name)}
