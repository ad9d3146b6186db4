"""GPU training benchmarks: CIFAR-10 accuracy and time, and ImageNet-size throughput against timm.

    python benchmarks/train_gpu.py cifar      [--data ../shared/data/cifar10-jpeg.tar.gz] [--widths 1.0,0.75,0.5,0.25]
                                              [--epochs E] [--no-compile] [--out DIR]
    python benchmarks/train_gpu.py throughput [--batch 256] [--steps 30] [--rounds 5]
    python benchmarks/train_gpu.py all        (both; the default)

(a) ``cifar``: a full CIFAR-10 run per width with the ``cifar`` recipe (one-cycle SGD, label
    smoothing, bf16, channels_last, small-input stem, data decoded once and augmented on the
    GPU) and torch.compile. Prints test top-1 and the total wall time including reading and
    decoding the archive, compilation and evaluation (target at α = 1.0: ≥ 93% in a few
    minutes on one H100). Each run is a normal run directory, so it resumes if interrupted.
(b) ``throughput``: training images/s at 224×224, batch 256, bf16 autocast, channels_last,
    synthetic data, SGD (fused): our ``mobilenet_v1`` against timm's ``mobilenetv1_100`` (the
    same network: equal parameter counts are checked), each eager and compiled, in the same
    process with rounds interleaved. Targets: ours compiled ≥ 1.0× timm compiled and ≥ 1.4× timm
    eager.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from _timing import cuda_machine

import mobilenets

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOBILENETS_DATA", REPO.parent / "shared" / "data"))


def cifar(args: argparse.Namespace) -> None:
    from mobilenets.train import TrainConfig, train

    out = Path(args.out or tempfile.mkdtemp(prefix="mobilenets-cifar-"))
    print(f"(a) CIFAR-10, recipe cifar, {args.data}; runs in {out}")
    print(f"{'width':>6} {'epochs':>6} {'test top-1':>10} {'best':>6} {'Mult-Adds':>10} {'params':>7} "
          f"{'train img/s':>11} {'wall s':>7}")
    for width in [float(w) for w in args.widths.split(",")]:
        t0 = time.perf_counter()
        summary = train(TrainConfig(data=args.data, out=out / f"a{width:g}", width=width, recipe="cifar",
                                    epochs=args.epochs, device="cuda", compile=not args.no_compile, resume=True,
                                    progress=sys.stderr.isatty(), verbose=args.verbose, cutout=args.cutout,
                                    ema=args.ema))
        wall = time.perf_counter() - t0
        print(f"{width:>6g} {summary['epochs']:>6} {summary['val_top1']:>9.2f}% {summary['best_val_top1']:>5.2f}% "
              f"{summary['mult_adds'] / 1e6:>9.1f}M {summary['params'] / 1e6:>6.2f}M "
              f"{summary['images_per_second']:>11.0f} {wall:>7.1f}", flush=True)


def _train_step(model: torch.nn.Module, batch: int, compiled: bool, mode: str) -> Callable[[], None]:
    model = model.cuda().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5, fused=True)
    forward = torch.compile(model, mode=mode) if compiled else model
    x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def throughput(args: argparse.Namespace) -> None:
    try:
        import timm
    except ImportError:
        print("(b) skipped: timm is not installed (pip install '.[bench]')")
        return
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    ours = mobilenets.mobilenet_v1(1.0, num_classes=1000)
    peer = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=1000)
    n_ours, n_peer = (sum(p.numel() for p in m.parameters()) for m in (ours, peer))
    assert n_ours == n_peer, f"not the same network: {n_ours} vs {n_peer} parameters"
    import copy

    steps = {
        "ours eager": _train_step(copy.deepcopy(ours), args.batch, False, args.mode),
        "ours compiled": _train_step(copy.deepcopy(ours), args.batch, True, args.mode),
        "timm eager": _train_step(copy.deepcopy(peer), args.batch, False, args.mode),
        "timm compiled": _train_step(copy.deepcopy(peer), args.batch, True, args.mode),
    }
    print(f"(b) training throughput, 224x224, batch {args.batch}, bf16, channels_last, SGD fused; timm "
          f"{timm.__version__}; torch.compile mode {args.mode!r}")
    for name, step in steps.items():  # warm up (and compile) each
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        print(f"    warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
            rates[name].append(args.steps * args.batch / (time.perf_counter() - t0))
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in med.items():
        print(f"    {name:<14} {r:8.0f} images/s  (rounds: {', '.join(f'{v:.0f}' for v in rates[name])})")
    best_ours = max(med["ours eager"], med["ours compiled"])
    print(f"    ours / timm compiled: {best_ours / med['timm compiled']:.3f}  (target >= 1.0)")
    print(f"    ours / timm eager:    {best_ours / med['timm eager']:.3f}  (target >= 1.4)")
    print(f"    eager vs eager:       {med['ours eager'] / med['timm eager']:.3f}")
    print(json.dumps({"images_per_second": med, "batch": args.batch}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=("cifar", "throughput", "all"), default="all")
    ap.add_argument("--data", default=str(DATA / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--widths", default="1.0,0.75,0.5,0.25")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's (50)")
    ap.add_argument("--cutout", type=int, default=None, help="cutout size (default: the recipe's, 0)")
    ap.add_argument("--ema", type=float, default=None, help="EMA decay (default: the recipe's, off)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default=None, help="run directories (default: a temporary folder)")
    ap.add_argument("--verbose", action="store_true", help="per-epoch lines")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--mode", default="default", help="torch.compile mode (e.g. max-autotune-no-cudagraphs)")
    args = ap.parse_args()
    cuda_machine("train_gpu.py")
    if args.what in ("cifar", "all"):
        cifar(args)
    if args.what in ("throughput", "all"):
        throughput(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
