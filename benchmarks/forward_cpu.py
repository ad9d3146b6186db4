"""Forward latency of our mobilenet_v1_100_224 against timm's mobilenetv1_100, same run.

    python benchmarks/forward_cpu.py [--threads 2] [--batches 1,32] [--rounds 30]

Both models: fp32, eval mode, contiguous (NCHW) input, torch.inference_mode, same threads.
Runs are interleaved (ours, timm, ours, timm, ...) so machine drift affects both equally.
Prints medians and the ratio ours/timm (≤ 1.0 means ours is not slower).
"""

from __future__ import annotations

import argparse
import sys

import torch
import _peak
from _timing import interleaved_medians, machine, median_ms, p90_ms

import mobilenets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    try:
        import timm
    except ImportError:
        print("timm is not installed: pip install '.[bench]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = mobilenets.create_model("mobilenet_v1_100_224").eval()
    # timm's mobilenetv1_100 uses ReLU6; time ours with the paper's ReLU and with ReLU6 too.
    ours6 = mobilenets.create_model("mobilenet_v1_100_224", activation="relu6").eval()
    peer = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    assert mobilenets.cost(ours).params == sum(p.numel() for p in peer.parameters()), "not the same network"
    print(f"machine: {machine()}")
    print(_peak.steadiness(_peak.measure(args.threads), "before the timing"))
    print(f"timm {timm.__version__}; fp32, eval, NCHW, inference_mode")
    print(f"{'batch':>5}  {'ours ms (p90)':>16}  {'ours relu6 ms':>16}  {'timm ms (p90)':>16}  "
          f"{'ours/timm':>9}  {'relu6/timm':>10}")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            t = interleaved_medians({"ours": lambda: ours(x), "ours6": lambda: ours6(x), "timm": lambda: peer(x)},
                                    rounds=args.rounds if batch == 1 else max(5, args.rounds // 3))
        o, o6, p = median_ms(t["ours"]), median_ms(t["ours6"]), median_ms(t["timm"])
        print(f"{batch:>5}  {o:>8.2f} ({p90_ms(t['ours']):>5.2f})  {o6:>8.2f} ({p90_ms(t['ours6']):>5.2f})  "
              f"{p:>8.2f} ({p90_ms(t['timm']):>5.2f})  {o / p:>9.3f}  {o6 / p:>10.3f}")
    print(_peak.steadiness(_peak.measure(args.threads), "after the timing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
