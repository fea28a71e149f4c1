#!/bin/bash
# cnnlab job script for Slurm: submit with `sbatch THIS_FILE` (or cnnlab cluster --submit)
#SBATCH --job-name=cnnlab
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x-%j.out
#SBATCH --error=logs/%x-%j.err

set -euo pipefail
# the first host of the job holds the rendezvous; every node runs one torchrun agent
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=1
srun --ntasks-per-node=1 python -m torch.distributed.run --nnodes "$SLURM_NNODES" --nproc-per-node 2 --rdzv-backend c10d --rdzv-id "$SLURM_JOB_ID" --rdzv-endpoint "$head_node:29400" -m cnnlab train --model lenet5 --dataset mnist --batch-size 132 --set 'optimizer_args={betas: [0.9, 0.99]}'
