"""The training configuration: one dataclass, saved as `config.yaml` in every run directory.

    config = TrainConfig(model="lenet5", epochs=2)              # checked as it is made
    config = TrainConfig.from_dict(d, where="my.yaml")         # unknown keys too, named by `where`
    config.update({"lr": 0.1}, where="--set/--config")         # only these keys checked, once
    config.lr = 0.1                                             # checked too

A run directory's `config.yaml` holds every field below, resolved (defaults filled in), so a
run can be rebuilt from it alone: `cnnlab train --config RUN_DIR/config.yaml`.

Types live here, in the field annotations, and are checked once per value, where the value enters:
when a TrainConfig is made (the constructor, `from_dict`, `load`, `dataclasses.replace`), when
`update` lays a user's overrides over it (flags and --set), and when a field is assigned. An int
where a float is wanted is taken as a float; anything else of the wrong type is one error line naming
the key and its source (`where`), so a TrainConfig never holds a value of the wrong type. Ranges,
names and what each engine supports are checked by `cnnlab.train.validate.validate`, which every
entry point calls before any work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field

import yaml

from cnnlab.errors import CnnlabError
from cnnlab.io import check_keys, dataclass_from_dict, load_yaml_mapping

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "None": type(None)}


def field_types(name: str) -> list[str]:
    """The type names a TrainConfig field accepts, e.g. ['int', 'None']."""
    return [t.strip() for t in str(_FIELDS[name].type).split("|")]


def check_type(name: str, value, where: str = "config"):
    """`value` for the TrainConfig field `name` (an int becomes a float where a float is wanted);
    a value of another type is a CnnlabError naming the key."""
    allowed = field_types(name)
    kinds = [_TYPES[t] for t in allowed]
    ok = isinstance(value, tuple(kinds)) and not (isinstance(value, bool) and bool not in kinds)
    if not ok and float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        words = " or ".join("null" if t == "None" else ("a mapping" if t == "dict" else t) for t in allowed)
        raise CnnlabError(f"'{name}' in {where} must be {words}, got {value!r}")
    return value


@dataclass
class TrainConfig:
    # what to train
    engine: str = "torch"  # torch | scratch
    backend: str | None = None  # scratch engine kernels: numba (default) | numpy
    model: str = "lenet5"  # a registered name or a spec string
    model_args: dict = field(default_factory=dict)  # extra keyword arguments for the model builder
    loss: str | None = None  # softmax | svm; None: the model's own (a spec's last token)
    # data
    dataset: str = "mnist"
    data_dir: str | None = None  # None: $CNNLAB_DATA_DIR or the per-user cache
    val_size: int | None = None  # images carved out of the training set, seeded; None: 5000, or a tenth if smaller
    subset: int | None = None  # train on only this many training images
    augment: str = "none"  # e.g. "crop+flip", "crop:4+flip+cutout:8", "translate:2"
    resize: int | None = None  # resize images to resize x resize inside the model (e.g. 32: MNIST on a CIFAR base)
    input_channels: int | None = None  # repeat a 1-channel image to this many channels inside the model (e.g. 3)
    # transfer learning (cnnlab.train.transfer, docs/transfer.md)
    pretrained: str | None = None  # start from these weights: a run dir, a checkpoint, a .pt/.safetensors file or a URL
    pretrained_hash: str | None = None  # expected hash of the pretrained file: sha256:HEX (or md5:HEX; 8+ hex digits)
    freeze: str = "none"  # none (fine-tune everything) | backbone (only the new head trains)
    unfreeze_epochs: int | None = None  # with freeze backbone: thaw it from the top, all of it after this many epochs
    backbone_lr_mult: float = 1.0  # the backbone's learning rate as a multiple of lr (fine-tuning)
    # optimisation
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"  # sgd | adam (and more, see cnnlab.train.optim)
    lr: float | None = None  # None: the optimizer's usual default
    momentum: float = 0.9  # SGD's; for muon, its filters' momentum (see cnnlab.train.optim.muon)
    nesterov: bool = False  # SGD's; muon is Nesterov unless optimizer_args says nesterov: false
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
    tta: bool | int = False  # test-time augmentation: true (1) the image and its mirror; 2 also 1-pixel shifts
    precision: str = "fp32"  # fp32 | bf16 (CPU and CUDA) | fp16 (CUDA, with loss scaling)
    channels_last: bool = False  # NHWC memory layout (faster convolutions on recent GPUs and CPUs)
    compile: bool = False  # torch.compile the model
    sync_bn: bool = False  # with several processes: batch-norm statistics over the global batch (SyncBatchNorm)
    # run control
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads for torch and the Numba loader; None: cnnlab.device.choose_threads
    eval_batch_size: int = 1000
    save_every_steps: int | None = None  # mid-epoch checkpoint interval; None: every 60 s
    deterministic: bool = False  # deterministic algorithms (bitwise-repeatable runs on CUDA too, somewhat slower)
    tensorboard: bool = False  # also log scalars, the first layer's filters and the graph to RUN_DIR/tensorboard/
    out: str | None = None  # run directory; None: runs/<model>-<dataset>-<time>
    # not a field: where the values come from, named in a type error (a file, "--set/--config", ...)
    source: InitVar[str] = "config"

    def __post_init__(self, source: str):
        for name in _FIELDS:
            object.__setattr__(self, name, check_type(name, getattr(self, name), source))

    def __setattr__(self, name, value):
        # the dataclass __init__ assigns the fields one by one, and __post_init__ checks them all with
        # `source`; once every field is set, an assignment is a change and is checked on its own
        if name in _FIELDS and _FIELDS.keys() <= self.__dict__.keys():
            value = check_type(name, value)
        object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        d = dict(d)
        args = d.get("model_args")
        if isinstance(args, dict) and "backend" in args and "backend" not in d:
            # configs written before `backend` was its own key kept it in model_args
            args = dict(args)
            d["backend"] = args.pop("backend")
            d["model_args"] = args
        return dataclass_from_dict(cls, d, where, source=where)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        d = load_yaml_mapping(path, "config file")
        if not d:  # an empty or truncated file would otherwise train the defaults, unnoticed
            raise CnnlabError(f"config file {path} is empty: give the keys that differ from the defaults, "
                              "or leave --config out")
        return cls.from_dict(d, where=str(path))

    def update(self, values: dict, where: str = "config") -> "TrainConfig":
        """Lay `values` over this config (a user's overrides), each checked once, an unknown key or a
        wrong type as one error line naming `where`; return the config."""
        check_keys(type(self), values, where)
        for name, value in values.items():
            object.__setattr__(self, name, check_type(name, value, where))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
