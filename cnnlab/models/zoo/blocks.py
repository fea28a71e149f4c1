"""Building blocks shared by the zoo models: conv-bn-act, squeeze-and-excitation, the
residual blocks (`BasicBlock`, `Bottleneck`, `InvertedResidual`) and width rounding."""

from __future__ import annotations

from torch import nn


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    """Convolution, batch norm, then an activation (none when `act` is None)."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU) else act())
    return nn.Sequential(*layers)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never dropping more than 10%
    (the rounding MobileNet and EfficientNet use for their width multipliers)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu, Shen & Sun, 2018): rescale each channel by a gate
    computed from the globally pooled features through a two-layer bottleneck."""

    def __init__(self, channels, reduction=16, hidden=None, act=nn.ReLU):
        super().__init__()
        hidden = hidden or max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class PadShortcut(nn.Module):
    """The parameter-free CIFAR ResNet shortcut ("option A", He et al. 2016): subsample by
    the stride and zero-pad the new channels."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


def _shortcut(cin, cout, stride, kind):
    if stride == 1 and cin == cout:
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(cin, cout, stride)
    if kind == "conv":  # "option B": a strided 1x1 projection with batch norm
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    if kind == "preact":  # pre-activation nets project the already normalised input, no bn
        return nn.Conv2d(cin, cout, 1, stride, bias=False)
    raise ValueError(f"unknown shortcut kind {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut (He, Zhang, Ren & Sun, 2016).

    `preact=True` gives the pre-activation order bn-relu-conv (He et al., "Identity mappings
    in deep residual networks", 2016); `se_reduction` adds a squeeze-and-excitation gate on
    the residual branch before the addition (Hu et al., 2018).
    """

    residual = True
    expansion = 1

    def __init__(self, cin, cout, stride=1, shortcut="conv", preact=False, se_reduction=0):
        super().__init__()
        self.preact = preact
        if preact:
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.se = SqueezeExcite(cout, se_reduction) if se_reduction else nn.Identity()
        self.shortcut = _shortcut(cin, cout, stride, "preact" if preact else shortcut)

    def forward(self, x):
        if self.preact:
            out = self.relu(self.bn1(x))
            # a projection shortcut sees the normalised input, an identity one the raw input
            skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out)
            out = self.conv1(out)
            out = self.conv2(self.relu(self.bn2(out)))
            return self.se(out) + skip
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (by 4) plus a shortcut (He et al., 2016)."""

    residual = True
    expansion = 4

    def __init__(self, cin, width, stride=1, shortcut="conv", se_reduction=0):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.se = SqueezeExcite(cout, se_reduction) if se_reduction else nn.Identity()
        self.shortcut = _shortcut(cin, cout, stride, shortcut)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual (Sandler et al., 2018): 1x1 expand, depthwise KxK,
    1x1 linear projection; the input is added back when the shape is unchanged.
    With `se_reduction` and `act=nn.SiLU` it is EfficientNet's MBConv (Tan & Le, 2019).
    """

    def __init__(self, cin, cout, stride=1, expand=6, kernel=3, act=nn.ReLU6, se_reduction=0):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se_reduction:
            # EfficientNet sizes the gate from the block input, not the expanded width
            layers.append(SqueezeExcite(hidden, hidden=max(1, cin // se_reduction), act=act))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout  # per instance: strided blocks add nothing

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out
