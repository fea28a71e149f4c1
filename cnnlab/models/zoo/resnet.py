"""Residual networks in their CIFAR layouts: ResNet-20/32/56 (and any 6n+2 depth),
ResNet-18/34/50, pre-activation ResNet-18, ResNet-9 and squeeze-and-excitation variants."""

from __future__ import annotations

from torch import nn

from cnnlab.models.registry import register_model
from cnnlab.models.zoo.blocks import BasicBlock, Bottleneck, conv_bn


class CifarResNet(nn.Module):
    """He, Zhang, Ren & Sun, "Deep residual learning for image recognition" (CVPR 2016), §4.2:
    a 3x3 stem, three stages of n basic blocks at 16, 32, 64 channels (times `width`),
    stride 2 between stages, global average pooling, one fc. Depth is 6n+2. Shortcuts are
    parameter-free ("option A") as in the paper, so ResNet-20 has 0.27M parameters.
    """

    def __init__(self, depth=20, num_classes=10, in_channels=3, width=1, shortcut="pad", se_reduction=0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = conv_bn(in_channels, widths[0])
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, shortcut, se_reduction=se_reduction))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


class ResNet(nn.Module):
    """He et al. (2016) ImageNet ResNets in the usual CIFAR layout: a 3x3 stride-1 stem and
    no max pooling, then four stages at 64-128-256-512 channels (times `width`/64 via
    `base`), strides 1-2-2-2, 1x1 projection shortcuts. ResNet-18 has 11.17M parameters.
    `preact=True` gives the pre-activation ResNet (He et al., "Identity mappings in deep
    residual networks", ECCV 2016)."""

    def __init__(self, block, layers, num_classes=10, in_channels=3, base=64, preact=False, se_reduction=0):
        super().__init__()
        self.preact = preact
        if preact:
            self.stem = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
        else:
            self.stem = conv_bn(in_channels, base)
        blocks, cin = [], base
        for i, n in enumerate(layers):
            w = base * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                if block is Bottleneck:
                    blocks.append(Bottleneck(cin, w, stride, se_reduction=se_reduction))
                    cin = w * Bottleneck.expansion
                else:
                    blocks.append(BasicBlock(cin, w, stride, preact=preact, se_reduction=se_reduction))
                    cin = w
        self.blocks = nn.Sequential(*blocks)
        # a pre-activation net ends with the bn-relu its last block left out
        self.head_norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.head_norm(self.blocks(self.stem(x)))).flatten(1))


class ResNet9(nn.Module):
    """ResNet-9, the fast DAWNBench CIFAR-10 layout (D. Page, "How to train your ResNet",
    2018): prep conv 64; conv 128 + pool + residual block; conv 256 + pool; conv 512 + pool
    + residual block; global max pool; fc; logits scaled by 0.125. The residual blocks
    here are standard `BasicBlock`s (ReLU after the addition)."""

    def __init__(self, num_classes=10, in_channels=3, width=64, scale=0.125):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_channels, w),
            conv_bn(w, 2 * w), nn.MaxPool2d(2, ceil_mode=True), BasicBlock(2 * w, 2 * w),
            conv_bn(2 * w, 4 * w), nn.MaxPool2d(2, ceil_mode=True),
            conv_bn(4 * w, 8 * w), nn.MaxPool2d(2, ceil_mode=True), BasicBlock(8 * w, 8 * w),
            nn.AdaptiveMaxPool2d(1),
        )
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.scale = scale

    def forward(self, x):
        return self.fc(self.features(x).flatten(1)) * self.scale


def _cifar(depth, se=0, tags=("zoo", "resnet")):
    def build(num_classes=10, in_channels=3, input_size=32, width=1, shortcut="pad", se_reduction=se, **_):
        return CifarResNet(depth, num_classes, in_channels, width, shortcut, se_reduction)

    build.__doc__ = CifarResNet.__doc__ if not se else (
        f"SE-ResNet-{depth}: Hu, Shen & Sun, \"Squeeze-and-excitation networks\" (CVPR 2018), on the "
        f"CIFAR ResNet-{depth} of He et al. (2016); one SE gate (reduction {se}) per basic block.")
    return build


for _depth in (20, 32, 56):
    register_model(f"resnet{_depth}", tags=("zoo", "resnet"))(_cifar(_depth))
for _depth in (20, 56):
    register_model(f"se_resnet{_depth}", tags=("zoo", "resnet", "se"))(_cifar(_depth, se=16))


@register_model("resnet18", tags=("zoo", "resnet"))
def resnet18(num_classes=10, in_channels=3, input_size=32, base=64, **_):
    """ResNet-18, CIFAR layout (He et al., CVPR 2016): 11.17M parameters for 10 classes."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, base)


@register_model("resnet34", tags=("zoo", "resnet"))
def resnet34(num_classes=10, in_channels=3, input_size=32, base=64, **_):
    """ResNet-34, CIFAR layout (He et al., CVPR 2016): 21.28M parameters for 10 classes."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, base)


@register_model("resnet50", tags=("zoo", "resnet"))
def resnet50(num_classes=10, in_channels=3, input_size=32, base=64, **_):
    """ResNet-50, CIFAR layout, bottleneck blocks (He et al., CVPR 2016): 23.52M parameters."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, base)


@register_model("preact_resnet18", tags=("zoo", "resnet"))
def preact_resnet18(num_classes=10, in_channels=3, input_size=32, base=64, **_):
    """Pre-activation ResNet-18 (He, Zhang, Ren & Sun, "Identity mappings in deep residual
    networks", ECCV 2016), CIFAR layout."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, base, preact=True)


@register_model("se_resnet18", tags=("zoo", "resnet", "se"))
def se_resnet18(num_classes=10, in_channels=3, input_size=32, base=64, se_reduction=16, **_):
    """SE-ResNet-18: Hu, Shen & Sun, "Squeeze-and-excitation networks" (CVPR 2018), on the
    CIFAR-layout ResNet-18; one SE gate (reduction 16) per basic block."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, base, se_reduction=se_reduction)


@register_model("resnet9", tags=("zoo", "resnet"))
def resnet9(num_classes=10, in_channels=3, input_size=32, width=64, **_):
    """ResNet-9, the DAWNBench CIFAR-10 layout (D. Page, "How to train your ResNet", 2018)."""
    return ResNet9(num_classes, in_channels, width)
