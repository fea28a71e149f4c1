"""Batches of normalised float tensors from uint8 images held in memory.

No per-image Python work: a batch is one index into the uint8 tensor, one conversion and
normalisation, and the batch-wide augmentation ops. The order of epoch `e` and the
augmentation of its batch `b` depend only on (seed, e, b), so iteration can start at any
batch of any epoch and give exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import torch

from cnnlab.data.augment import apply_augment, parse_augment, split_pixel_ops
from cnnlab.data.fused import fusable, fused_batch


def _generator(*keys) -> torch.Generator:
    seed = 0
    for k in keys:  # a simple mixing hash; keeps nearby seeds far apart
        seed = (seed * 6364136223846793005 + int(k) + 1442695040888963407) % (1 << 63)
    return torch.Generator().manual_seed(seed)


class BatchLoader:
    def __init__(self, split, batch_size, mean, std, shuffle=False, seed=0, augment=None, device="cpu",
                 drop_last=False):
        self.device = torch.device(device)
        # On a GPU the whole uint8 split lives there: CIFAR-10 is 150 MB.
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.ops = parse_augment(augment) if isinstance(augment, (str, type(None))) else augment
        self.pixel_ops, self.float_ops = split_pixel_ops(self.ops)
        if any(name == "altflip" for name, _, _ in self.ops):  # each image's flip in even epochs, fixed by the seed
            bits = torch.rand(len(self.y), generator=_generator(self.seed, 99)) < 0.5
            self.flip_bits = bits.to(self.device)
        self.fused = self.device.type == "cpu" and fusable(self.ops)
        c = self.x.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255)

    def warm_up(self):
        """Start the fused kernel's thread pool now. Numba's first parallel launch resets OpenMP's
        thread count (measured: torch.get_num_threads() goes from 1 back to 2 on this 2-core
        machine), so a caller that sets torch's threads does it after this, not before."""
        if self.fused and len(self.y):
            fused_batch(self.x[:1], self._bound(self.ops, torch.arange(1), 0), torch.Generator().manual_seed(0),
                        self.mean, self.inv_std)

    def __len__(self):
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return x_uint8.float().sub_(self.mean).mul_(self.inv_std)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.y), device=self.device)
        return torch.randperm(len(self.y), generator=_generator(self.seed, epoch)).to(self.device)

    def altflip_mask(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """Which of the images `idx` the alternating flip mirrors in `epoch`."""
        return self.flip_bits[idx.to(self.device)] ^ bool(epoch % 2)

    def _bound(self, ops, idx, epoch):
        """The ops with the alternating flip's mask for this batch as its argument."""
        return [(name, fn, self.altflip_mask(idx, epoch) if name == "altflip" else arg) for name, fn, arg in ops]

    def batch(self, idx: torch.Tensor, epoch: int = 0, b: int = 0):
        x = self.x[idx]
        if self.fused:
            x = fused_batch(x, self._bound(self.ops, idx, epoch), _generator(self.seed, epoch, b, 7), self.mean,
                            self.inv_std)
        elif self.ops:
            gen = _generator(self.seed, epoch, b, 7)
            x = self.normalize(apply_augment(self._bound(self.pixel_ops, idx, epoch), x, gen))
            x = apply_augment(self._bound(self.float_ops, idx, epoch), x, gen)
        else:
            x = self.normalize(x)
        return x, self.y[idx]

    def epoch(self, epoch: int = 0, start: int = 0):
        """Yield (x, y) for batches start, start+1, ... of the given epoch."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield self.batch(order[b * self.batch_size:(b + 1) * self.batch_size], epoch, b)

    __iter__ = epoch
