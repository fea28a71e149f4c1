"""Small helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.text import parse_bytes  # noqa: F401  (the commands' --max-activation and sizes)


def add_json_flag(parser):
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")


def print_json(data):
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def advise_on_write(e, args):
    """Add the command's own advice to a cnnlab.io.WriteError: where the command has --out, that it
    can write elsewhere (a training run names its own --resume command on a full disk: cnnlab.train.loop)."""
    from cnnlab.io import NOT_ALLOWED

    if (e.errno in NOT_ALLOWED or e.blocker is not None) and hasattr(args, "out"):
        e.advice = f"{e.advice} (e.g. with --out)" if e.advice else "e.g. with --out"


def parse_shape(text: str):
    """'3x32x32' -> (3, 32, 32); the one parser of every command's --input."""
    try:
        shape = tuple(int(v) for v in str(text).lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CnnlabError(f"bad input shape '{text}': write it as CxHxW, e.g. 3x32x32")
    return shape


def load_model(model_or_run: str, in_shape=None, num_classes: int | None = None):
    """(model, input shape, name) from a run directory, a registered model name or a spec string."""
    path = Path(model_or_run)
    if not path.is_dir() and ("/" in model_or_run or path.exists()):
        raise CnnlabError(f"{path} is not a run directory: give a directory written by `cnnlab train`, "
                          "a registered model name or a spec")
    if path.is_dir():
        from cnnlab.dirs import load_run

        run = load_run(path)
        if in_shape is None:
            return run.model, _run_input_shape(run), str(path)
        _check_run_input(run, tuple(in_shape), path)
        return run.model, tuple(in_shape), str(path)
    from cnnlab.build import build_for

    shape = tuple(in_shape or (3, 32, 32))
    return build_for({"model": model_or_run}, shape, num_classes or 10), shape, model_or_run


def _shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


def _check_run_input(run, shape: tuple, path):
    """--input for a trained run: its images' channels, and a size its network takes (a run that
    resizes inside the model takes any); one error line saying what it expects otherwise."""
    import torch

    want = tuple((getattr(run, "data", None) or {}).get("shape") or ())
    if not want:
        return
    fix = f"give --input {_shape_text(want)}, or leave --input out"
    if shape[0] != want[0]:
        raise CnnlabError(f"run {path} takes {want[0]}-channel images ({_shape_text(want)}, as its dataset has), "
                          f"not {shape[0]}-channel ones: {fix}")
    if shape == want or run.config.resize:
        return
    try:  # a network with a fixed-size layer (fc after the convolutions) takes only the size it trained on
        with torch.no_grad():
            run.model(torch.zeros((1, *shape)))
    except RuntimeError as e:  # what PyTorch raises for a shape that does not fit a layer
        raise CnnlabError(f"run {path}'s network does not take {_shape_text(shape)} images, it trained on "
                          f"{_shape_text(want)} ({str(e).splitlines()[0]}): {fix}") from None


def _run_input_shape(run):
    data = getattr(run, "data", None) or {}
    if data.get("shape"):
        return tuple(data["shape"])
    raise CnnlabError(f"cannot tell the input shape of run {run.run_dir}: pass --input, e.g. --input 3x32x32")
