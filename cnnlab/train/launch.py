"""`cnnlab train --nproc N`: the same command in N processes, started by torchrun.

The launcher is torchrun itself (torch.distributed.run, in this process, with a standalone
rendezvous on this machine); each process runs `python -m cnnlab train ...` with the same
arguments less --nproc, and `cnnlab.train.distributed` takes it from there. When a process fails,
torchrun stops the others; the launcher then says which one failed and how, in one line, and
returns that process's exit code (1 when it was killed by a signal).

OMP_NUM_THREADS is set for the processes (torchrun would otherwise set 1 and warn): --threads
when given, else the cores divided among the processes, so N processes do not fight over them.
"""

from __future__ import annotations

import logging
import os
import signal

from cnnlab.envinfo import cpu_cores
from cnnlab.errors import CnnlabError


class ProcessFailed(CnnlabError):
    exit_code = 1  # not the user's input: a process died


def launch(nproc: int, argv: list[str], threads: int | None = None) -> int:
    if nproc < 1:
        raise CnnlabError(f"--nproc must be at least 1, got {nproc}")
    if os.environ.get("WORLD_SIZE"):
        raise CnnlabError("--nproc starts torchrun itself: drop it when running under torchrun")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(threads or max(1, cpu_cores() // nproc)))
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "cnnlab",
                                         *argv])
    # torchrun's own failure report is a page of text; cnnlab says it in one line below
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM: the processes saved a checkpoint and said how to go on
        return 130
    except ChildFailedError as e:
        rank, failure = min(e.failures.items(), key=lambda rf: rf[1].timestamp)  # {global rank: failure}
        code = failure.exitcode
        if code in (2, 3, 130):  # the process already printed its one line (a user error, NaN, a stop)
            return code
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
               else f"exited with code {code}")
        raise ProcessFailed(f"training process {failure.local_rank} (rank {rank}) {how}; the job "
                          "stopped and its last checkpoint is intact: continue with --resume RUN_DIR --nproc "
                          f"{nproc}") from None
    return 0
