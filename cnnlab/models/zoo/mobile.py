"""Mobile architectures adapted to 32x32: MobileNetV2, ShuffleNetV2 and EfficientNet-B0.

The ImageNet versions shrink the image 32-fold; at 32x32 that leaves 1x1 maps after three
stages, so the CIFAR adaptations keep the stem (and MobileNetV2/EfficientNet's second
stage) at stride 1 and drop ShuffleNet's max pool. Everything else follows the papers.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model
from cnnlab.models.zoo.blocks import InvertedResidual, conv_bn, make_divisible


class MobileNetV2(nn.Module):
    """Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: inverted residuals and linear
    bottlenecks" (CVPR 2018), CIFAR variant: stem and the 24-channel stage at stride 1.
    `width` is the paper's width multiplier."""

    # expansion t, channels c, repeats n, stride s (the paper's Table 2, CIFAR strides)
    STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=10, in_channels=3, width=1.0, dropout=0.2):
        super().__init__()
        cin = make_divisible(32 * width)
        layers = [conv_bn(in_channels, cin, 3, 1, act=nn.ReLU6)]
        for t, c, n, s in self.STAGES:
            cout = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = make_divisible(1280 * max(1.0, width))
        layers += [conv_bn(cin, last, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit. Stride 1: split the channels, transform one half (1x1, depthwise
    3x3, 1x1), concatenate, shuffle. Stride 2: both halves see the full input and are
    downsampled, doubling the channels. Concatenation, not addition: not a residual block."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride == 2 else cin // 2
        self.branch = nn.Sequential(
            conv_bn(branch_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1),
        )
        if stride == 2:
            self.shortcut = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, half, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch(b)], 1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Ma, Zhang, Zheng & Sun, "ShuffleNet V2: practical guidelines for efficient CNN
    architecture design" (ECCV 2018), CIFAR variant: 3x3 stride-1 stem, no max pool, three
    stages of 4-8-4 units, a 1x1 conv, global pooling, fc. `width` is the paper's
    complexity setting: 0.5, 1.0, 1.5 or 2.0."""

    WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}

    def __init__(self, num_classes=10, in_channels=3, width=1.0):
        super().__init__()
        if float(width) not in self.WIDTHS:
            raise ValueError(f"ShuffleNetV2 width must be one of {sorted(self.WIDTHS)}, got {width}")
        *stages, last = self.WIDTHS[float(width)]
        cin = 24
        layers = [conv_bn(in_channels, cin, 3, 1)]
        for cout, n in zip(stages, (4, 8, 4)):
            for i in range(n):
                layers.append(ShuffleUnit(cin, cout, 2 if i == 0 else 1))
                cin = cout
        layers += [conv_bn(cin, last, 1), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class EfficientNet(nn.Module):
    """Tan & Le, "EfficientNet: rethinking model scaling for convolutional neural networks"
    (ICML 2019), B0 adapted to 32x32: MBConv blocks (inverted residuals with
    squeeze-and-excitation, reduction 4, and SiLU/swish), stem and the 24-channel stage at
    stride 1. `width` and `depth` are the compound-scaling multipliers (B0: 1.0, 1.0)."""

    # expansion, channels, repeats, stride, kernel (the paper's Table 1, CIFAR strides)
    STAGES = [(1, 16, 1, 1, 3), (6, 24, 2, 1, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
              (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]

    def __init__(self, num_classes=10, in_channels=3, width=1.0, depth=1.0, dropout=0.2):
        super().__init__()
        import math

        cin = make_divisible(32 * width)
        layers = [conv_bn(in_channels, cin, 3, 1, act=nn.SiLU)]
        for t, c, n, s, k in self.STAGES:
            cout = make_divisible(c * width)
            for i in range(int(math.ceil(n * depth))):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, k, act=nn.SiLU, se_reduction=4))
                cin = cout
        last = make_divisible(1280 * width)
        layers += [conv_bn(cin, last, 1, act=nn.SiLU), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model("mobilenet_v2", tags=("zoo", "mobile"))
def mobilenet_v2(num_classes=10, in_channels=3, input_size=32, width=1.0, dropout=0.2, **_):
    """MobileNetV2 (Sandler et al., CVPR 2018), CIFAR strides; `width` multiplier."""
    return MobileNetV2(num_classes, in_channels, width, dropout)


@register_model("shufflenet_v2", tags=("zoo", "mobile"))
def shufflenet_v2(num_classes=10, in_channels=3, input_size=32, width=1.0, **_):
    """ShuffleNetV2 (Ma et al., ECCV 2018), CIFAR stem; `width` 0.5, 1.0, 1.5 or 2.0."""
    return ShuffleNetV2(num_classes, in_channels, width)


@register_model("efficientnet_b0", tags=("zoo", "mobile"))
def efficientnet_b0(num_classes=10, in_channels=3, input_size=32, width=1.0, depth=1.0, dropout=0.2, **_):
    """EfficientNet-B0 (Tan & Le, ICML 2019) adapted to 32x32; `width`/`depth` multipliers."""
    return EfficientNet(num_classes, in_channels, width, depth, dropout)
