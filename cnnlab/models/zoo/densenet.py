"""DenseNet-BC for CIFAR."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k); the k new maps are concatenated to the
    input, not added (so this is not a residual block)."""

    def __init__(self, cin, growth):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.branch(x)], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv compressing the channels, then 2x2 average pooling."""

    def __init__(self, cin, cout):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False),
                                  nn.AvgPool2d(2, ceil_mode=True))

    def forward(self, x):
        return self.body(x)


class DenseNetBC(nn.Module):
    """Huang, Liu, van der Maaten & Weinberger, "Densely connected convolutional networks"
    (CVPR 2017), the BC variant for CIFAR: a 3x3 stem with 2k channels, three dense blocks
    of (depth-4)/6 bottleneck layers with growth rate k, transitions that halve the channels
    (compression 0.5), then BN-ReLU, global pooling and one fc. DenseNet-BC-100 with k=12
    has 0.77M parameters (the paper's 0.8M)."""

    def __init__(self, depth=100, growth=12, num_classes=10, in_channels=3, compression=0.5):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 (40, 100, 190, 250), got {depth}")
        n = (depth - 4) // 6
        c = 2 * growth
        layers = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if b < 2:
                cout = int(c * compression)
                layers.append(Transition(c, cout))
                c = cout
        layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


@register_model("densenet_bc_100", tags=("zoo", "densenet"))
def densenet_bc_100(num_classes=10, in_channels=3, input_size=32, depth=100, growth=12, compression=0.5, **_):
    """DenseNet-BC (Huang et al., CVPR 2017), depth 100, growth rate 12 by default;
    `depth` (6n+4) and `growth` select the other variants (e.g. depth=250, growth=24)."""
    return DenseNetBC(depth, growth, num_classes, in_channels, compression)
