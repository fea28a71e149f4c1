"""`cnnlab search SEARCH.yaml`: hardware-aware architecture search, then its final stage (cnnlab.workflows.search)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.errors import CnnlabError


def add_parser(sub):
    p = sub.add_parser("search", help="search architectures for the competition metric (Optuna; cost model first)",
                       description="Search model specs and training settings with Optuna. Every candidate is "
                                   "costed first (cycles, energy, peak activation); infeasible ones never train. "
                                   "With a `final` block, the best candidates are then retrained in full and the "
                                   "winner chosen on their final validation figures. Run it again to resume; see "
                                   "docs/search.md for the file format.")
    p.add_argument("file", help="the search file (YAML)")
    p.add_argument("--out", help="search directory (default runs/search-<file name>)")
    p.add_argument("--trials", type=int, help="finished trials to reach (default: the file's `trials`)")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (default: OUT/search.db, SQLite)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing the storage")
    p.add_argument("--data-dir", help="data directory for every trial (default: the base config's or $CNNLAB_DATA_DIR)")
    p.add_argument("--final-top-k", type=int, metavar="K",
                   help="finalists the final stage retrains (default: the file's final.top_k)")
    p.add_argument("--no-final", action="store_true",
                   help="skip the file's final stage: the search's best trial is the result")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # this worker's number
    p.add_argument("--stage", choices=("search", "final"), default="search", help=argparse.SUPPRESS)  # a worker's
    add_json_flag(p)
    p.set_defaults(func=run)


def _worker_env(n: int) -> dict:
    """The environment of one of n workers: its share of the cores (OMP_NUM_THREADS, read by torch
    and cnnlab's thread choice), unless the user set OMP_NUM_THREADS or a run's `threads` says.
    Measured reason: workers starting at once on an idle machine each saw no load and took every
    core, and the ConvNet's epochs took 60-182 s on 2 cores instead of about 25."""
    from cnnlab.envinfo import cpu_cores

    env = dict(os.environ)
    if not (env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS")):
        env["OMP_NUM_THREADS"] = str(max(1, cpu_cores() // n))
    return env


def _run_workers(cmd: list, n: int, what: str):
    """N processes of `cmd` (each with its --worker number); a one-line error if any fails. Ctrl-C
    or SIGTERM here is passed on to each worker once, and each stops its trial at a checkpoint (the
    next run continues it). The workers run in a session of their own, so that a terminal's Ctrl-C
    reaches them through this process only: twice would stop them at once, without a checkpoint."""
    from cnnlab.train.loop import Interrupted
    from cnnlab.workflows.search.worker import AGAIN

    workers = [subprocess.Popen(cmd + ["--worker", str(i)], start_new_session=True, env=_worker_env(n))
               for i in range(n)]
    stops = []

    def forward(signum, frame):
        stops.append(signal.Signals(signum).name)
        for p in workers:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in workers]
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if stops:
        raise Interrupted(f"stopped by {stops[0]}; {AGAIN}")
    if any(codes):
        raise CnnlabError(f"{sum(c != 0 for c in codes)} of {n} worker processes failed (exit codes {codes}); run "
                          f"the same command again to finish the {what}")


def run(args) -> int:
    from cnnlab.workflows.search import final_stage, finish, load_search, open_search, work

    search = load_search(args.file, args.out, args.trials, None if args.no_final else args.final_top_k)
    if args.no_final:
        search.final = None
    if args.data_dir:
        search.base["data_dir"] = args.data_dir
    if args.workers < 1:
        raise CnnlabError(f"--workers must be at least 1, got {args.workers}")
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.worker is not None:  # one of several processes: trials, or final runs
        if args.stage == "final":
            final_stage(search, args.storage, log=log)
        else:
            work(search, args.storage, log=log, worker=args.worker)
        return 0
    if args.workers == 1:
        work(search, args.storage, log=log)
        if search.final is not None:
            final_stage(search, args.storage, log=log)
    else:  # N worker processes share the storage; this one waits for them, then writes the results
        open_search(search, args.storage)  # the dataset checked, the study created once, before the workers start
        cmd = [sys.executable, "-m", "cnnlab", "search", str(search.path), "--out", str(search.out),
               "--trials", str(search.trials)]
        if args.storage:
            cmd += ["--storage", args.storage]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        _run_workers(cmd, args.workers, "search")
        if search.final is not None:  # the trials are all in: every worker computes the same finalists
            if args.final_top_k is not None:
                cmd += ["--final-top-k", str(args.final_top_k)]
            _run_workers(cmd + ["--stage", "final"], args.workers, "final stage")
    best = finish(search, args.storage, data_dir=search.base.get("data_dir"), log=log)
    if args.json:
        print_json(best)
    else:
        print(f"outputs: {search.out}/ ({', '.join(p.name for p in search.dir.result_files)})")
    return 0
