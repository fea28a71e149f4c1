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

When a process fails or is killed, the others fail at their next collective operation (cnnlab's
own sums and broadcasts, DDP's gradient all-reduce in the backward pass, its parameter broadcast,
SyncBatchNorm's exchange): `watch_peers` turns each such failure into `PeerLost`, one line with
the command that continues the run, and the last checkpoint (written atomically by rank 0) is
intact. Under `cnnlab train --nproc` (LAUNCHER_ENV is set) the survivors stay quiet and the
launcher names the process that died (cnnlab.train.launch).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch

from cnnlab.errors import CnnlabError

# Set by `cnnlab train --nproc` (cnnlab.train.launch) to its own pid, for the processes it starts.
LAUNCHER_ENV = "CNNLAB_LAUNCHER_PID"


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
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except dist.DistError as e:  # e.g. the rendezvous port is taken, or the other processes never came
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CnnlabError(f"the training processes could not connect ({backend}): {why}; check MASTER_ADDR and "
                              "MASTER_PORT (torchrun's --rdzv-endpoint) and that every process started") from None
    return World(world.rank, world.size, world.local_rank, backend)


def leave(world: World):
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def launched_by_cnnlab() -> bool:
    """Whether `cnnlab train --nproc` started this process (not torchrun by hand or a cluster job)."""
    return bool(os.environ.get(LAUNCHER_ENV))


def resume_command(run_path, world: World) -> str:
    """The command that continues the run in `run_path` with the same processes."""
    command = f"cnnlab train --resume {run_path}"
    if not world.distributed:
        return command
    if launched_by_cnnlab():
        return f"{command} --nproc {world.size}"
    return f"torchrun (with the same options) -m {command}"


class PeerLost(CnnlabError):
    """A collective operation failed: another process of the job died or was stopped."""

    exit_code = 4  # not the user's input, and not this process's own failure

    def __init__(self, resume: str | None = None):
        super().__init__("lost contact with another training process (it died or was stopped), so this one "
                         "stopped too; " + (f"continue the run with: {resume}" if resume else
                                            "no run directory was written yet: run the same command again"))
        # under `cnnlab train --nproc` the launcher says which process died, in the job's one line
        self.quiet = launched_by_cnnlab()


def _collective_failure(e: BaseException) -> bool:
    """Whether `e` is a failed exchange with the other processes rather than a fault of this one.
    DDP's backward all-reduce on Gloo raises a plain RuntimeError whose message comes from Gloo's
    transport (e.g. "[.../gloo/transport/tcp/pair.cc:537] Read error ...: Connection reset by
    peer", measured with torch 2.13); NCCL and the c10d store raise torch.distributed.DistError."""
    import torch.distributed as dist

    if isinstance(e, dist.DistError):
        return True
    return isinstance(e, RuntimeError) and "gloo/transport/" in str(e)


@contextlib.contextmanager
def watch_peers(world: World, resume=lambda: None):
    """Around a distributed run: a failed collective operation becomes PeerLost with `resume()`, the
    command that continues the run (None before the run directory is known); anything else passes."""
    if not world.distributed:
        yield
        return
    try:
        yield
    except PeerLost:
        raise PeerLost(resume()) from None
    except RuntimeError as e:
        if not _collective_failure(e):
            raise
        raise PeerLost(resume()) from None


def sum_values(world: World, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all processes (float64)."""
    if not world.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    try:
        dist.all_reduce(t)
    except RuntimeError:  # all it does is exchange: any failure is a lost process
        raise PeerLost() from None
    return t.tolist()


def broadcast(world: World, obj):
    """Rank 0's `obj`, on every rank."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError:
        raise PeerLost() from None
    return box[0]


def check_processes(config, processes: int, train_images: int | None = None):
    """That `processes` processes can train `config` (a TrainConfig) together: on the torch engine,
    sharing every global batch as `share` cuts it: the batch splits evenly, and the training set
    (when known: --subset, or the loaded data) holds one whole batch (a short single batch would
    leave some processes a part or nothing)."""
    if processes <= 1:
        return
    if config.engine != "torch":
        raise CnnlabError(f"the {config.engine} engine trains in one process: drop --nproc or use --engine torch")
    batch_size = config.batch_size
    if batch_size % processes:
        low = max(processes, batch_size - batch_size % processes)
        raise CnnlabError(f"--batch-size {batch_size} does not split evenly over {processes} processes: use a "
                          f"multiple of {processes}, e.g. {low}")
    if train_images is not None and train_images < batch_size:
        fit = train_images - train_images % processes
        raise CnnlabError(f"the {train_images} training images are fewer than one --batch-size {batch_size} batch, "
                          f"which {processes} processes split: "
                          + (f"use --batch-size {fit} or less (a multiple of {processes})" if fit else
                             f"use at least {processes} training images"))


def share(batch_size: int, world: World) -> slice:
    """This process's contiguous share of a global batch."""
    per = batch_size // world.size
    return slice(world.rank * per, (world.rank + 1) * per)


def data_parallel(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over `model`; `model` itself stays the module that is saved."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else world.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
