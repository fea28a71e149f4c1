"""Transfer learning: start from pretrained weights, train the new head alone, fine-tune, or thaw gradually.

    cnnlab train --model resnet20 --dataset mnist --pretrained runs/cifar-base --freeze backbone --resize 32
    cnnlab train ... --pretrained runs/cifar-base                                  # fine-tune everything
    cnnlab train ... --pretrained runs/cifar-base --backbone-lr-mult 0.1           # the backbone at lr/10
    cnnlab train ... --pretrained runs/cifar-base --freeze backbone --unfreeze-epochs 3   # thaw over 3 epochs

Three pieces, each where it belongs:

- `Transfer`, built by the PyTorch engine with the model: the model's head (its classifier,
  cnnlab.weights.head_modules) and backbone, the backbone cut into units from the input
  to the head (the stem, each residual or inverted-residual block, ...), and what trains at a
  given epoch. Frozen parameters get no gradient (requires_grad=False), and the batch norms of
  frozen layers are kept in evaluation mode while training, so their statistics stay those of
  the source. With `--unfreeze-epochs K` the units thaw from the top: after epoch e (of K) the top
  floor(U * e / K) of the U units train, all of them from epoch K on. What trains is a function
  of the epoch alone, so a resumed run trains exactly what an uninterrupted one would.
  `--backbone-lr-mult` puts the backbone in optimizer groups of its own at that multiple of the
  learning rate (cnnlab.train.optim.param_groups, `lr_scale`); schedules keep the ratio.
- `TransferHook` (a named hook, before the weight average in cnnlab.train.defaults.default_hooks):
  on a new run it reads the source (cnnlab.weights.sources), matches it by name and shape
  (cnnlab.weights.match), copies what
  fits into the model, prints and logs what was loaded, what is new and what was skipped, and
  keeps that report in its checkpointed state; at each epoch's end it applies the next epoch's
  freezing; at the end it adds `pretrained` and `transfer` to summary.json. A resumed run never
  reads the source again: the weights are in its checkpoints.
- `check_transfer` and `check_source`, called by cnnlab.train.validate: the options' rules, and
  the source read and matched against the model (built on the meta device) before any run
  directory exists, so an unusable source is one line and exit code 2.

Layers the source did not fill (the head, and anything whose shape did not fit, e.g. an ImageNet
ResNet's 7x7 stem in a CIFAR ResNet, with the batch norm after it) always train.
"""

from __future__ import annotations

import math

from torch import nn

from cnnlab.build import build_for
from cnnlab.data.registry import dataset_input
from cnnlab.errors import CnnlabError
from cnnlab.train.hooks import Hook
from cnnlab.train.progress import EpochTable
from cnnlab.weights import (CONVOLUTIONS, FAMILIES, STATISTICS_NORMS, head_modules, load_matched, match_state_dict,
                            read_source, split_source)

FREEZE = ("none", "backbone")


def _has_weights(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(isinstance(x, STATISTICS_NORMS) for x in m.modules())


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def backbone_units(model: nn.Module, head: list[str]) -> list[str]:
    """The backbone in units, from the input to the head: top-level layers, with containers of
    blocks (a Sequential of residual blocks, ...) opened into their blocks."""
    def composite(m):
        return any(_has_weights(c) and any(True for _ in c.children()) for c in m.children())

    def walk(module, prefix):
        out = []
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if not _has_weights(child) or full in head:
                continue
            holds_head = any(_inside(h, full) for h in head)
            if holds_head or (isinstance(child, (nn.Sequential, nn.ModuleList)) and composite(child)):
                out += walk(child, full + ".")
            else:
                out.append(full)
        return out

    units = walk(model, "")
    # a flat network (a spec) lists a convolution and its batch norm apart: they thaw together
    kinds = dict(model.named_modules())
    merged = []
    for u in units:
        prev = merged[-1][-1] if merged else None
        if (prev is not None and isinstance(kinds[u], STATISTICS_NORMS) and isinstance(kinds[prev], CONVOLUTIONS)
                and _parent(prev) == _parent(u)):
            merged[-1].append(u)
        else:
            merged.append([u])
    return ["+".join(m) for m in merged]


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _unit_parts(unit: str) -> list[str]:
    return unit.split("+")


class Transfer:
    """The head, the backbone's units and what trains at each epoch (owned by the PyTorch engine)."""

    def __init__(self, model: nn.Module, config, distributed: bool = False):
        self.model = model
        self.freeze, self.unfreeze_epochs = config.freeze, config.unfreeze_epochs
        self.backbone_lr_mult = config.backbone_lr_mult
        self.head = head_modules(model)
        self.units = backbone_units(model, self.head)
        self.always = list(self.head)  # module names that train whatever the epoch
        self.distributed = distributed
        if distributed and self.unfreeze_epochs:
            raise CnnlabError("--unfreeze-epochs changes what trains during the run, which several processes "
                              "(DistributedDataParallel) cannot follow: drop --nproc or --unfreeze-epochs")
        self.frozen_norms: list = []
        self._fixed = None  # with several processes: the trainable set the DDP wrapper was built with
        self.epoch = None

    # ---- what trains when

    def thawed_units(self, epoch: int) -> int:
        """How many units, counted from the head down, train in `epoch` (0-based)."""
        if self.freeze == "none":
            return len(self.units)
        if not self.unfreeze_epochs:
            return 0
        if epoch >= self.unfreeze_epochs:
            return len(self.units)
        return math.floor(len(self.units) * epoch / self.unfreeze_epochs)

    def _trains(self, module_name: str, epoch: int) -> bool:
        if any(_inside(module_name, a) for a in self.always):
            return True
        n = self.thawed_units(epoch)
        if n >= len(self.units):
            return True
        return any(_inside(module_name, part) for u in self.units[len(self.units) - n:] for part in _unit_parts(u))

    def trainable_at(self, epoch: int) -> int:
        return sum(p.numel() for name, p in self.model.named_parameters() if self._trains(_parent(name), epoch))

    def set_epoch(self, epoch: int):
        """Freeze and thaw for `epoch`: requires_grad per parameter, and the frozen batch norms."""
        self.epoch = epoch
        trainable = set()
        for name, p in self.model.named_parameters():
            on = self._trains(_parent(name), epoch)
            p.requires_grad_(on)
            if on:
                trainable.add(name)
        self.frozen_norms = [m for name, m in self.model.named_modules()
                             if isinstance(m, STATISTICS_NORMS) and not self._trains(name, epoch)]
        if self.distributed:
            if self._fixed is None:
                self._fixed = trainable
            elif trainable != self._fixed:
                raise CnnlabError("with several processes the parameters that train must be fixed when training "
                                  "starts, but the source leaves part of the frozen backbone new: train in one "
                                  "process (drop --nproc), or drop --freeze")

    def hold_norms(self):
        """After model.train(): the frozen layers' batch norms back to evaluation mode."""
        for m in self.frozen_norms:
            m.eval()

    def mark_new(self, keys):
        """Modules whose weights the source did not fill train from the start (with the batch norm
        registered right after a new convolution)."""
        keys = set(keys)
        owners = [(n, m) for n, m in self.model.named_modules()
                  if any(True for _ in m.parameters(recurse=False)) or isinstance(m, STATISTICS_NORMS)]
        new = {n for n, _ in owners if any(_parent(k) == n for k in keys)}
        for (n, m), (n2, m2) in zip(owners, owners[1:]):
            if n in new and isinstance(m, CONVOLUTIONS) and isinstance(m2, STATISTICS_NORMS):
                new.add(n2)
        self.always = list(dict.fromkeys(self.always + sorted(new - set(self.always))))

    # ---- the optimizer

    def lr_scale(self) -> dict | None:
        """parameter -> learning-rate factor: the backbone's at --backbone-lr-mult (None when 1)."""
        if self.backbone_lr_mult in (None, 1.0):
            return None
        return {p: float(self.backbone_lr_mult) for name, p in self.model.named_parameters()
                if not any(_inside(_parent(name), h) for h in self.head)}


# ---- reading and loading a source ----------------------------------------------------------------

def _names(keys, limit=4) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _by_reason(d: dict) -> dict:
    out = {}
    for k, why in d.items():
        out.setdefault(why, []).append(k)
    return out


def _hint(source, config, names_match: bool = True) -> str:
    m = source.meta
    if m.get("model") and m["model"] != config.model:
        args = f" with model_args {m['model_args']}" if m.get("model_args") else ""
        return f"the source is a {m['model']} trained on {m.get('dataset')}: use --model {m['model']}{args}"
    if m.get("model_args") and m.get("model_args") != dict(config.model_args):
        return f"the source was built with model_args {m['model_args']}: use the same"
    if m.get("shape") and m.get("input_channels") is None and m.get("resize") is None:
        return f"the source took {'x'.join(map(str, m['shape']))} images: check --resize and --input-channels"
    if names_match:
        return (f"the names match but the shapes do not: is it a {config.model} built with other options "
                "(a width, a depth), or for other images?")
    if source.kind in ("state dict", "safetensors") and config.model not in FAMILIES:
        return (f"cnnlab renames torchvision and timm layouts of {', '.join(FAMILIES)} only; for {config.model} "
                "the source must use cnnlab's own names (a cnnlab run or checkpoint)")
    return f"is it a checkpoint of {config.model}?"


def check_usable(source, report, config):
    """A one-line error when nothing of the source fits the model's backbone."""
    if report.loaded_params > 0:
        return
    shape = [f"{k} {why}" for k, why in report.skipped.items() if why.startswith("shape")]
    absent = [k for k, why in report.skipped.items() if why.startswith("no such")]
    seen = []
    if shape:
        seen.append(f"{len(shape)} have other shapes (e.g. {shape[0]})")
    if absent:
        seen.append(f"{len(absent)} have names {config.model} lacks (e.g. {absent[0]})")
    detail = "; ".join(seen) or "none are weights of its backbone"
    raise CnnlabError(f"nothing in --pretrained {source.spec} fits {config.model}: of its {len(source.state)} "
                      f"tensors, {detail}; {_hint(source, config, names_match=len(shape) > len(absent))}")


def plan(model: nn.Module, config):
    """(Source, LoadReport) of config.pretrained against `model`; raises when unusable.

    A new run calls it twice, at validation (on a model without weights) and when the run starts,
    and reads the source both times rather than holding its tensors in between: a second read of a
    102 MB state dict (ImageNet ResNet-50 size; torch.load and its SHA-256) took 0.1 s on a 2-core
    CPU, 0.06-0.1 s for 47 MB (ResNet-18 size); a downloaded source is read from cnnlab's cache."""
    source = read_source(config.pretrained, config.pretrained_hash)
    report = match_state_dict(model, source.state, model_name=config.model)
    check_usable(source, report, config)
    return source, report


def report_lines(source, report, config) -> list[str]:
    """What the run prints and logs about the source."""
    m = source.meta
    what = source.kind + (f", {m['model']} on {m.get('dataset')}" if m.get("model") else "")
    if report.layout != "cnnlab":
        what += f", {report.layout} layout"
    lines = [f"pretrained: {source.spec} ({what}; {source.file.name}, sha256 {source.sha256[:12]})"]
    loaded = (f"pretrained: loaded {len(report.loaded)} tensors, {report.loaded_params:,} of the backbone's "
              f"{report.backbone_params:,} parameters")
    for key, how in report.adapted.items():
        loaded += f"; {key} {how}"
    lines.append(loaded)
    if report.backbone_params and report.loaded_params < 0.5 * report.backbone_params:
        shape = sum(1 for why in report.skipped.values() if why.startswith("shape"))
        absent = sum(1 for why in report.skipped.values() if why.startswith("no such"))
        lines.append(f"pretrained: warning: only {100 * report.loaded_params / report.backbone_params:.0f}% of the "
                     f"backbone came from the source; {_hint(source, config, names_match=shape > absent)}")
    for why, keys in _by_reason(report.new).items():
        lines.append(f"pretrained: new ({'the head' if why == 'head' else why}): {_names(keys)}")
    for why, keys in _by_reason(report.skipped).items():
        lines.append(f"pretrained: skipped from the source ({why}): {_names(keys)}")
    return lines


def _say(t, line: str):
    """A line on stdout and in train.log, before the trainer's epoch table exists."""
    if getattr(t, "table", None) is not None:
        t.log(line)
        return
    EpochTable(t.run if t.main else None, quiet=t.quiet or not t.main).message(line)


def _trainable_line(tr: Transfer, epoch: int) -> str:
    total = sum(p.numel() for p in tr.model.parameters())
    n = tr.trainable_at(epoch)
    if tr.freeze == "none":
        mult = f", the backbone at {tr.backbone_lr_mult:g}x the learning rate" if tr.lr_scale() else ""
        return f"transfer: fine-tuning, {n:,} of {total:,} parameters train{mult}"
    extra = ("the head" if set(tr.always) == set(tr.head) else "the head and the layers the source did not fill")
    line = (f"transfer: backbone frozen, {n:,} of {total:,} parameters train ({extra}; frozen batch norms keep "
            "their statistics)")
    if tr.unfreeze_epochs:
        line += f"; its {len(tr.units)} units thaw from the top over {tr.unfreeze_epochs} epochs"
    return line


class TransferHook(Hook):
    """--pretrained: load the source on a new run, freeze and thaw by the epoch, report it all."""

    name = "transfer"

    def __init__(self, config):
        self.config = config
        self.report = None  # the load report (source, loaded, new, skipped), kept in checkpoints
        self.t = None

    def on_start(self, t):
        self.t = t
        tr = t.engine.transfer
        if t.progress.step == 0 and t.progress.epoch == 0 and self.report is None:  # a new run: load the source
            source, report = plan(t.engine.model, t.config)
            load_matched(t.engine.model, report)
            for line in report_lines(source, report, t.config):
                _say(t, line)
            self.report = {**source.describe(), **report.to_dict()}
            tr.mark_new(k for k, why in report.new.items())
            tr.set_epoch(0)
            _say(t, _trainable_line(tr, 0))
        else:
            tr.set_epoch(t.progress.epoch)

    def load_state_dict(self, state):
        self.report = state.get("report")
        tr = self.t.engine.transfer
        tr.mark_new((self.report or {}).get("new", {}))
        tr.set_epoch(self.t.progress.epoch)

    def state_dict(self):
        return {"report": self.report}

    def on_epoch_end(self, t, row):
        tr = t.engine.transfer
        before = tr.thawed_units(tr.epoch if tr.epoch is not None else t.progress.epoch)
        tr.set_epoch(t.progress.epoch)
        after = tr.thawed_units(t.progress.epoch)
        if after != before and not t.progress.done:
            units = tr.units[len(tr.units) - after:len(tr.units) - before]
            t.log(f"transfer: epoch {t.progress.epoch + 1} thaws {_names(units)}: "
                  f"{tr.trainable_at(t.progress.epoch):,} parameters train")

    def on_end(self, t, summary):
        tr = t.engine.transfer
        summary["pretrained"] = self.report
        summary["transfer"] = {
            "freeze": tr.freeze, "unfreeze_epochs": tr.unfreeze_epochs, "backbone_lr_mult": tr.backbone_lr_mult,
            "head": tr.head, "units": tr.units, "always_trained": tr.always,
            "trainable_params_by_epoch": [tr.trainable_at(e) for e in range(summary.get("epochs_run") or 0)],
        }


# ---- validation ----------------------------------------------------------------------------------

def check_transfer(config):
    """The rules of the transfer options (no file is read)."""
    if config.freeze not in FREEZE:
        raise CnnlabError(f"unknown --freeze '{config.freeze}': choose none (fine-tune everything) or backbone "
                          "(only the new head trains)")
    if config.freeze != "none" and not config.pretrained:
        raise CnnlabError("--freeze backbone keeps pretrained weights fixed: add --pretrained SOURCE")
    if config.unfreeze_epochs is not None and config.freeze != "backbone":
        raise CnnlabError("--unfreeze-epochs thaws a frozen backbone gradually: add --freeze backbone")
    if config.backbone_lr_mult != 1.0 and not config.pretrained:
        raise CnnlabError("--backbone-lr-mult scales the pretrained backbone's learning rate: add --pretrained SOURCE")
    if config.backbone_lr_mult != 1.0 and config.freeze == "backbone" and config.unfreeze_epochs is None:
        raise CnnlabError("--backbone-lr-mult has no effect on a backbone that stays frozen: drop it, or thaw the "
                          "backbone with --unfreeze-epochs N")
    if config.pretrained_hash and not config.pretrained:
        raise CnnlabError("--pretrained-hash checks the --pretrained file: add --pretrained SOURCE")
    if config.pretrained:
        split_source(config.pretrained, config.pretrained_hash)  # the hashes' form
    if config.input_channels:
        where = dataset_input(config.dataset)
        if where is not None and where[0][0] != 1:
            raise CnnlabError(f"--input-channels repeats a one-channel image; {config.dataset} images have "
                              f"{where[0][0]} channels: drop it")


def check_source(config):
    """Read config.pretrained and match it against the model (built on the meta device, no weights),
    so an unusable source fails before any run directory is made."""
    if not config.pretrained:
        return
    where = dataset_input(config.dataset)
    if where is None:  # an image folder: its shape is known only from its files; the run checks at its start
        read_source(config.pretrained, config.pretrained_hash)
        return
    (shape, classes) = where
    model = build_for(config, shape, classes, device="meta")
    plan(model, config)
