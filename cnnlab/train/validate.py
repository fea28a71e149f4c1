"""One validation of a TrainConfig, for every entry point, before any data is read or file written.

    validate(config)                   raises CnnlabError naming the key and the fix
    validate(config, new_run=False)    a resumed run, or a study's runs before they start

Types are the TrainConfig's own (cnnlab.config: checked once, as each value enters it). Checks,
in order: ranges (the RANGES table), names (engine, dataset, loss, optimizer (asking the optimizer
table whether the engine has it), schedule, precision, device, augmentation, model or spec), what the
chosen engine supports (its `UNSUPPORTED` table and its own `check`), the transfer-learning
options' rules (cnnlab.train.transfer.check_transfer), that `out` can take a new run, and for a
new run the `--pretrained` source, read and matched against the model (check_source). `cnnlab train` (flags, --config, --set), study files and `cnnlab.train.loop.train`
(the Python API) all go through here, so the same mistake gives the same line everywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError

_finite = math.isfinite

# key -> (holds for a valid value (None is always valid where the type allows it), what it must be)
RANGES = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "eval_batch_size": (lambda v: v >= 1, "at least 1"),
    "lr": (lambda v: _finite(v) and v > 0, "a positive finite number"),
    "momentum": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "zero or a positive finite number"),
    "label_smoothing": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "grad_clip": (lambda v: _finite(v) and v > 0, "a positive finite gradient norm (leave it unset for no clipping)"),
    "early_stop": (lambda v: v >= 1, "at least 1 epoch"),
    "max_seconds": (lambda v: _finite(v) and v > 0, "a positive number of seconds"),
    "ema": (lambda v: _finite(v) and 0 < v < 1, "a decay in (0, 1), e.g. 0.999"),
    "val_size": (lambda v: v >= 0, "zero or more images"),
    "subset": (lambda v: v >= 1, "at least 1 image"),
    "seed": (lambda v: 0 <= v < 2**63, "a non-negative integer"),
    "threads": (lambda v: v >= 1, "at least 1"),
    "save_every_steps": (lambda v: v >= 1, "at least 1 step"),
    "resize": (lambda v: 1 <= v <= 4096, "a side in pixels, e.g. 32"),
    "input_channels": (lambda v: 1 <= v <= 64, "a channel count, e.g. 3"),
    "unfreeze_epochs": (lambda v: v >= 1, "at least 1 epoch"),
    "backbone_lr_mult": (lambda v: _finite(v) and v > 0, "a positive factor, e.g. 0.1"),
    "tta": (lambda v: 0 <= v <= 2, "false, true (flip) or 2 (flip and 1-pixel shifts)"),
}
FLAG = {"batch_size": "--batch-size", "eval_batch_size": "eval_batch_size", "weight_decay": "--weight-decay",
        "label_smoothing": "--label-smoothing", "grad_clip": "--grad-clip", "early_stop": "--early-stop",
        "max_seconds": "--max-seconds", "val_size": "--val-size", "save_every_steps": "--save-every-steps",
        "model_args": "model_args", "optimizer_args": "optimizer_args", "schedule_args": "schedule_args"}
PRECISIONS = ("fp32", "bf16", "fp16")


def flag(key: str) -> str:
    """How a user sets `key`: its flag where it has one, else the config key."""
    return FLAG.get(key, f"--{key.replace('_', '-')}")


def check_ranges(config: TrainConfig):
    for key, (ok, must) in RANGES.items():
        value = getattr(config, key)
        if value is not None and not ok(value):
            raise CnnlabError(f"{flag(key)} must be {must}, got {value!r}")


def check_names(config: TrainConfig):
    from cnnlab.data.augment import parse_augment
    from cnnlab.device import check_device_name
    from cnnlab.data.registry import check_dataset_name
    from cnnlab.losses import check_loss
    from cnnlab.train.engines import engine_class
    from cnnlab.train.optim import check_optimizer
    from cnnlab.train.schedules import schedule_factor

    engine_class(config.engine)  # imports every engine, so each has registered its optimizers
    check_optimizer(config.optimizer, config.engine)
    check_dataset_name(config.dataset)
    if config.loss is not None:
        check_loss(config.loss)
    if config.precision not in PRECISIONS:
        raise CnnlabError(f"unknown precision '{config.precision}': choose fp32, bf16 or fp16")
    check_device_name(config.device)
    if config.precision == "fp16" and str(config.device).lower() == "cpu":
        raise CnnlabError("fp16 training needs a CUDA device: use --precision bf16 on the CPU")
    parse_augment(config.augment)
    check_model(config)
    schedule_factor(config.schedule, total_steps=max(10, config.epochs * 10), steps_per_epoch=10,
                    **config.schedule_args)(0)


def check_model(config: TrainConfig):
    """A registered name or a spec that parses, with model_args its builder takes (nothing is built)."""
    from cnnlab.models.registry import check_model_options, list_models
    from cnnlab.models.spec import looks_like_spec, parse_spec

    if config.model not in list_models() and looks_like_spec(config.model):
        check_spec_memory(config, parse_spec(config.model))
    check_model_options(config.model, config.model_args)  # an unknown name is named here, with suggestions


# Bytes a training step holds per parameter (weights, gradient, two optimizer buffers) and per
# activation element of the largest layer (forward value and gradient, a few live at once).
_BYTES_PER_PARAM, _BYTES_PER_ACTIVATION = 16, 4 * 2 * 4


def available_memory() -> int | None:
    from cnnlab.envinfo import meminfo_bytes

    return meminfo_bytes("MemAvailable")


def check_spec_memory(config: TrainConfig, spec):
    """Refuse a spec whose training step cannot fit this machine's memory, before building it."""
    from cnnlab.data.registry import dataset_input
    from cnnlab.models.spec import resolve, spec_size

    where = dataset_input(config.dataset)
    if where is None:  # an image folder: the shape is known only from its files
        return
    shape, classes = where
    params, largest = spec_size(resolve(spec, shape, classes))
    need = params * _BYTES_PER_PARAM + largest * _BYTES_PER_ACTIVATION * max(config.batch_size, config.eval_batch_size)
    have = available_memory()
    if have is not None and need > have:
        raise CnnlabError(f"model '{config.model}' needs about {need / 2**30:.1f} GiB to train ({params:,} parameters, "
                          f"batch {config.batch_size}); this machine has {have / 2**30:.1f} GiB available: "
                          "use fewer or narrower layers, or a smaller --batch-size")


def check_engine_support(config: TrainConfig):
    from cnnlab.train.engines import engine_class

    cls = engine_class(config.engine)
    for key, keep in cls.UNSUPPORTED.items():
        if getattr(config, key) != keep:
            raise CnnlabError(f"the {config.engine} engine does not support {flag(key)} (got {getattr(config, key)!r}): "
                              f"drop it{' or use --engine torch' if config.engine != 'torch' else ''}")
    cls.check(config)


def check_out(config: TrainConfig):
    if config.out is None:
        return
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise CnnlabError(f"--out {out} is a file: give a directory for the run")
    if out.is_dir() and any(out.iterdir()):
        raise CnnlabError(f"run directory {out} already exists: resume it with --resume {out}, or choose another --out")


def validate(config: TrainConfig, new_run: bool = True, read_source: bool | None = None) -> TrainConfig:
    """Check `config` completely; return it. `new_run=False` skips the --out check
    and, unless `read_source=True` (a study, before its runs start), reading the --pretrained source
    (a resumed run has the weights in its checkpoints)."""
    from cnnlab.train.transfer import check_source, check_transfer

    if not isinstance(config, TrainConfig):
        raise CnnlabError(f"a training config must be a TrainConfig, got {type(config).__name__}")
    check_ranges(config)
    check_names(config)
    check_engine_support(config)
    check_transfer(config)
    if config.tensorboard:
        from cnnlab.train.tensorboard import require_tensorboard

        require_tensorboard()
    if new_run:
        check_out(config)
    if new_run if read_source is None else read_source:
        check_source(config)  # --pretrained read and matched against the model, before any run directory exists
    return config
