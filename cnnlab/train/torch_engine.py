"""The PyTorch engine: a registered model, an optimizer, a per-step LR schedule."""

from __future__ import annotations

import torch

from cnnlab.models import create_model
from cnnlab.train.losses import make_loss
from cnnlab.train.optim import build_optimizer
from cnnlab.train.schedules import build_schedule


class TorchEngine:
    name = "torch"

    def __init__(self, config, num_classes, in_shape, steps_per_epoch, device="cpu"):
        self.device = torch.device(device)
        c, h, w = in_shape
        self.model = create_model(config.model, num_classes=num_classes, in_channels=c, input_size=(h, w),
                                  **config.model_args).to(self.device)
        self.loss_fn = make_loss(config.loss or self.model.loss_name, config.label_smoothing)
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay,
                                         **config.optimizer_args)
        self.schedule = build_schedule(self.optimizer, config.schedule, total_steps=config.epochs * steps_per_epoch,
                                       steps_per_epoch=steps_per_epoch, **config.schedule_args)
        self.grad_clip = config.grad_clip

    def train_step(self, x, y):
        self.model.train()
        scores = self.model(x)
        loss = self.loss_fn(scores, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return loss.item(), int((scores.argmax(1) == y).sum())

    @torch.no_grad()
    def eval_logits(self, x):
        self.model.eval()
        return self.model(x)

    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, d):
        self.model.load_state_dict(d["model"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.schedule.load_state_dict(d["schedule"])

    def torch_model(self):
        return self.model


def build(config, num_classes, in_shape, steps_per_epoch, device="cpu"):
    return TorchEngine(config, num_classes, in_shape, steps_per_epoch, device)
