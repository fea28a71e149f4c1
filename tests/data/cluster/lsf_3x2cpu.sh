#!/bin/bash
# cnnlab job script for IBM LSF: submit with `bsub < THIS_FILE` (or cnnlab cluster --submit)
#BSUB -J cnnlab
#BSUB -n 3
#BSUB -R "span[ptile=1]"
#BSUB -W 01:00
#BSUB -o logs/%J.out
#BSUB -e logs/%J.err

set -euo pipefail
# every host appears once per slot in LSB_HOSTS: the first host holds the rendezvous, and blaunch
# starts one torchrun agent on every distinct host
hosts=$(echo "$LSB_HOSTS" | tr " " "\n" | awk '!seen[$0]++' | tr "\n" " ")
head_node=$(echo "$hosts" | cut -d " " -f 1)
export OMP_NUM_THREADS=1
blaunch -z "$hosts" python -m torch.distributed.run --nnodes 3 --nproc-per-node 2 --rdzv-backend c10d --rdzv-id "$LSB_JOBID" --rdzv-endpoint "$head_node:29400" -m cnnlab train --model lenet5 --dataset mnist --batch-size 132 --set 'optimizer_args={betas: [0.9, 0.99]}'
