"""The PyTorch engine: a registered model, an optimizer, a per-step LR schedule, and the
usual tricks (mixed precision, channels-last, torch.compile, flip TTA).

The Engine interface the trainer drives (`cnnlab.train.engines` lists the engines):

    train_step(x, y) -> (mean loss, #correct)   forward, backward, update, schedule step
    eval_logits(x) -> scores                    evaluation mode, (N, classes) float tensor
    lr(), state_dict(), load_state_dict(d), torch_model()

`eval_module`, when a hook sets it (the weight average of `cnnlab.train.hooks.WeightAverage`),
is the module that is evaluated and saved instead of the trained one. `transfer`, with
`--pretrained`, is the model's cnnlab.train.transfer.Transfer: what trains at each epoch, the
backbone's learning-rate factor, and the frozen batch norms `train_step` keeps in evaluation mode.
"""

from __future__ import annotations

import contextlib

import torch

from cnnlab.build import build_for
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import tta_logits
from cnnlab.losses import make_loss
from cnnlab.train.optim import build_optimizer
from cnnlab.train.schedules import build_schedule
from cnnlab.train.transfer import Transfer

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchEngine:
    name = "torch"
    # config keys this engine ignores, with the value they must keep (none: it supports them all)
    UNSUPPORTED = {"backend": None}

    def __init__(self, config, num_classes, in_shape, steps_per_epoch, device="cpu", world=None):
        self.device = torch.device(device)
        if config.precision not in PRECISIONS:
            raise CnnlabError(f"unknown precision '{config.precision}': choose fp32, bf16 or fp16")
        if config.precision == "fp16" and self.device.type != "cuda":
            raise CnnlabError("fp16 training needs a CUDA device: use --precision bf16 on the CPU")
        self.amp_dtype = PRECISIONS[config.precision]
        # --resize / --input-channels: the model adapts the dataset's images itself (cnnlab.models.adapt)
        self.model = build_for(config, in_shape, num_classes).to(self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        distributed = world is not None and world.distributed
        if distributed and config.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.loss_fn = make_loss(config.loss or self.model.loss_name, config.label_smoothing)
        # --pretrained: the head, the backbone and what trains when (cnnlab.train.transfer; the weights
        # themselves are loaded by its hook on a new run)
        self.transfer = Transfer(self.model, config, distributed) if config.pretrained else None
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay,
                                         lr_scale=self.transfer.lr_scale() if self.transfer else None,
                                         optimizer_args=config.optimizer_args)
        self.schedule = build_schedule(self.optimizer, config.schedule, total_steps=config.epochs * steps_per_epoch,
                                       steps_per_epoch=steps_per_epoch, **config.schedule_args)
        self.eval_module = None  # set by the weight-average hook
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
        # The DDP and compiled wrappers share their parameters with self.model, which stays the one saved.
        trained = self.model
        if self.transfer is not None:  # frozen before the DDP wrapper, which takes the parameters that train
            self.transfer.set_epoch(0)
        if distributed:
            from cnnlab.train.distributed import data_parallel

            trained = data_parallel(self.model, world, self.device)
        self.forward = torch.compile(trained) if config.compile else trained
        # evaluation runs on one process: through the model itself, never the DDP wrapper's collectives
        self.eval_forward = self.model if distributed else self.forward
        self.grad_clip, self.tta = config.grad_clip, config.tta

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _input(self, x):
        return x.contiguous(memory_format=self.memory_format)

    def train_step(self, x, y):
        self.model.train()
        if self.transfer is not None:  # a frozen backbone's batch norms keep their statistics
            self.transfer.hold_norms()
        with self._autocast():
            scores = self.forward(self._input(x))
            loss = self.loss_fn(scores.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return loss.item(), int((scores.argmax(1) == y).sum())

    def compile_warm_up(self, x, y) -> float:
        """With --compile: compile the training step on one batch shaped like (x, y) before training,
        so its time is reported apart (summary's `compile_seconds`) instead of inside the first
        epoch; the weights, batch-norm statistics and optimizer are left as they were. Seconds."""
        import copy
        import time

        if self.forward is self.model:
            return 0.0
        start = time.perf_counter()
        saved = copy.deepcopy(self.model.state_dict())
        self.model.train()
        with self._autocast():
            loss = self.loss_fn(self.forward(self._input(x)).float(), y)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(saved)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    @torch.no_grad()
    def eval_logits(self, x):
        model = self.torch_model().eval()
        fn = model if self.eval_module is not None else self.eval_forward
        with self._autocast():
            x = self._input(x)
            return tta_logits(fn, x, self.tta).float()

    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def release(self):
        """Drop the DistributedDataParallel wrapper (before its process group is destroyed)."""
        self.forward = self.eval_forward = self.model

    def set_base_lr(self, lr: float):
        """A new base learning rate for the rest of the run (a resume with --lr): the schedule's
        curve is kept, scaled to the new base."""
        self.schedule.base_lrs = [lr * g.get("lr_scale", 1.0) for g in self.optimizer.param_groups]
        factor = self.schedule.lr_lambdas[0](self.schedule.last_epoch)
        for g in self.optimizer.param_groups:  # a scaled group (--backbone-lr-mult) keeps its factor
            g["initial_lr"] = lr * g.get("lr_scale", 1.0)
            g["lr"] = g["initial_lr"] * factor

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, d):
        self.model.load_state_dict(d["model"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.schedule.load_state_dict(d["schedule"])
        if d.get("scaler"):
            self.scaler.load_state_dict(d["scaler"])

    def torch_model(self):
        """The model that is evaluated and saved: the weight average when one is kept."""
        return self.eval_module if self.eval_module is not None else self.model

    @staticmethod
    def check(config):
        """Optimizer and its arguments, checked on a stand-in parameter (no model is built)."""
        build_optimizer(torch.nn.Linear(2, 2), config.optimizer, config.lr, momentum=config.momentum,
                        nesterov=config.nesterov, weight_decay=config.weight_decay, optimizer_args=config.optimizer_args)

    @classmethod
    def build(cls, config, num_classes, in_shape, steps_per_epoch, device="cpu", world=None) -> "TorchEngine":
        return cls(config, num_classes, in_shape, steps_per_epoch, device, world)
