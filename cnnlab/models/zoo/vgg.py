"""VGG with batch norm, CIFAR variants."""

from __future__ import annotations

from torch import nn

from cnnlab.models.registry import register_model
from cnnlab.models.zoo.blocks import conv_bn

CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """Simonyan & Zisserman, "Very deep convolutional networks for large-scale image
    recognition" (ICLR 2015), with batch norm after every convolution (Ioffe & Szegedy, 2015)
    and the CIFAR head: one fc from the 512 pooled features. Pools round up (ceil mode), so
    28x28 input still reaches 1x1 after five of them. `width` scales every channel count."""

    def __init__(self, depth=16, num_classes=10, in_channels=3, width=1.0, dropout=0.0):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        layers, cin = [], in_channels
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                cout = max(1, round(v * width))
                layers.append(conv_bn(cin, cout))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


@register_model("vgg11_bn", tags=("zoo", "vgg"))
def vgg11_bn(num_classes=10, in_channels=3, input_size=32, width=1.0, dropout=0.0, **_):
    """VGG-11 with batch norm, CIFAR variant (Simonyan & Zisserman, ICLR 2015): 9.23M parameters."""
    return VGG(11, num_classes, in_channels, width, dropout)


@register_model("vgg16_bn", tags=("zoo", "vgg"))
def vgg16_bn(num_classes=10, in_channels=3, input_size=32, width=1.0, dropout=0.0, **_):
    """VGG-16 with batch norm, CIFAR variant (Simonyan & Zisserman, ICLR 2015): 14.72M parameters."""
    return VGG(16, num_classes, in_channels, width, dropout)
