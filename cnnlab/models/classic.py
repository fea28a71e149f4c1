"""The classic models: a multilayer perceptron, LeNet-5 and the spec-built ConvNet."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.models.registry import register_model
from cnnlab.models.spec import parse_spec, resolve
from cnnlab.models.zoo.fastnet import PatchWhitening


def _hw(input_size):
    return (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)


class SpecResidual(nn.Module):
    """A spec's residual block `r[...]`: body(x) + shortcut(x), the shortcut x itself or a strided
    1x1 convolution (the spec grammar's projection). `residual = True` marks it for analyses (the
    cost model holds its input until the addition)."""

    residual = True

    def __init__(self, layer):
        super().__init__()
        self.body = nn.Sequential(*(layer_to_torch(item[0]) for item in layer.args["body"]))
        shortcut = layer.args["shortcut"]
        if shortcut is not None:
            self.shortcut = layer_to_torch(shortcut[0])

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if hasattr(self, "shortcut") else x)


def layer_to_torch(layer) -> nn.Module:
    """One resolved spec layer as a PyTorch module."""
    a = layer.args
    k = layer.kind
    if k == "residual":
        return SpecResidual(layer)
    if k == "conv":
        return nn.Conv2d(a["in"], a["out"], a["k"], stride=a["stride"], padding=a["pad"], groups=a["groups"])
    if k == "whiten":  # fitted to the data by the trainer's DataInit hook on a new run
        return PatchWhitening(a["in"], a["k"])
    if k == "maxpool":
        return nn.MaxPool2d(a["k"], a["stride"])
    if k == "avgpool":
        return nn.AvgPool2d(a["k"], a["stride"])
    if k == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if k == "bn":
        return nn.BatchNorm2d(a["features"]) if a.get("ndim", 3) == 3 else nn.BatchNorm1d(a["features"])
    if k == "fc":
        return nn.Linear(a["in"], a["out"])
    if k == "flatten":
        return nn.Flatten()
    if k == "dropout":
        return nn.Dropout(a["p"])
    if k == "lrelu":
        return nn.LeakyReLU(a["slope"])
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if k in acts:
        return acts[k]()
    raise SpecError(f"layer '{layer.token}' ({k}) has no PyTorch equivalent")


class SpecNet(nn.Sequential):
    """A feed-forward network built from a spec string (see `cnnlab.models.spec`)."""

    def __init__(self, spec: str, num_classes: int, in_channels: int, input_size):
        parsed = parse_spec(spec)
        resolved = resolve(parsed, (in_channels, *_hw(input_size)), num_classes)
        super().__init__(*(layer_to_torch(layer) for layer, _, _ in resolved))
        self.spec = parsed.text
        self.loss_name = parsed.loss


@register_model("convnet", tags=("classic",))
def convnet(num_classes=10, in_channels=3, input_size=32, spec="c32k3-relu-p2-c64k3-relu-p2-fc128-relu", **_):
    """A plain ConvNet from an architecture spec string (LeCun et al., 1998, in spirit)."""
    return SpecNet(spec, num_classes, in_channels, input_size)


@register_model("mlp", tags=("classic",))
def mlp(num_classes=10, in_channels=3, input_size=32, hidden=(512, 256), dropout=0.0, **_):
    """A multilayer perceptron on flattened pixels (Rumelhart, Hinton & Williams, 1986)."""
    hidden = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
    tokens = ["flat"]
    for h in hidden:
        tokens += [f"fc{h}", "relu"] + ([f"d{dropout}"] if dropout else [])
    return SpecNet("-".join(tokens), num_classes, in_channels, input_size)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-based learning applied to
    document recognition"): conv 6@5x5 - pool - conv 16@5x5 - pool - fc120 - fc84 - fc.

    The classic layout expects 32x32 input; on 28x28 (MNIST) the first convolution pads by 2
    so both sizes reach the same 16x5x5 feature map. ReLU and max pooling by default, as
    most courses teach it; `activation="tanh", pool="avg"` gives the 1998 flavour.
    """

    def __init__(self, num_classes=10, in_channels=3, input_size=32, activation="relu", pool="max"):
        super().__init__()
        h, w = _hw(input_size)
        pad = max(0, (32 - min(h, w)) // 2)
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        pool_cls = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad), act(), pool_cls(2),
            nn.Conv2d(6, 16, 5), act(), pool_cls(2),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, in_channels, h, w)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(n, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet5", tags=("classic",))
def lenet5(num_classes=10, in_channels=3, input_size=32, activation="relu", pool="max", **_):
    return LeNet5(num_classes, in_channels, input_size, activation, pool)
