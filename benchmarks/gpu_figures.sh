#!/usr/bin/env bash
# The GPU figures of the README in one go, on a CUDA machine (torchrun scaling needs 2 GPUs):
#   bash benchmarks/gpu_figures.sh            # writes benchmarks/results/gpu_*.txt / .json
# ResNet-20 (CIFAR shape): Hessian-vector products per second and time to the top eigenvalue vs PyHessian,
# 51x51 surface vs the per-point method and loss-landscapes, CurveBall / K-FAC / AdaHessian step vs SGD,
# torch.compile'd products, and 1 vs 2 process scaling.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_device.txt"
python benchmarks/curvature.py --device cuda --setups mlp,resnet20 --resnet-samples 1024 --resnet-top20 \
    | tee "$out/gpu_curvature.txt"
python benchmarks/surfaces.py --device cuda --models mlp,resnet20 --resnet-samples 1024 --baseline-points 121 \
    --save "$out/gpu_surfaces.json" | tee "$out/gpu_surfaces.txt"
python benchmarks/optimizer_cost.py --model resnet20 --device cuda --steps 50 \
    --optimizers momentum,adam,curveball,kfac,adahessian,hessian-free | tee "$out/gpu_optimizer_cost.txt"
python benchmarks/compile_products.py --device cuda --models mlp,cnn,resnet20 --resnet-samples 1024 \
    | tee "$out/gpu_compile_products.txt"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    python benchmarks/scaling.py --procs 1,2 | tee "$out/gpu_scaling.txt"
fi
