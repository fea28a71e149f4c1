"""`cnnlab train --nproc N`: the same command in N processes, started by torchrun.

The launcher is torchrun itself (torch.distributed.run, in this process, with a standalone
rendezvous on this machine); each process runs `python -m cnnlab train ...` with the same
arguments less --nproc, and `cnnlab.train.distributed` takes it from there.

Before anything starts, `check_nproc` holds N to the machine and the batch: one process per GPU on
CUDA, at most one per CPU core on the CPU (more only slows every process down; torchrun by hand
can still oversubscribe), and a global batch that N processes split evenly. The run directory is
named here (--out, or the default name, passed on as --out) so that the job's last line can give it.

The processes live and die with the launcher. SIGTERM or Ctrl-C to it is passed on by torchrun:
each process saves a checkpoint and stops, and rank 0 says how to continue. If the launcher
itself is killed, each process notices within a quarter second that its parent is gone and stops the
same way (`follow_launcher`), or is killed 30 s later if it cannot. When a process fails, torchrun
stops the others (they stay quiet: cnnlab.train.distributed.PeerLost); the launcher then says in
one line which one failed and how, and the command that continues the run, and exits with 1 (or
with 2, 3 or 130 when rank 0 has already said why: a user error, a NaN loss, a stop).

OMP_NUM_THREADS is set for the processes (torchrun would otherwise set 1 and warn): --threads
when given, else the cores divided among the processes, so N processes do not fight over them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.envinfo import cpu_cores
from cnnlab.errors import CnnlabError
from cnnlab.train.distributed import LAUNCHER_ENV, PeerLost, check_processes

class ProcessFailed(CnnlabError):
    exit_code = 1  # not the user's input: a process died


def follow_launcher():
    """In a process `cnnlab train --nproc` started: end when the launcher ends, however it ends (a
    SIGKILL too). A thread watches the parent; once it is gone, a run under way is stopped as
    SIGTERM stops it (a checkpoint, then exit), and the process is killed if it is still there
    _GRACE_S later (stuck, or still opening the run: nothing to save yet)."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if launcher:
        threading.Thread(target=_watch_launcher, args=(int(launcher),), daemon=True, name="cnnlab-launcher").start()


# Not Linux's parent-death signal (prctl PR_SET_PDEATHSIG) nor a SIGTERM sent to itself: the first
# came twice to one process when the multi-threaded launcher was SIGKILLed, and the processes see
# the launcher go at different moments, so a signal could land after a run had stopped on another
# process's signal and restored the default handler, killing it before it said how to continue
# (both measured). The watcher instead calls the run's own SIGTERM handler, once, while it is set.
_POLL_S = 0.25  # four getppid() calls a second: no measurable cost
_GRACE_S = 30.0  # torchrun's own wait before it sends SIGKILL to a process that does not stop


def _watch_launcher(launcher: int):
    while os.getppid() == launcher:
        time.sleep(_POLL_S)
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):  # the run's (cnnlab.train.loop): stop at the next step, with a checkpoint
            try:
                handler(signal.SIGTERM, None)
            except KeyboardInterrupt:  # it was stopping already
                pass
            break
        time.sleep(_POLL_S)
    time.sleep(max(0.0, deadline - time.monotonic()))
    os.kill(os.getpid(), signal.SIGKILL)


def check_nproc(nproc: int, config: TrainConfig):
    """That `nproc` processes suit this machine and `config` (validated): checked before any starts."""
    from cnnlab.device import resolve_device

    if nproc < 1:
        raise CnnlabError(f"--nproc must be at least 1, got {nproc}")
    if os.environ.get("WORLD_SIZE"):
        raise CnnlabError("--nproc starts torchrun itself: drop it when running under torchrun")
    if resolve_device(config.device).type == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise CnnlabError(f"--nproc {nproc} needs one GPU per process, and this machine has {gpus}: use --nproc "
                              f"{gpus} or fewer, or --device cpu")
    else:
        cores = cpu_cores()
        if nproc > cores:
            raise CnnlabError(f"--nproc {nproc} is more processes than the {cores} CPU cores this process may use: "
                              f"use --nproc {cores} or fewer (to oversubscribe anyway, start torchrun yourself: "
                              "docs/scaling.md)")
    check_processes(config, nproc, config.subset)


def run_dir_for(config: TrainConfig) -> Path:
    """The run directory the processes will write: --out, or the default name no run has yet (a run
    that takes it in the same second makes rank 0 refuse it with one line)."""
    from cnnlab.train.loop import free_run_dir

    if config.out:
        return Path(config.out)
    return free_run_dir(config, lambda path: not path.exists())


def launch(nproc: int, argv: list[str], config: TrainConfig, resume: str | None = None) -> int:
    """Run `cnnlab train ARGV` (without --nproc) in `nproc` processes; `config` is the run's, validated
    (cnnlab.commands.train.checked_config), and `resume` the run directory of --resume."""
    check_nproc(nproc, config)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    run_dir = Path(resume) if resume else run_dir_for(config)
    if not resume and not config.out:
        argv = [*argv, "--out", str(run_dir)]
    os.environ.setdefault("OMP_NUM_THREADS", str(config.threads or max(1, cpu_cores() // nproc)))
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "cnnlab",
                                         *argv])
    # torchrun's own failure report is a page of text; cnnlab says it in one line below. Its modules'
    # loggers carry their own level (LOGLEVEL, default WARNING), so each is quietened, not the parent.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun turns these signals into SignalException and leaves its handlers installed: they are
    # put back, so that a signal after the run is not an exception in cnnlab's own code
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM: the processes saved a checkpoint and rank 0 said how to go on
        return 130
    except ChildFailedError as e:
        return _failed(e.failures, nproc, run_dir)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        del os.environ[LAUNCHER_ENV]
    return 0


# What the other processes do once one has died: torchrun's SIGTERM (or a graceful stop on it),
# or PeerLost at their next exchange. The process that died first is found among the rest.
_AFTERMATH = (PeerLost.exit_code, 130, -signal.SIGTERM, -signal.SIGINT)


def _failed(failures: dict, nproc: int, run_dir: Path) -> int:
    """The job's one line for torchrun's failures ({global rank: ProcessFailure}); its exit code."""
    from cnnlab.dirs import RunDir

    # timestamps are whole seconds: processes found dead in the same poll tie, and a survivor's
    # aftermath must not be taken for the cause
    rank, failure = min(failures.items(), key=lambda rf: (rf[1].exitcode in _AFTERMATH, rf[1].timestamp, rf[0]))
    code = failure.exitcode
    if code in (2, 3, 130):  # rank 0 already printed its one line (a user error, NaN, a stop)
        return code
    if code < 0 and -code in signal.valid_signals():
        how = f"was killed by {signal.Signals(-code).name}"
    elif code == PeerLost.exit_code:
        how = "lost contact with the others"
    else:
        how = f"exited with code {code}"
    then = (f"continue the run with: cnnlab train --resume {run_dir} --nproc {nproc}" if RunDir(run_dir).is_run()
            else "no run directory was written: run the same command again")
    raise ProcessFailed(f"training process {failure.local_rank} (rank {rank}) {how}, so the job was stopped; "
                        f"{then}") from None
