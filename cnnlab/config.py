"""The training configuration: one dataclass, saved as `config.yaml` in every run directory.

A run directory's `config.yaml` holds every field below, resolved (defaults filled in), so a
run can be rebuilt from it alone: `cnnlab train --config RUN_DIR/config.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import yaml

from cnnlab.io import dataclass_from_dict, load_yaml_mapping


@dataclass
class TrainConfig:
    # what to train
    engine: str = "torch"  # torch | scratch
    model: str = "lenet5"  # a registered name or a spec string
    model_args: dict = field(default_factory=dict)  # extra keyword arguments for the model builder
    loss: str | None = None  # softmax | svm; None: the model's own (a spec's last token)
    # data
    dataset: str = "mnist"
    data_dir: str | None = None  # None: $CNNLAB_DATA_DIR or the per-user cache
    val_size: int | None = None  # images carved out of the training set, seeded; None: 5000, or a tenth if smaller
    subset: int | None = None  # train on only this many training images
    augment: str = "none"  # e.g. "crop+flip", "crop:4+flip+cutout:8", "translate:2"
    # optimisation
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"  # sgd | adam (and more, see cnnlab.train.optim)
    lr: float | None = None  # None: the optimizer's usual default
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    optimizer_args: dict = field(default_factory=dict)  # e.g. {betas: [0.9, 0.99]}, {lookahead_k: 5}
    schedule: str = "none"  # none | step | cosine (and more, see cnnlab.train.schedules)
    schedule_args: dict = field(default_factory=dict)  # e.g. {step_epochs: 10, gamma: 0.1, warmup_epochs: 1}
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    early_stop: int | None = None  # patience in epochs without a better validation accuracy
    max_seconds: float | None = None  # stop once this much training time is spent (equal-time comparisons)
    # speed and accuracy tricks (PyTorch engine)
    ema: float | None = None  # decay of an exponential moving average of the weights, e.g. 0.999; evaluated instead
    tta: bool = False  # test-time augmentation: average the scores of each image and its mirror image
    precision: str = "fp32"  # fp32 | bf16 (CPU and CUDA) | fp16 (CUDA, with loss scaling)
    channels_last: bool = False  # NHWC memory layout (faster convolutions on recent GPUs and CPUs)
    compile: bool = False  # torch.compile the model
    # run control
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads for torch; None: torch's default
    eval_batch_size: int = 1000
    save_every_steps: int | None = None  # mid-epoch checkpoint interval; None: every 60 s
    out: str | None = None  # run directory; None: runs/<model>-<dataset>-<time>

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        return dataclass_from_dict(cls, d, where)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        d = load_yaml_mapping(path, "config file")
        return cls.from_dict(d, where=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
