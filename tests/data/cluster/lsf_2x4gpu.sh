#!/bin/bash
# cnnlab job script for IBM LSF: submit with `bsub < THIS_FILE` (or cnnlab cluster --submit)
#BSUB -J r20
#BSUB -n 64
#BSUB -R "span[ptile=32]"
#BSUB -gpu "num=4:mode=exclusive_process"
#BSUB -R "rusage[mem=2048MB]"
#BSUB -q gpu
#BSUB -W 02:30
#BSUB -o logs/%J.out
#BSUB -e logs/%J.err

set -euo pipefail
# every host appears once per slot in LSB_HOSTS: the first host holds the rendezvous, and blaunch
# starts one torchrun agent on every distinct host
hosts=$(echo "$LSB_HOSTS" | tr " " "\n" | awk '!seen[$0]++' | tr "\n" " ")
head_node=$(echo "$hosts" | cut -d " " -f 1)
export OMP_NUM_THREADS=8
blaunch -z "$hosts" /opt/venv/bin/python -m torch.distributed.run --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-id "$LSB_JOBID" --rdzv-endpoint "$head_node:29400" -m cnnlab train --model resnet20 --dataset cifar10 --epochs 30 --out 'runs/r20 final'
