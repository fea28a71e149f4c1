"""Foreign key layouts: the one table (`LAYOUTS`) that renames torchvision's and timm's state-dict
keys to cnnlab's, and the choice of the layout a state dict is in.

    state, layout = to_cnnlab_names(state, "resnet18", model.state_dict())   # layout: "torchvision/timm"
    mapping = LAYOUTS["timm"]["mobilenet_v2"](list(state))                  # {timm key: cnnlab key}

For each published layout (torchvision, timm) and model family (`FAMILIES`: ResNet-18/34/50,
MobileNetV2), a function takes the source's keys and returns {source key: cnnlab key}; keys it
does not know are left as they are. cnnlab's zoo models are the CIFAR layouts of the same
networks, so every tensor keeps its shape except where the layouts differ (an ImageNet ResNet's
7x7 stem; cnnlab.weights.match reports it). A layout is chosen per state dict: the one under
which the most tensors fit the model by name and shape.

Adding a layout or a family is one entry here:

    def _mylib_resnet(keys) -> dict:                  # {source key: cnnlab key}
        return {k: k.replace("stages.", "blocks.") for k in keys}

    LAYOUTS["mylib"] = {"resnet": _mylib_resnet}       # a new layout of a known family
    FAMILIES["resnet101"] = "resnet"                   # a cnnlab model that reads the family's layouts
"""

from __future__ import annotations

import re

import torch


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
