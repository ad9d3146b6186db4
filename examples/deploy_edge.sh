#!/usr/bin/env bash
# From weights to a phone-ready int8 file: export, quantize, measure, choose.
#
#   examples/deploy_edge.sh [WEIGHTS] [CALIBRATION_DIR] [OUT]
#
# WEIGHTS defaults to Google's 0.5-160 TFLite file in ../shared/data (any file
# `mobilenets.load_pretrained` reads works: a run directory of `mobilenets train`, .pt, .h5, ...);
# CALIBRATION_DIR to the 100 ImageNet sample images; OUT to deploy/.
set -euo pipefail

DATA=../shared/data
WEIGHTS=${1:-$DATA/tflite/mobilenet_v1_0.5_160_quant.tflite}
CALIB=${2:-$DATA/imagenet-sample}
OUT=${3:-deploy}
mkdir -p "$OUT"

# 1. TFLite for LiteRT (Android/iOS/embedded): float, then int8 calibrated on 50 real images.
#    Each file is run in LiteRT right after it is written and compared with PyTorch.
python -m mobilenets export "$WEIGHTS" --format tflite --out "$OUT/model.tflite"
python -m mobilenets export "$WEIGHTS" --format tflite --out "$OUT/model_int8.tflite" \
    --int8 --calibration "$CALIB" --calibration-images 50

# 2. The same for x86/ARM servers: ONNX (ONNX Runtime) and OpenVINO IR, int8.
python -m mobilenets export "$WEIGHTS" --format onnx --out "$OUT/model_int8.onnx" --int8 --calibration "$CALIB"
python -m mobilenets export "$WEIGHTS" --format openvino --out "$OUT/model_int8.xml" --int8 --calibration "$CALIB"

# 3. Latency of the whole family on this machine, int8 in LiteRT: $OUT/bench/bench.{csv,md,png}
python -m mobilenets bench --widths 1,0.75,0.5,0.25 --resolutions 224,192,160,128 --runtime litert --int8 \
    --threads 2 --out "$OUT/bench"

# 4. The most accurate (α, ρ) under 2 ms here, from those measurements and TF-slim's 8-bit accuracies.
python -m mobilenets select --max-latency-ms 2 --bench-csv "$OUT/bench/bench.csv" --accuracy quant --int8 --json
