"""Checkpoints: one `torch.save`d dict that carries everything needed to continue or rebuild.

    {
      "format": "cnnlab-checkpoint", "version": 1, "cnnlab_version": "...",
      "config":       TrainConfig as a dict (rebuilds the model and the run),
      "data":         {"classes", "mean", "std", "shape", "num_classes"} (no dataset needed to predict),
      "model_state":  the PyTorch state_dict of the model (whatever engine trained it),
      "engine":       "torch" | "scratch", "engine_state": the engine's own state (optimizer, schedule, ...),
      "progress":     {"step", "epoch", "batch", partial-epoch sums, best/early-stop state},
      "rng":          {"torch", "cuda", "numpy", "python"} generator states,
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


def build_model_from_checkpoint(ckpt: dict):
    from cnnlab.build import build_for

    # a run trained with --resize / --input-channels adapts the dataset's images inside the model
    data = ckpt["data"]
    model = build_for(ckpt["config"], data["shape"], data["num_classes"])
    model.load_state_dict(ckpt["model_state"])
    return model.eval()
