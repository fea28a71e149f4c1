"""`cnnlab cluster slurm|lsf ... -- cnnlab train ...`: a ready job script, and optionally submit it.

The training command is checked here as `cnnlab train` checks it before reading any data (its
flags by the same parser, its config by the same validation) and against the job's processes, so
a mistake is one line now, not a failed job after the queue."""

from __future__ import annotations

import argparse

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.errors import CnnlabError


def add_parser(sub):
    p = sub.add_parser(
        "cluster", help="write (and submit) a Slurm or LSF job script that trains on several nodes",
        usage="cnnlab cluster {slurm,lsf} [options] -- cnnlab train ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a job script that runs `cnnlab train` on K nodes through torchrun (one agent per node, "
                    "c10d rendezvous on the job's first host), and with --submit hand it to sbatch or bsub.\n\n"
                    "  cnnlab cluster slurm --nodes 2 --gpus-per-node 4 --partition gpu --walltime 02:00:00 \\\n"
                    "      -- cnnlab train --model resnet20 --dataset cifar10 --epochs 30 --out runs/r20\n\n"
                    "The run directory must be on a file system every node sees. See docs/scaling.md.")
    p.add_argument("scheduler", choices=["slurm", "lsf"])
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (one process each); 0: CPU nodes")
    p.add_argument("--procs-per-node", type=int, default=1, help="processes per CPU node (default 1)")
    p.add_argument("--cpus-per-node", type=int, help="CPU cores to ask for per node")
    p.add_argument("--queue", "--partition", dest="queue", help="LSF queue / Slurm partition")
    p.add_argument("--walltime", default="01:00:00", help="HH:MM[:SS] (default 01:00:00)")
    p.add_argument("--mem", help="memory per node, e.g. 32G")
    p.add_argument("--job-name", default="cnnlab")
    p.add_argument("--log-dir", default="logs", help="where the scheduler writes the job's output (default logs)")
    p.add_argument("--port", type=int, default=29400, help="rendezvous port on the first node (default 29400)")
    p.add_argument("--python", default="python", help="the Python on the compute nodes (default python)")
    p.add_argument("--out", help="script path (default <job-name>.<scheduler>.sh)")
    p.add_argument("--submit", action="store_true", help="submit it with sbatch / bsub and print the job id")
    add_json_flag(p)
    p.set_defaults(func=run, takes_command=True)


class _TrainParser(argparse.ArgumentParser):
    """`cnnlab train`'s own parser; a bad flag in the command after -- is a CnnlabError."""

    def error(self, message):
        raise CnnlabError(f"in the training command after --: {message} (see `cnnlab train --help`)")


def train_config(argv: list[str]):
    """The validated config of `cnnlab ARGV` (ARGV = ["train", ...]); nothing is read or trained."""
    from cnnlab.commands import train

    parser = _TrainParser(prog="cnnlab")
    train.add_parser(parser.add_subparsers(dest="command"))
    return train.checked_config(parser.parse_args(argv))


def run(args) -> int:
    from pathlib import Path

    from cnnlab.io import atomic_write_text
    from cnnlab.workflows.cluster import JobSpec, job_script, submit, train_argv

    command = args.rest  # what follows `--`
    spec = JobSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, procs_per_node=args.procs_per_node,
                   cpus_per_node=args.cpus_per_node, queue=args.queue, walltime=args.walltime, mem=args.mem,
                   job_name=args.job_name, log_dir=args.log_dir, port=args.port, python=args.python)
    script = job_script(args.scheduler, spec, command, train_config(train_argv(command)))
    path = Path(args.out or f"{args.job_name}.{args.scheduler}.sh")
    atomic_write_text(path, script)
    path.chmod(path.stat().st_mode | 0o111)
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)  # the schedulers do not create it
    info = {"script": str(path), "scheduler": args.scheduler}
    if args.submit:
        info["job_id"] = submit(args.scheduler, path)
    if args.json:
        print_json(info)
    elif args.submit:
        print(f"submitted {path}: job {info['job_id']}")
    else:
        tool = "sbatch " if args.scheduler == "slurm" else "bsub < "
        print(f"wrote {path}; submit it with: {tool}{path}")
    return 0
