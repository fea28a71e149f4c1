#!/bin/bash
# cnnlab job script for Slurm: submit with `sbatch THIS_FILE` (or cnnlab cluster --submit)
#SBATCH --job-name=r20
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --mem=64G
#SBATCH --partition=gpu
#SBATCH --time=02:30:00
#SBATCH --output=logs/%x-%j.out
#SBATCH --error=logs/%x-%j.err

set -euo pipefail
# the first host of the job holds the rendezvous; every node runs one torchrun agent
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8
srun --ntasks-per-node=1 /opt/venv/bin/python -m torch.distributed.run --nnodes "$SLURM_NNODES" --nproc-per-node 4 --rdzv-backend c10d --rdzv-id "$SLURM_JOB_ID" --rdzv-endpoint "$head_node:29400" -m cnnlab train --model resnet20 --dataset cifar10 --epochs 30 --out 'runs/r20 final'
