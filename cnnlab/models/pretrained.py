"""Pretrained weights into a cnnlab model: key layouts, matching by name and shape, the load report.

    state, layouts = to_cnnlab_names(state, "resnet18", model.state_dict())   # torchvision/timm names renamed
    report = match_state_dict(model, state, head={"fc.weight", "fc.bias"})    # what fits, what is new, what not
    load_matched(model, report)                                              # copy what fits

`LAYOUTS` is the one table of foreign key layouts: for each published layout (torchvision,
timm) and model family (ResNet-18/34/50, MobileNetV2), a function that renames a state dict's
keys to cnnlab's. cnnlab's zoo models are the CIFAR layouts of the same networks, so every
tensor keeps its shape except where the layouts differ: an ImageNet ResNet's 7x7 stem does
not fit the CIFAR ResNet's 3x3 stem and is reported as skipped (the stem then starts new);
MobileNetV2 differs only in strides, so all of an ImageNet MobileNetV2 loads.

Matching is by name and shape. The model's head (its classifier, `head_keys`) is never taken
from the source: a new task starts a new head. The first convolution is adapted when only its
input channels differ: a 3-channel base for 1-channel images has its weights summed over the
three input channels (the same as feeding the gray image as three equal channels, as timm's
`adapt_input_conv` does); a 1-channel base for 3-channel images has them spread evenly.

This module knows tensors and names only; reading a source (a run directory, a checkpoint, a
file, a URL) is cnnlab.train.pretrained's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

# ---- the layouts --------------------------------------------------------------------------------


def _blocks_per_stage(keys, pattern: str) -> dict:
    """{stage: number of blocks} from keys matching `pattern` (groups: stage, block)."""
    found = {}
    for k in keys:
        m = re.match(pattern, k)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            found[stage] = max(found.get(stage, 0), block + 1)
    return found


def _offsets(counts: dict) -> dict:
    out, total = {}, 0
    for stage in sorted(counts):
        out[stage] = total
        total += counts[stage]
    return out


def _resnet(keys) -> dict:
    """torchvision's and timm's ResNet names (they agree): conv1/bn1, layerS.B.{conv,bn}N,
    layerS.B.downsample.{0,1}, fc -> cnnlab's stem.{0,1}, blocks.K.{conv,bn}N, blocks.K.shortcut.{0,1}, fc."""
    offset = _offsets(_blocks_per_stage(keys, r"^layer(\d+)\.(\d+)\."))
    out = {}
    for k in keys:
        if m := re.match(r"^conv1\.(.+)$", k):
            out[k] = f"stem.0.{m.group(1)}"
        elif m := re.match(r"^bn1\.(.+)$", k):
            out[k] = f"stem.1.{m.group(1)}"
        elif m := re.match(r"^layer(\d+)\.(\d+)\.downsample\.(\d+)\.(.+)$", k):
            out[k] = f"blocks.{offset[int(m.group(1))] + int(m.group(2))}.shortcut.{m.group(3)}.{m.group(4)}"
        elif m := re.match(r"^layer(\d+)\.(\d+)\.((?:conv|bn)\d\..+)$", k):
            out[k] = f"blocks.{offset[int(m.group(1))] + int(m.group(2))}.{m.group(3)}"
        elif m := re.match(r"^fc\.(.+)$", k):
            out[k] = f"fc.{m.group(1)}"
    return out


def _torchvision_mobilenet(keys) -> dict:
    """torchvision's MobileNetV2: features.0 (stem) and features.18 (1x1 conv) as in cnnlab;
    features.N.conv = [expand ConvBNReLU,] depthwise ConvBNReLU, a bare 1x1 conv, its BN ->
    cnnlab's features.N.block = [expand,] depthwise, Sequential(1x1 conv, BN); classifier.1."""
    last = {}  # block -> index of its final BN in `conv`
    for k in keys:
        if m := re.match(r"^features\.(\d+)\.conv\.(\d+)\.[a-z_]+$", k):
            last[m.group(1)] = max(last.get(m.group(1), 0), int(m.group(2)))
    out = {}
    for k in keys:
        if re.match(r"^features\.\d+\.\d+\.", k) or k.startswith("classifier."):
            out[k] = k
        elif m := re.match(r"^features\.(\d+)\.conv\.(\d+)\.(\d+)\.(.+)$", k):  # a ConvBNReLU
            out[k] = f"features.{m.group(1)}.block.{m.group(2)}.{m.group(3)}.{m.group(4)}"
        elif m := re.match(r"^features\.(\d+)\.conv\.(\d+)\.([a-z_]+)$", k):
            n, i, p = m.group(1), int(m.group(2)), m.group(3)
            if i == last[n]:  # the projection's BN
                out[k] = f"features.{n}.block.{i - 1}.1.{p}"
            else:  # the bare 1x1 projection conv
                out[k] = f"features.{n}.block.{i}.0.{p}"
    return out


def _timm_mobilenet(keys) -> dict:
    """timm's mobilenetv2_*: conv_stem/bn1, blocks.S.B.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}
    (the first stage's depthwise-separable block: conv_dw/bn1, conv_pw/bn2), conv_head/bn2,
    classifier -> cnnlab's features.0, features.N.block, features.(blocks + 1), classifier.1."""
    counts = _blocks_per_stage(keys, r"^blocks\.(\d+)\.(\d+)\.")
    offset = _offsets(counts)
    head = 1 + sum(counts.values())
    inverted = {(m.group(1), m.group(2)) for k in keys if (m := re.match(r"^blocks\.(\d+)\.(\d+)\.conv_pwl\.", k))}
    ir = {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "conv_pwl": "2.0", "bn3": "2.1"}
    ds = {"conv_dw": "0.0", "bn1": "0.1", "conv_pw": "1.0", "bn2": "1.1"}
    out = {}
    for k in keys:
        if m := re.match(r"^conv_stem\.(.+)$", k):
            out[k] = f"features.0.0.{m.group(1)}"
        elif m := re.match(r"^bn1\.(.+)$", k):
            out[k] = f"features.0.1.{m.group(1)}"
        elif m := re.match(r"^conv_head\.(.+)$", k):
            out[k] = f"features.{head}.0.{m.group(1)}"
        elif m := re.match(r"^bn2\.(.+)$", k):
            out[k] = f"features.{head}.1.{m.group(1)}"
        elif m := re.match(r"^classifier\.(.+)$", k):
            out[k] = f"classifier.1.{m.group(1)}"
        elif m := re.match(r"^blocks\.(\d+)\.(\d+)\.([a-z_]+\d?)\.(.+)$", k):
            s, b, layer, p = m.groups()
            table = ir if (s, b) in inverted else ds
            if layer in table:
                out[k] = f"features.{1 + offset[int(s)] + int(b)}.block.{table[layer]}.{p}"
    return out


# layout -> model family -> rename(source keys) -> {source key: cnnlab key}
LAYOUTS = {
    "torchvision": {"resnet": _resnet, "mobilenet_v2": _torchvision_mobilenet},
    "timm": {"resnet": _resnet, "mobilenet_v2": _timm_mobilenet},
}
# cnnlab model -> the family whose published layouts it reads
FAMILIES = {"resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet", "mobilenet_v2": "mobilenet_v2"}
# wrappers other tools put around a state dict's keys: DistributedDataParallel, torch.compile
_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state: dict) -> dict:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def to_cnnlab_names(state: dict, model_name: str, target: dict) -> tuple[dict, str]:
    """(state renamed to cnnlab's keys, the layout it was in: 'cnnlab', 'torchvision', 'timm' or
    'torchvision/timm' where they agree). The layout chosen is the one under which the most tensors
    fit `target` (a state dict or {key: shape}) by name and shape."""
    state = strip_prefixes({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    shape = {k: tuple(v.shape) for k, v in target.items()}

    def fits(renamed):
        return sum(1 for k, v in renamed.items() if shape.get(k) == tuple(v.shape))

    best, best_fit, names = state, fits(state), ["cnnlab"]
    family = FAMILIES.get(model_name)
    for layout, families in LAYOUTS.items():
        if family not in families:
            continue
        mapping = families[family](list(state))
        renamed = {mapping.get(k, k): v for k, v in state.items()}
        n = fits(renamed)
        if n > best_fit:
            best, best_fit, names = renamed, n, [layout]
        elif n == best_fit and n > 0 and names != ["cnnlab"] and renamed.keys() == best.keys():
            names.append(layout)
    return best, "/".join(names)


# ---- the model's parts -----------------------------------------------------------------------


def _owns_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def head_modules(model: nn.Module) -> list[str]:
    """Names of the modules that make the model's head: its last Linear layer (the classifier;
    the last convolution for a model without one), and any module with weights registered after it."""
    owners = [(n, m) for n, m in model.named_modules() if _owns_params(m)]
    linear = [i for i, (_, m) in enumerate(owners) if isinstance(m, nn.Linear)]
    conv = [i for i, (_, m) in enumerate(owners) if isinstance(m, nn.modules.conv._ConvNd)]
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
