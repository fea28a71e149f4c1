"""FastNet: the small VGG-like network of the fastest CIFAR-10 training recipes.

The layout follows K. Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU" (2024), itself
after tysam-code's hlb-CIFAR10 and D. Page's ResNet-9 work:

    PatchWhitening (2x2 patches -> 24 channels, fixed, fitted to the training images) -> GELU
    3 groups of [conv3x3 -> maxpool 2 -> BN -> GELU -> (conv3x3 -> BN -> GELU) x (depth - 1)]
    maxpool 3 -> fc (no bias) -> logits / width

Details that matter for speed of learning, each from that line of work:
- the first layer's filters are the eigenvectors of the training patches' covariance, scaled
  to unit variance, with their negatives (so the GELU after it keeps both signs); they never
  train. `PatchWhitening.init_from_data` fits them; the trainer's `DataInit` hook calls it on
  a new run with the first 5000 training images;
- batch norms have a fixed scale of 1 (only the shift trains), momentum 0.4 and eps 1e-12;
- each convolution starts as an identity on its first input channels (dirac init), so the
  net starts close to a shallow one;
- the head's weights start at unit standard deviation and the logits are divided by the width.

`depth` 2 is the 94% (original CIFAR-10) layout; `depth` 3 with wider groups is the 95-96%
layout of `fast96`. The recipes in cnnlab/recipes/ set the optimizer (Muon for the filters),
schedule and augmentation that go with it.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model


class PatchWhitening(nn.Conv2d):
    """A KxK, unpadded convolution whose 2*C*K*K filters whiten the image's KxK patches (ZCA-like
    PCA whitening, with each filter and its negative). The weights are fixed; the bias trains."""

    def __init__(self, in_channels=3, kernel_size=2, eps=5e-4):
        n = in_channels * kernel_size * kernel_size
        super().__init__(in_channels, 2 * n, kernel_size, padding=0, bias=True)
        self.weight.requires_grad = False
        self.eps = eps

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor):
        """Fit the filters to (N, C, H, W) normalised float images."""
        c, k = self.in_channels, self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        cov = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(cov)
        filters = (vectors.T / torch.sqrt(values.clamp_min(0) + self.eps)[:, None]).reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))


class _BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels):
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad = False


def _conv(cin, cout):
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, cin, cout, depth=2):
        layers = [_conv(cin, cout), nn.MaxPool2d(2), _BatchNorm(cout), nn.GELU()]
        for _ in range(depth - 1):
            layers += [_conv(cout, cout), _BatchNorm(cout), nn.GELU()]
        super().__init__(*layers)


class FastNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, widths=(64, 256, 256), depth=2, whiten_kernel=2):
        super().__init__()
        self.whiten = PatchWhitening(in_channels, whiten_kernel)
        cin = self.whiten.out_channels
        groups = []
        for w in widths:
            groups.append(ConvGroup(cin, w, depth))
            cin = w
        self.features = nn.Sequential(nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes, bias=False)
        with torch.no_grad():
            self.fc.weight.div_(self.fc.weight.std())
        self.scale = 1.0 / cin

    def forward(self, x):
        return self.fc(self.features(self.whiten(x))) * self.scale


@register_model("fastnet", tags=("zoo", "fast"))
def fastnet(num_classes=10, in_channels=3, input_size=32, widths=(64, 256, 256), depth=2, whiten_kernel=2, **_):
    """FastNet (K. Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024): a fixed
    patch-whitening layer, three conv groups (64, 256, 256 channels), GELU, frozen-scale batch
    norm; the `fast` and `fast-cpu` recipes' model. 1.97M parameters (10 classes)."""
    return FastNet(num_classes, in_channels, tuple(widths), depth, whiten_kernel)
