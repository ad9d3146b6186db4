"""Deployment latency and throughput on one CUDA GPU (written for an H100; needs CUDA).

    python benchmarks/deploy_gpu.py [--rounds 200] [--batch 256] [--no-compile]

Targets (issue 5):
  1. batch-1 latency of α=1.0, ρ=224 with CUDA graphs ≤ 0.3 ms (median of single replays,
     timed with CUDA events), fp32 (TF32 convs) and bf16; timm's `mobilenetv1_100` alongside.
  2. bf16 batch-256 throughput (images/s): ours (BN folded, channels_last, torch.compile) vs
     timm's model compiled the same way; ratio ours / timm ≥ 1.0.

At batch 1 a MobileNet is ~30 tiny kernels: launch overhead, not arithmetic, bounds latency,
which is what CUDA graphs remove (one launch for the whole network). At batch 256 the
depthwise layers are memory-bound and the 1×1 convs are GEMMs: channels_last + bf16 let
cuDNN use tensor cores without layout transposes; folding BN removes 27 memory passes.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
from _timing import cuda_machine

import mobilenets
from mobilenets.quant import fuse


def _graphed(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One CUDA graph replay per call (static input/output buffers)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(5):  # warm-up outside the graph: cuDNN picks its algorithms here
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_y = model(static_x)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_y
    return replay


def _eager(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return run


def _event_times(fn: Callable[[], object], rounds: int, warmup: int = 20) -> list[float]:
    """Milliseconds per call, each call bracketed by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in fns}
    for k, fn in fns.items():
        _event_times(fn, 1, warmup=20)
    for _ in range(rounds // 10):
        for k, fn in fns.items():
            out[k] += _event_times(fn, 10, warmup=0)
    return out


def _p90(v: list[float]) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def latency(rounds: int, compile: bool) -> None:
    import timm

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = "cuda"
    ours = fuse(mobilenets.create_model("mobilenet_v1_100_224", activation="relu6")).to(dev).to(
        memory_format=torch.channels_last)
    ours_bf16 = fuse(mobilenets.create_model("mobilenet_v1_100_224", activation="relu6")).to(dev, torch.bfloat16).to(
        memory_format=torch.channels_last)
    peer = timm.create_model("mobilenetv1_100", pretrained=False).eval().to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    xb = x.to(torch.bfloat16)
    fns = {
        "timm eager fp32": _eager(peer, x),
        "timm CUDA graph fp32": _graphed(peer, x),
        "ours eager fp32": _eager(ours, x),
        "ours CUDA graph fp32": _graphed(ours, x),
        "ours CUDA graph bf16": _graphed(ours_bf16, xb),
    }
    if compile:
        compiled = torch.compile(ours, mode="max-autotune-no-cudagraphs")
        compiled_bf16 = torch.compile(ours_bf16, mode="max-autotune-no-cudagraphs")
        with torch.inference_mode():
            compiled(x), compiled_bf16(xb)
        fns["ours compiled + CUDA graph fp32"] = _graphed(compiled, x)
        fns["ours compiled + CUDA graph bf16"] = _graphed(compiled_bf16, xb)
    times = _interleaved(fns, rounds)
    print(f"\n1. batch-1 latency, α=1.0 ρ=224 ({rounds} calls each, interleaved, CUDA events)")
    for k, v in times.items():
        print(f"  {k:<34} median {statistics.median(v):7.4f} ms  p90 {_p90(v):7.4f} ms")
    best = min((k for k in times if k.startswith("ours")), key=lambda k: statistics.median(times[k]))
    m = statistics.median(times[best])
    print(f"  best: {best} {m:.4f} ms ({'meets' if m <= 0.3 else 'MISSES'} ≤ 0.3 ms)")


def throughput(batch: int, rounds: int, compile: bool) -> None:
    import timm

    dev = "cuda"
    ours = fuse(mobilenets.create_model("mobilenet_v1_100_224", activation="relu6")).to(dev, torch.bfloat16).to(
        memory_format=torch.channels_last)
    peer = timm.create_model("mobilenetv1_100", pretrained=False).eval().to(dev, torch.bfloat16).to(
        memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    if compile:
        ours = torch.compile(ours, mode="max-autotune-no-cudagraphs")
        peer = torch.compile(peer, mode="max-autotune-no-cudagraphs")
    fns = {"timm compiled bf16": _eager(peer, x), "ours compiled bf16": _eager(ours, x)}
    times = _interleaved(fns, max(20, rounds // 4))
    print(f"\n2. bf16 throughput, batch {batch}, α=1.0 ρ=224 ({'torch.compile max-autotune' if compile else 'eager'})")
    ips = {}
    for k, v in times.items():
        ips[k] = batch / (statistics.median(v) / 1e3)
        print(f"  {k:<22} {statistics.median(v):8.3f} ms/batch  {ips[k]:10.0f} images/s")
    r = ips["ours compiled bf16"] / ips["timm compiled bf16"]
    print(f"  ours / timm throughput = {r:.3f} ({'meets' if r >= 1.0 else 'MISSES'} ≥ 1.0)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (faster to run)")
    args = ap.parse_args()
    cuda_machine("deploy_gpu.py")
    latency(args.rounds, not args.no_compile)
    throughput(args.batch, args.rounds, not args.no_compile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
