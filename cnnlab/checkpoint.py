"""Checkpoints: one `torch.save`d dict that carries everything needed to continue or rebuild.

    {
      "format": "cnnlab-checkpoint", "version": 1, "cnnlab_version": "...",
      "config":       TrainConfig as a dict (rebuilds the model and the run),
      "data":         {"classes", "mean", "std", "shape", "num_classes"} (no dataset needed to predict),
      "model_state":  the PyTorch state_dict of the model (whatever engine trained it),
      "engine":       "torch" | "scratch", "engine_state": the engine's own state (optimizer, schedule, ...),
      "progress":     {"step", "epoch", "batch", partial-epoch sums, best/early-stop state},
      "rng":          {"torch", "cuda", "numpy", "python"} generator states,
      "threads":      the CPU threads it trained on (a resume without --threads keeps them),
    }

Written atomically (temporary file, fsync, rename), so a crash never leaves a torn file. Where a
checkpoint lives in a run directory is `cnnlab.dirs`'s business; this module knows only the format.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

from cnnlab import __version__
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write

FORMAT = "cnnlab-checkpoint"
VERSION = 1


def save_checkpoint(path, payload: dict):
    payload = {"format": FORMAT, "version": VERSION, "cnnlab_version": __version__, **payload}
    # Serialised in memory first: a full disk then fails as a plain OSError from the write,
    # which torch.save would otherwise wrap in an opaque RuntimeError.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), mode="wb")


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CnnlabError(f"no checkpoint at {path}: is this a cnnlab run directory?")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        raise CnnlabError(f"checkpoint {path} is unreadable ({type(e).__name__}): it is damaged; "
                          "resume from another run or start again") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise CnnlabError(f"{path} was written by a newer cnnlab ({ckpt.get('cnnlab_version')}): upgrade cnnlab")
    return ckpt


def _shape(t) -> str:
    return "x".join(str(v) for v in t.shape) or "a scalar"


def _few(keys, n=3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_weights_fit(ckpt: dict, model, path=None):
    """A one-line CnnlabError unless the checkpoint's weights fit `model` (the network its config
    builds) key for key and shape for shape; raised before any weight is copied. Every load of a
    checkpoint's weights into a model (`build_model_from_checkpoint`, the trainer's resume) checks here."""
    state, want = ckpt["model_state"], model.state_dict()
    problems = []
    shapes = [k for k in want if k in state and hasattr(state[k], "shape") and hasattr(want[k], "shape")
              and tuple(state[k].shape) != tuple(want[k].shape)]
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more tensors)" if len(shapes) > 1 else ""
        problems.append(f"{k} is {_shape(state[k])} in the checkpoint but {_shape(want[k])} in the model{more}")
    missing, unexpected = set(want) - set(state), set(state) - set(want)
    if missing:
        problems.append(f"the checkpoint lacks {_few(missing)}")
    if unexpected:
        problems.append(f"the model has no {_few(unexpected)}")
    if problems:
        config = ckpt.get("config") or {}
        raise CnnlabError(f"checkpoint {path or '(in memory)'} does not fit the model its config builds "
                          f"({config.get('model')} on {config.get('dataset')}): {'; '.join(problems)}. Its weights "
                          "come from another model: put back the checkpoint the run wrote, or train the run again")


def build_model_from_checkpoint(ckpt: dict, path=None):
    """The checkpoint's network, built from its config and data shape, with its weights, in eval mode;
    weights that do not fit are a one-line error naming `path`."""
    from cnnlab.build import build_for

    # a run trained with --resize / --input-channels adapts the dataset's images inside the model
    data = ckpt["data"]
    model = build_for(ckpt["config"], data["shape"], data["num_classes"])
    check_weights_fit(ckpt, model, path)
    model.load_state_dict(ckpt["model_state"])
    return model.eval()
