"""Data-parallel training on torch.distributed: the few points where the trainer needs to know.

    cnnlab train ... --nproc 2                       # one machine: cnnlab starts torchrun for you
    torchrun --nproc-per-node 2 -m cnnlab train ...  # the same, by hand
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m cnnlab train ...

Each process reads RANK, WORLD_SIZE and LOCAL_RANK from the environment torchrun sets, joins
the process group (NCCL on GPUs, Gloo on CPUs) and trains a DistributedDataParallel copy of the
model. The data stay in the "(seed, epoch, batch) decides the batch" order: every process builds
the same global batch of `batch_size` images and trains on its own contiguous share of it
(batch_size / world_size images), so N processes see exactly the images, in the same batches,
that one process would. Metrics are summed over the processes. Only rank 0 writes the run
directory and checkpoints; every rank restores from the same checkpoint on --resume (multi-node
runs need the run directory on a file system all nodes share).

When a process fails or is killed, the others fail at their next collective operation; the job
ends with one line naming it, and the last checkpoint (written atomically by rank 0) is intact.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun describes in the environment (a single process when it describes none)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise CnnlabError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)") from None
    return World(rank, size, local) if size > 1 else SINGLE


def join(world: World, device: torch.device, timeout_s: float = 600) -> World:
    """Join the process group; NCCL when training on CUDA, else Gloo."""
    import torch.distributed as dist

    if not world.distributed:
        return world
    if not dist.is_available():
        raise CnnlabError("this PyTorch build has no torch.distributed: train in one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(world.rank, world.size, world.local_rank, backend)


def leave(world: World):
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _lost(e: Exception) -> CnnlabError:
    return CnnlabError(f"lost contact with another training process ({type(e).__name__}): it failed or was "
                       "stopped; the last checkpoint is intact, continue with --resume")


def sum_values(world: World, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all processes (float64)."""
    if not world.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    try:
        dist.all_reduce(t)
    except (RuntimeError, dist.DistBackendError) as e:
        raise _lost(e) from None
    return t.tolist()


def broadcast(world: World, obj):
    """Rank 0's `obj`, on every rank."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0)
    except (RuntimeError, dist.DistBackendError) as e:
        raise _lost(e) from None
    return box[0]


def share(batch_size: int, world: World) -> slice:
    """This process's contiguous share of a global batch."""
    per = batch_size // world.size
    return slice(world.rank * per, (world.rank + 1) * per)


def data_parallel(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over `model`; `model` itself stays the module that is saved."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else world.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
