#!/usr/bin/env bash
# Train MobileNets on CIFAR-10 with the `cifar` recipe, then reproduce the paper's Table 6 on it.
#
#   examples/train_cifar.sh [DATA] [OUT]
#
# DATA defaults to ../shared/data/cifar10-jpeg.tar.gz (read in place, nothing is extracted);
# OUT to runs/. On a GPU this takes a few minutes per model; on a CPU use a subset, e.g.
#   EXTRA="--subset 2000 --val-subset 1000 --epochs 5" examples/train_cifar.sh
# Every run resumes where it stopped if interrupted: run the same command again.
set -euo pipefail

DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-runs}
EXTRA=${EXTRA:-}

# One model: α = 1.0, small-input stem (stride 8), one-cycle SGD, bf16 + channels_last + compile on a GPU.
# shellcheck disable=SC2086
python -m mobilenets train --data "$DATA" --out "$OUT/cifar-a1.0" --recipe cifar --resume $EXTRA \
    $(python -c 'import torch; print("--compile" if torch.cuda.is_available() else "")')

# Its test accuracy, recomputed from the saved weights (mobilenets.train.evaluate_dataset).
python -m mobilenets evaluate "$OUT/cifar-a1.0" --data "$DATA"

# The same on all GPUs of this machine (global batch stays 512):
#   torchrun --nproc-per-node "$(nvidia-smi -L | wc -l)" -m mobilenets train --data "$DATA" --out "$OUT/ddp" --resume

# The paper's Table 6 (α = 1.0, 0.75, 0.5, 0.25) on CIFAR-10: $OUT/table6/table6.{md,csv,png}
# shellcheck disable=SC2086
python -m mobilenets experiment table6 --data "$DATA" --out "$OUT/table6" $EXTRA
