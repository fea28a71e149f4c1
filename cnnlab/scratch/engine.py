"""The scratch engine behind `cnnlab train --engine scratch`: a ScratchNet, a scratch optimizer
and the learning-rate schedule, driven by the trainer through the Engine interface

    train_step(x, y) -> (mean loss, #correct)      forward, backward, update, schedule step
    eval_logits(x) -> scores                       evaluation mode, (N, classes) torch tensor
    lr(), state_dict(), load_state_dict(d), torch_model()

Inputs and outputs are torch tensors (the trainer's data loader makes them); inside, everything
is NumPy in float32. `state_dict()["model"]` holds the weights under the keys of the PyTorch
SpecNet, as tensors, so a checkpoint loads into either engine.
"""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.spec import looks_like_spec
from cnnlab.scratch.backends import check_backend
from cnnlab.scratch.model import ScratchNet
from cnnlab.scratch.optim import build_optimizer
from cnnlab.train.schedules import schedule_factor


def spec_of(config) -> str:
    """The spec string of a config's model: a spec itself, or a registered model built from one."""
    if looks_like_spec(config.model):
        return config.model
    from cnnlab.models.registry import create_model

    torch_model = create_model(config.model, **dict(config.model_args))
    spec = getattr(torch_model, "spec", None)
    if not spec:
        raise CnnlabError(f"model '{config.model}' is not built from a spec, so the scratch engine cannot build it: "
                          "give a spec string such as c32k3-relu-p2-fc10, or use --engine torch")
    return spec


def _to_torch(obj):
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        return {k: _to_torch(v) for k, v in obj.items()}
    return obj


def _to_numpy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj


class ScratchEngine:
    name = "scratch"
    # What the NumPy engine does not do, with the value each key must keep. It computes on the
    # CPU in float32, in one deterministic order, so `deterministic` needs nothing from it.
    UNSUPPORTED = {"ema": None, "tta": False, "precision": "fp32", "channels_last": False, "compile": False,
                   "sync_bn": False, "pretrained": None, "pretrained_hash": None, "freeze": "none",
                   "unfreeze_epochs": None, "backbone_lr_mult": 1.0, "resize": None, "input_channels": None}

    def __init__(self, config, num_classes: int, in_shape, steps_per_epoch: int, backend: str | None = None,
                 dtype=np.float32):
        self.config = config
        # `backend: numpy` picks the plain NumPy kernels; Numba is the fast default
        backend = check_backend(backend or config.backend)
        self.net = ScratchNet(spec_of(config), num_classes, tuple(in_shape), dtype, backend, config.seed,
                              config.loss, config.label_smoothing)
        params = self.net.named_params()
        self.optimizer = build_optimizer(params, config.optimizer, config.lr, config.momentum, config.nesterov,
                                         config.weight_decay, [n for n, p in params.items() if p.ndim < 2],
                                         optimizer_args=config.optimizer_args)
        self.base_lr = self.optimizer.lr
        total = max(1, config.epochs * steps_per_epoch)
        self.factor = schedule_factor(config.schedule, total, steps_per_epoch, **dict(config.schedule_args))
        self.step = 0

    def lr(self) -> float:
        return self.base_lr * self.factor(self.step)

    def set_base_lr(self, lr: float):
        """A new base learning rate for the rest of the run (a resume with --lr)."""
        self.base_lr = float(lr)

    def train_step(self, x, y):
        self.net.train()
        y = _to_numpy(y)
        loss, grads, scores = self.net.loss(_to_numpy(x), y, return_scores=True)
        if not np.isfinite(loss):  # no update: the trainer stops and keeps the last good checkpoint
            return float(loss), 0
        if self.config.grad_clip:
            norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
            scale = min(1.0, self.config.grad_clip / (norm + 1e-6))  # as torch.nn.utils.clip_grad_norm_
            if scale < 1:
                grads = {n: g * g.dtype.type(scale) for n, g in grads.items()}
        self.optimizer.lr = self.lr()
        self.optimizer.step(grads)
        self.step += 1
        return loss, int((scores.argmax(axis=1) == y).sum())

    def eval_logits(self, x):
        self.net.eval()
        try:
            return torch.from_numpy(np.ascontiguousarray(self.net.scores(_to_numpy(x)), dtype=np.float32))
        finally:
            self.net.train()

    def state_dict(self) -> dict:
        return {"engine": "scratch", "model": _to_torch(self.net.state_dict()),
                "optimizer": _to_torch(self.optimizer.state_dict()), "step": self.step, "base_lr": self.base_lr}

    def load_state_dict(self, d: dict):
        self.net.load_state_dict(_to_numpy(d["model"]))
        self.optimizer.load_state_dict(_to_numpy(d["optimizer"]))
        self.base_lr = float(d.get("base_lr", self.base_lr))
        self.step = int(d["step"])

    def torch_model(self) -> torch.nn.Module:
        model = self.net.to_torch().float().eval()
        model.model_name = self.config.model
        return model


    @staticmethod
    def check(config):
        """Backend, optimizer and its arguments (on a stand-in parameter), and a model the engine can build."""
        check_backend(config.backend)
        if config.device not in ("auto", "cpu"):
            raise CnnlabError(f"the scratch engine computes on the CPU: drop --device {config.device} "
                              "or use --engine torch")
        build_optimizer({"w": np.zeros((2, 2), np.float32)}, config.optimizer, config.lr, config.momentum, config.nesterov,
                        config.weight_decay, ["w"], optimizer_args=config.optimizer_args)
        spec_of(config)

    @classmethod
    def build(cls, config, num_classes: int, in_shape, steps_per_epoch: int, device=None, world=None) -> "ScratchEngine":
        """The trainer's entry point. The scratch engine computes on the CPU whatever `device` says."""
        return cls(config, num_classes, in_shape, steps_per_epoch)
