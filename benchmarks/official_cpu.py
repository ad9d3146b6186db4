"""Google's 0.5-160 uint8 MobileNet: LiteRT's latency beside ours on the same weights, same run.

    python benchmarks/official_cpu.py [--threads 2] [--rounds 280]

batch 1, 2 threads. LiteRT runs Google's quantized file on uint8 input (XNNPACK delegate);
ours runs the same weights loaded into a float model: fp32 eager, and fp32 with BN folded,
channels_last and torch.compile. Runs are interleaved in turns of 50 calls of which the first 10
are not timed (as in deploy_cpu.py: after single-call turns, torch's spinning threads and a cold
cache are charged to LiteRT, which then read 2.2 ms against 0.9 ms in turns); medians and ratios
are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import _peak
from _timing import interleaved_medians, machine, median_ms, p90_ms

import mobilenets
from mobilenets.data import quantize_input
from mobilenets.deploy.timing import SETTLE_SECONDS
from mobilenets.quant import fuse

BLOCK, SKIP = 50, 10  # calls per turn, of which the first are not timed
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=280, help="timed calls per path, about (in turns of 50)")
    ap.add_argument("--weights", default=str(DATA / "tflite" / "mobilenet_v1_0.5_160_quant.tflite"))
    args = ap.parse_args()
    if not Path(args.weights).is_file():
        print(f"skipped: {args.weights} not found (the shared data folder)", file=sys.stderr)
        return 0
    before = _peak.measure(args.threads)
    from ai_edge_litert.interpreter import Interpreter

    torch.set_num_threads(args.threads)
    model = mobilenets.load_pretrained(args.weights)
    clf = mobilenets.Classifier(model)
    x = clf.preprocess(DATA / "tflite" / "cat.bmp")[None]
    scale, zp = model.pretrained_cfg.input_quantization
    q = np.ascontiguousarray(quantize_input(x, scale, zp).permute(0, 2, 3, 1).numpy())

    interp = Interpreter(model_path=args.weights, num_threads=args.threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def litert() -> None:
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        interp.get_tensor(out["index"])

    fast = fuse(model).to(memory_format=torch.channels_last)
    compiled = torch.compile(fast)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            compiled(x_cl)
        fns = {
            "LiteRT uint8 (Google's file)": litert,
            "ours fp32 eager": lambda: model(x),
            "ours fp32 fused+channels_last+compile": lambda: compiled(x_cl),
        }
        times = interleaved_medians(fns, warmup=10, rounds=max(1, args.rounds // (BLOCK - SKIP)), block=BLOCK,
                                    skip=SKIP, settle=SETTLE_SECONDS)
    print(f"machine: {machine()}")
    print(_peak.steadiness(before, "before the timing"))
    print(_peak.steadiness(_peak.measure(args.threads), "after the timing"))
    print(f"model: {args.weights} (α=0.5, 160×160), batch 1, {args.threads} threads")
    ref = median_ms(times["LiteRT uint8 (Google's file)"])
    for name, samples in times.items():
        m = median_ms(samples)
        print(f"{name:<40} median {m:7.3f} ms  p90 {p90_ms(samples):7.3f} ms  ×LiteRT {m / ref:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
