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

Written atomically (temporary file, fsync, rename), so a crash never leaves a torn file.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab import __version__
from cnnlab.config import TrainConfig
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


def check_run_dir(run_dir) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").exists() or not (run_dir / "checkpoints").is_dir():
        raise CnnlabError(f"{run_dir} is not a cnnlab run directory (no config.yaml and checkpoints/): "
                          "give a directory written by `cnnlab train`")
    return run_dir


def build_model_from_checkpoint(ckpt: dict):
    from cnnlab.models import create_model

    cfg, data = ckpt["config"], ckpt["data"]
    c, h, w = data["shape"]
    model = create_model(cfg["model"], num_classes=data["num_classes"], in_channels=c, input_size=(h, w),
                         **cfg.get("model_args", {}))
    model.load_state_dict(ckpt["model_state"])
    return model.eval()


@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    model: torch.nn.Module  # eval mode, on CPU
    data: dict  # classes, mean, std, shape, num_classes
    checkpoint: dict


def load_run(run_dir, which: str = "best") -> LoadedRun:
    """A trained run: its config and its model with the `best` (validation) or `last` weights."""
    run_dir = check_run_dir(run_dir)
    path = run_dir / "checkpoints" / f"{which}.pt"
    if which == "best" and not path.exists():
        path = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    return LoadedRun(run_dir, TrainConfig.from_dict(ckpt["config"]), build_model_from_checkpoint(ckpt), ckpt["data"], ckpt)
