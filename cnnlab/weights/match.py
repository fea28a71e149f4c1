"""Pretrained weights into a cnnlab model: matching by name and shape, the load report, the copy.

    report = match_state_dict(model, state, model_name="resnet18")   # what fits, what is new, what not
    load_matched(model, report)                                      # copy what fits, in place
    head_modules(model)                                              # ["fc"]: never taken from a source

Matching is by name and shape, after renaming a torchvision or timm layout to cnnlab's names
(cnnlab.weights.layouts). An ImageNet ResNet's 7x7 stem does not fit the CIFAR ResNet's 3x3 stem
and is reported as skipped (the stem then starts new); MobileNetV2 differs only in strides, so
all of an ImageNet MobileNetV2 loads.

The model's head (its classifier, `head_keys`) is never taken from the source: a new task starts
a new head. The first convolution is adapted when only its input channels differ: a 3-channel
base for 1-channel images has its weights summed over the three input channels (the same as
feeding the gray image as three equal channels, as timm's `adapt_input_conv` does); a 1-channel
base for 3-channel images has them spread evenly.

This module knows tensors and names only; reading a source (a run directory, a checkpoint, a
file, a URL) is cnnlab.weights.sources' business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.weights.layouts import FAMILIES, LAYOUTS, strip_prefixes, to_cnnlab_names

# torch's convolutions (a Lazy variant becomes one of these at its first call)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# torch's norms that can keep running statistics, used instead of the batch's in evaluation mode
# (GroupNorm and LayerNorm keep none)
STATISTICS_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


# ---- the model's parts -----------------------------------------------------------------------


def _owns_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def head_modules(model: nn.Module) -> list[str]:
    """Names of the modules that make the model's head: its last Linear layer (the classifier;
    the last convolution for a model without one), and any module with weights registered after it."""
    owners = [(n, m) for n, m in model.named_modules() if _owns_params(m)]
    linear = [i for i, (_, m) in enumerate(owners) if isinstance(m, nn.Linear)]
    conv = [i for i, (_, m) in enumerate(owners) if isinstance(m, CONVOLUTIONS)]
    start = linear[-1] if linear else conv[-1] if conv else len(owners) - 1
    return [n for n, _ in owners[start:]]


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the head (`head_modules`)."""
    heads = head_modules(model)
    return {k for k in model.state_dict() if any(k.startswith(f"{h}.") for h in heads)}


def first_conv_key(model: nn.Module) -> str | None:
    """The weight key of the first (ungrouped) convolution, the one that sees the image."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            return f"{name}.weight" if name else "weight"
    return None


# ---- matching ------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a source gives a model: `loaded` (model keys, some `adapted`), `new` (model keys the
    source does not fill, with why) and `skipped` (source keys not used, with why)."""

    layout: str = "cnnlab"
    loaded: list = field(default_factory=list)
    adapted: dict = field(default_factory=dict)  # model key -> how its tensor was adapted
    new: dict = field(default_factory=dict)  # model key -> reason
    skipped: dict = field(default_factory=dict)  # source key -> reason
    loaded_params: int = 0
    backbone_params: int = 0  # parameters outside the head: what the source could fill
    tensors: dict = field(default_factory=dict, repr=False)  # model key -> tensor to copy

    def to_dict(self) -> dict:
        return {"layout": self.layout, "loaded": len(self.loaded), "loaded_params": self.loaded_params,
                "backbone_params": self.backbone_params, "loaded_keys": list(self.loaded),
                "adapted": dict(self.adapted), "new": dict(self.new), "skipped": dict(self.skipped)}


def _fold_input_channels(src: torch.Tensor, want: tuple):
    """A first-conv weight (O, Cs, k, k) for (O, Cd, k, k) inputs, or None when it cannot be adapted."""
    if src.ndim != 4 or len(want) != 4 or tuple(src.shape[:1]) + tuple(src.shape[2:]) != want[:1] + want[2:]:
        return None, ""
    cs, cd = src.shape[1], want[1]
    if cd == 1:
        return src.sum(dim=1, keepdim=True), f"summed over its {cs} input channels (1-channel images)"
    if cs == 1:
        return src.repeat(1, cd, 1, 1) / cd, f"spread over {cd} input channels (a 1-channel base)"
    return None, ""


def _shape(t) -> str:
    return "(" + ",".join(str(s) for s in t) + ")"


def match_state_dict(model: nn.Module, state: dict, head=None, model_name: str | None = None) -> LoadReport:
    """Which of `state`'s tensors fit `model` by name and shape (after renaming a torchvision or
    timm layout, see `to_cnnlab_names`). `head`: model keys never taken from the source (default:
    `head_keys(model)`; pass () to take everything that fits)."""
    target = model.state_dict()
    head = head_keys(model) if head is None else set(head)
    renamed, layout = to_cnnlab_names(state, model_name or getattr(model, "model_name", ""), target)
    origin = {}  # renamed key -> source key, for the skipped list
    plain = strip_prefixes(dict(state))
    if layout != "cnnlab":
        family = FAMILIES.get(model_name or getattr(model, "model_name", ""))
        mapping = LAYOUTS[layout.split("/")[0]][family](list(plain))
        origin = {mapping.get(k, k): k for k in plain}
    src_name = lambda k: origin.get(k, k)  # noqa: E731
    first = first_conv_key(model)
    params = {n for n, _ in model.named_parameters()}
    numel = {k: v.numel() for k, v in target.items()}
    report = LoadReport(layout=layout)
    report.backbone_params = sum(numel[k] for k in params if k not in head)
    for key, want in target.items():
        if key in head:
            report.new[key] = "head"
            continue
        if key not in renamed:
            if not key.endswith("num_batches_tracked"):
                report.new[key] = "not in the source"
            continue
        src = renamed[key]
        if not isinstance(src, torch.Tensor):
            report.new[key] = "not a tensor in the source"
            continue
        if tuple(src.shape) == tuple(want.shape):
            report.tensors[key] = src
        elif key == first:
            folded, how = _fold_input_channels(src, tuple(want.shape))
            if folded is None:
                report.new[key] = f"the source's {_shape(src.shape)} does not fit {_shape(want.shape)}"
                report.skipped[src_name(key)] = f"shape {_shape(src.shape)}, the model has {_shape(want.shape)}"
                continue
            report.tensors[key], report.adapted[key] = folded, how
        else:
            report.new[key] = f"the source's {_shape(src.shape)} does not fit {_shape(want.shape)}"
            report.skipped[src_name(key)] = f"shape {_shape(src.shape)}, the model has {_shape(want.shape)}"
            continue
        report.loaded.append(key)
        if key in params:
            report.loaded_params += numel[key]
    for key in renamed:
        if key in head and key in target:
            report.skipped[src_name(key)] = "the source's head; this model's head starts new"
        elif key not in target:
            report.skipped[src_name(key)] = "no such tensor in this model"
    return report


@torch.no_grad()
def load_matched(model: nn.Module, report: LoadReport):
    """Copy the report's tensors into the model, in place (the parameters stay the same objects)."""
    target = model.state_dict()
    for key, src in report.tensors.items():
        target[key].copy_(src.to(dtype=target[key].dtype))
