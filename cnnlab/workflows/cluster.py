"""Cluster job scripts: the same `cnnlab train` on K nodes of a Slurm or LSF cluster, through torchrun.

    script = job_script("slurm", JobSpec(nodes=2, gpus_per_node=4, partition="gpu"), ["train", "--model", ...])
    job_id = submit("slurm", path)          # sbatch PATH  /  bsub < PATH; returns the scheduler's job id

Each node runs one torchrun agent (`srun` starts one per node on Slurm, `blaunch` on LSF) with
`--nproc-per-node` processes (one per GPU, or `procs_per_node` on CPU nodes); the agents meet
through c10d rendezvous on the job's first host, and the job id keeps two jobs' rendezvous apart.
The training command is cnnlab's own (`python -m cnnlab train ...`), unchanged: a course cluster
that forbids work on compute nodes outside a job gets it inside the job. `check_job` holds the
command's config (validated by the caller, as `cnnlab train` validates it) to the job: a global
batch that all nodes x processes split, and GPUs only where the job asks for them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.train.distributed import check_processes

SCHEDULERS = {"slurm": "sbatch", "lsf": "bsub"}


@dataclass
class JobSpec:
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int = 1  # processes per node when there are no GPUs
    cpus_per_node: int | None = None
    queue: str | None = None  # LSF queue / Slurm partition
    walltime: str = "01:00:00"  # HH:MM[:SS]
    mem: str | None = None  # per node, e.g. 32G
    job_name: str = "cnnlab"
    log_dir: str = "logs"
    port: int = 29400
    python: str = "python"  # the interpreter on the compute nodes (e.g. a venv's bin/python)

    def check(self):
        if self.nodes < 1:
            raise CnnlabError(f"--nodes must be at least 1, got {self.nodes}")
        if self.gpus_per_node < 0 or self.procs_per_node < 1:
            raise CnnlabError("--gpus-per-node must be 0 or more and --procs-per-node at least 1")
        if not re.fullmatch(r"\d{1,3}:\d{2}(:\d{2})?", self.walltime):
            raise CnnlabError(f"bad --walltime '{self.walltime}': write HH:MM or HH:MM:SS, e.g. 02:30:00")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.job_name):
            raise CnnlabError(f"bad --job-name '{self.job_name}': letters, digits, _ . - only")
        if not 1 <= self.port <= 65535:
            raise CnnlabError(f"bad --port {self.port}")

    @property
    def per_node(self) -> int:
        return self.gpus_per_node or self.procs_per_node


def train_argv(command: list[str]) -> list[str]:
    """`cnnlab train ...` (or `train ...`) -> the arguments after `cnnlab`."""
    argv = list(command)
    if argv and Path(argv[0]).name == "cnnlab":
        argv = argv[1:]
    if not argv or argv[0] != "train":
        raise CnnlabError("give the training command after --, e.g. cnnlab cluster slurm --nodes 2 -- "
                          "cnnlab train --model resnet20 --dataset cifar10")
    if "--nproc" in argv or any(a.startswith("--nproc=") for a in argv):
        raise CnnlabError("drop --nproc from the training command: the job sets the processes per node")
    return argv


def _torchrun(spec: JobSpec, argv: list[str], nnodes: str, job_id: str, head: str) -> str:
    return (f"{spec.python} -m torch.distributed.run --nnodes {nnodes} --nproc-per-node {spec.per_node} "
            f"--rdzv-backend c10d --rdzv-id {job_id} --rdzv-endpoint \"{head}:{spec.port}\" "
            f"-m cnnlab {shlex.join(argv)}")


def _threads(spec: JobSpec) -> str:
    if spec.cpus_per_node:
        return str(max(1, spec.cpus_per_node // spec.per_node))
    return "1"


def slurm_script(spec: JobSpec, argv: list[str]) -> str:
    lines = ["#!/bin/bash", "# cnnlab job script for Slurm: submit with `sbatch THIS_FILE` (or cnnlab cluster --submit)",
             f"#SBATCH --job-name={spec.job_name}", f"#SBATCH --nodes={spec.nodes}", "#SBATCH --ntasks-per-node=1"]
    if spec.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={spec.gpus_per_node}")
    if spec.cpus_per_node:
        lines.append(f"#SBATCH --cpus-per-task={spec.cpus_per_node}")
    if spec.mem:
        lines.append(f"#SBATCH --mem={spec.mem}")
    if spec.queue:
        lines.append(f"#SBATCH --partition={spec.queue}")
    lines += [f"#SBATCH --time={spec.walltime}", f"#SBATCH --output={spec.log_dir}/%x-%j.out",
              f"#SBATCH --error={spec.log_dir}/%x-%j.err", "", "set -euo pipefail",
              "# the first host of the job holds the rendezvous; every node runs one torchrun agent",
              'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              f"export OMP_NUM_THREADS={_threads(spec)}",
              "srun --ntasks-per-node=1 " + _torchrun(spec, argv, '"$SLURM_NNODES"', '"$SLURM_JOB_ID"', "$head_node"),
              ""]
    return "\n".join(lines)


def lsf_script(spec: JobSpec, argv: list[str]) -> str:
    lines = ["#!/bin/bash", "# cnnlab job script for IBM LSF: submit with `bsub < THIS_FILE` (or cnnlab cluster --submit)",
             f"#BSUB -J {spec.job_name}", f"#BSUB -n {spec.nodes * (spec.cpus_per_node or 1)}",
             f'#BSUB -R "span[ptile={spec.cpus_per_node or 1}]"']
    if spec.gpus_per_node:
        lines.append(f'#BSUB -gpu "num={spec.gpus_per_node}:mode=exclusive_process"')
    if spec.mem:  # LSF reserves memory per slot
        lines.append(f'#BSUB -R "rusage[mem={_mb(spec.mem) // (spec.cpus_per_node or 1) or 1}MB]"')
    if spec.queue:
        lines.append(f"#BSUB -q {spec.queue}")
    lines += [f"#BSUB -W {':'.join(spec.walltime.split(':')[:2])}", f"#BSUB -o {spec.log_dir}/%J.out",
              f"#BSUB -e {spec.log_dir}/%J.err", "", "set -euo pipefail",
              "# every host appears once per slot in LSB_HOSTS: the first host holds the rendezvous, and blaunch",
              "# starts one torchrun agent on every distinct host",
              'hosts=$(echo "$LSB_HOSTS" | tr " " "\\n" | awk \'!seen[$0]++\' | tr "\\n" " ")',
              'head_node=$(echo "$hosts" | cut -d " " -f 1)',
              f"export OMP_NUM_THREADS={_threads(spec)}",
              'blaunch -z "$hosts" ' + _torchrun(spec, argv, str(spec.nodes), '"$LSB_JOBID"', "$head_node"), ""]
    return "\n".join(lines)


def _mb(mem: str) -> int:
    """'64G' -> 65536 (MiB), as the schedulers count; a bare number is MiB."""
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", mem.strip(), re.I)
    if not m:
        raise CnnlabError(f"bad --mem '{mem}': write e.g. 32G or 4096M")
    value, unit = int(m.group(1)), m.group(2).upper()
    return max(1, value // 1024) if unit == "K" else value * {"": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[unit]


def check_job(spec: JobSpec, config: TrainConfig):
    """That the training command's config (validated) suits the job: all the job's processes can
    train it together (cnnlab.train.distributed.check_processes), and it asks for GPUs only from a
    job that has them."""
    check_processes(config, spec.nodes * spec.per_node, config.subset)
    if not spec.gpus_per_node and str(config.device).lower().startswith("cuda"):
        raise CnnlabError(f"the training command asks for --device {config.device}, but the job asks for no GPUs: "
                          "add --gpus-per-node N, or train with --device cpu")


def job_script(scheduler: str, spec: JobSpec, command: list[str], config: TrainConfig | None = None) -> str:
    """The job script; with `config`, the training command's validated config, also `check_job`."""
    if scheduler not in SCHEDULERS:
        raise CnnlabError(f"unknown scheduler '{scheduler}': choose {' or '.join(SCHEDULERS)}")
    spec.check()
    if spec.mem:
        _mb(spec.mem)
    argv = train_argv(command)
    if config is not None:
        check_job(spec, config)
    return slurm_script(spec, argv) if scheduler == "slurm" else lsf_script(spec, argv)


_JOB_ID = {"slurm": re.compile(r"Submitted batch job (\d+)"), "lsf": re.compile(r"Job <(\d+)> is submitted")}


def submit(scheduler: str, script: Path) -> str:
    """Submit the script; the scheduler's job id."""
    tool = SCHEDULERS[scheduler]
    exe = shutil.which(tool)
    if exe is None:
        raise CnnlabError(f"{tool} not found: this machine has no {scheduler.upper()} client; copy {script} to a login "
                          f"node of your cluster and submit it there ({'sbatch ' + str(script) if tool == 'sbatch' else 'bsub < ' + str(script)})")
    if tool == "sbatch":
        r = subprocess.run([exe, str(script)], capture_output=True, text=True)
    else:
        with open(script) as f:
            r = subprocess.run([exe], stdin=f, capture_output=True, text=True)
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise CnnlabError(f"{tool} refused the job: {why[-1] if why else f'exit code {r.returncode}'}")
    m = _JOB_ID[scheduler].search(r.stdout + r.stderr)
    if not m:
        raise CnnlabError(f"{tool} gave no job id (it said: {(r.stdout or r.stderr).strip()[:200]})")
    return m.group(1)
