"""The deployment subcommands: ``export``, ``bench`` and ``select``.

:func:`register` adds them to the ``mobilenets`` parser. The ``--format`` and ``--runtime``
choices are the library's own registries (:data:`mobilenets.deploy.FORMATS`, ``RUNTIMES``).

Exit status: 0 success; 2 bad input (one line on stderr); ``select`` exits 1 when no model
fits the budget (the answer is "nothing", not an error in the request), after naming the
fastest model.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..deploy import FORMATS, RUNTIMES
from ..deploy.bench import benchmark, check_out_dir, format_markdown, write_results
from ..deploy.export import export, format_for_path
from ..deploy.probe import probe_path, probed_under_load, run_probe
from ..deploy.selection import PRECISION_CHOICES, select
from .base import (
    UsageError,
    add_command,
    batch_type,
    count_type,
    float_type,
    list_type,
    quantity_type,
    require_device,
    resolution_type,
    width_type,
)

__all__ = ["cmd_bench", "cmd_export", "cmd_select", "register"]


# ----------------------------------------------------------------------------- commands

def cmd_export(args: argparse.Namespace) -> int:
    """Export a weights file for deployment with BatchNorm folded into the convolutions and static
    spatial shapes. The file is written under a temporary name, run in its own runtime against the
    PyTorch model (fp32: outputs within 1e-4; int8: top-1 agreement reported), and only then renamed
    into place; a failed check is an error and leaves no file."""
    fmt = args.format or format_for_path(args.out)
    if fmt is None:
        raise UsageError(f"give --format ({'|'.join(FORMATS)}); it cannot be told from {args.out!r}")
    if args.calibration is not None and not args.int8:
        raise UsageError("--calibration is for --int8 exports")
    report = export(args.weights, fmt, args.out, resolution=args.resolution, batch=args.batch, int8=args.int8,
                    calibration=args.calibration, calibration_images=args.calibration_images,
                    postprocess=args.nms or False)
    print(json.dumps(report.to_dict()) if args.json else report.summary())
    return 0


def _precision(args: argparse.Namespace, default: str = "fp32") -> str:
    """``--int8`` / ``--bf16`` (shortcuts), else ``--precision`` (select), else ``default``."""
    if args.int8 and args.bf16:
        raise UsageError("--int8 and --bf16 exclude each other")
    flag = "int8" if args.int8 else "bf16" if args.bf16 else None
    given = getattr(args, "precision", None)
    if flag and given and given != flag:
        raise UsageError(f"--{flag} and --precision {given} exclude each other")
    return flag or given or default


def cmd_bench(args: argparse.Namespace) -> int:
    """Time each width × resolution in a runtime after warm-up: median and p90 latency and
    throughput. Writes bench.csv, bench.md and bench.png (latency against Mult-Adds) to --out."""
    if args.probe:
        data = run_probe(threads=args.threads or 2, progress=not args.no_progress)
        for r in sorted(data["results"], key=lambda r: (r["precision"], r["median_ms"])):
            print(f"{r['precision']:<5} {r['runtime']:<12} {r['median_ms']:8.3f} ms  ({data['config']}, batch 1)")
        for f in data.get("failed", []):
            print(f"{f['precision']:<5} {f['runtime']:<12} failed here, left out: {f['error']}")
        exported, timed = data["exported"], len(data["results"])
        files = ("no runtime could be timed" if not timed
                 else f"exported {len(exported)} of {timed} files" if exported
                 else "reused every file") + f" ({data['files']})"
        print(f"\nsaved {probe_path()}: the default runtime per precision on this machine; "
              f"{data['seconds']:.1f} s, {files}")
        busy = probed_under_load(data)
        if busy:
            print(f"warning: {busy}", file=sys.stderr)
        return 0

    check_out_dir(args.out)  # before anything is measured, not after
    results = benchmark(args.widths, args.resolutions, runtime=args.runtime, precision=_precision(args),
                        device=args.device, threads=args.threads, batch=args.batch, warmup=args.warmup,
                        iters=args.iters, compile=args.compile, progress=not args.no_progress)
    paths = write_results(results, args.out)
    print(format_markdown(results))
    print(f"\nwrote {paths['csv']}, {paths['md']}, {paths['png']}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    """Measure (or read from --bench-csv) each official (α, ρ)'s latency, keep those within the
    params / Mult-Adds limits, and pick the most accurate on the latency-accuracy Pareto front
    within --max-latency-ms. Precision is a choice too: by default fp32, int8 and (where the CPU
    accelerates it) bf16 are all candidates, each in its fastest runtime on this machine, and the
    answer says what each precision costs and scores for the chosen (α, ρ). Models are timed
    cheapest first; one that takes well over the budget rules out, untimed, the models at least
    as wide and as large (so an impossible budget is answered after one model per precision).
    Exit status 1 when no model fits (the fastest is named)."""
    require_device(args.device)  # before the progress bar: a missing GPU is one line, nothing else
    selection = select(args.max_latency_ms, max_params=args.max_params, max_mult_adds=args.max_mult_adds,
                       accuracy=args.accuracy, runtime=args.runtime, precision=_precision(args, "auto"),
                       device=args.device, threads=args.threads, batch=args.batch, bench_csv=args.bench_csv,
                       iters=args.iters, progress=not args.no_progress and not args.json, out=args.out)
    print(json.dumps(selection.to_json()) if args.json else selection.format())
    if args.out is not None:
        print(f"wrote {args.out}/select.json and select.csv, select.md, select.png (the latencies used)",
              file=sys.stderr if args.json else sys.stdout)
    return 0 if selection.chosen is not None else 1


# ----------------------------------------------------------------------------- parsers

def _runtime_options(p: argparse.ArgumentParser, iters: int = 50) -> None:
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="inference runtime (default, per precision: the fastest on this machine by its probe, made "
                        "first when there is none and kept, `bench --probe` to re-measure; where probing is "
                        "impossible, openvino for fp32 and bf16, litert for int8; torch on cuda)")
    p.add_argument("--int8", action="store_true", help="int8 models (post-training quantized, per-channel weights)")
    p.add_argument("--bf16", action="store_true", help="bf16 inference (openvino, torch)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to run the models (default cpu; cuda needs a GPU and the torch runtime)")
    p.add_argument("--threads", type=count_type(1, "--threads"), metavar="N",
                   help="inference threads (default: the runtime's own choice)")
    p.add_argument("--batch", type=count_type(1, "--batch"), default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--iters", type=count_type(1, "--iters"), default=iters, metavar="N",
                   help=f"timed calls per model, after warm-up (default {iters})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    """Add ``export``, ``bench`` and ``select`` to the ``mobilenets`` subparsers."""
    p = add_command(sub, "export", cmd_export,
                    "export weights to ONNX / OpenVINO / TorchScript / PT2 / TFLite / ExecuTorch, verified")
    p.add_argument("weights", metavar="WEIGHTS", help="TFLite, Keras .h5, .pt/.pth, .safetensors or a run directory")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --out's extension)")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (openvino: NAME.xml, NAME.bin beside it)")
    p.add_argument("--resolution", type=resolution_type, metavar="R", help="input size (default: the weights')")
    p.add_argument("--batch", type=batch_type, default=1, metavar="dynamic|N", help="batch size, or 'dynamic' (default 1)")
    p.add_argument("--int8", action="store_true",
                   help="post-training static int8 (per-channel weights), calibrated on --calibration images")
    p.add_argument("--calibration", metavar="DIR_or_DATA",
                   help="folder of real images (or a .npy/.pt array of preprocessed inputs) for --int8")
    p.add_argument("--calibration-images", type=count_type(1, "--calibration-images"), default=100, metavar="N",
                   help="how many calibration images (a seeded random sample; default 100)")
    p.add_argument("--nms", nargs="?", const="multiclass", choices=("multiclass", "fast"), metavar="MODE",
                   help="detectors: include decoding + NMS in the file (batch 1): ONNX NonMaxSuppression (OpenVINO "
                        "converts it), TFLite's TFLite_Detection_PostProcess; multiclass (default): per-class NMS, "
                        "fast: each box's best class, class-agnostic NMS (Google's file's setting)")
    p.add_argument("--json", action="store_true", help="print the export report as one JSON object")

    p = add_command(sub, "bench", cmd_bench, "latency of each (α, ρ) on this machine: CSV, markdown table and plot")
    p.add_argument("--widths", type=list_type(width_type, "--widths"), default=[1.0, 0.75, 0.5, 0.25],
                   metavar="A,A,..", help="width multipliers α (default 1,0.75,0.5,0.25)")
    p.add_argument("--resolutions", type=list_type(resolution_type, "--resolutions"), default=[224, 192, 160, 128],
                   metavar="R,R,..", help="resolutions ρ (default 224,192,160,128)")
    _runtime_options(p)
    p.add_argument("--warmup", type=count_type(0, "--warmup"), default=10, metavar="N", help="untimed calls first (default 10)")
    p.add_argument("--compile", action="store_true", help="torch runtime: torch.compile (inductor) the model")
    p.add_argument("--out", default="bench", metavar="DIR", help="output folder (default ./bench)")
    p.add_argument("--probe", action="store_true",
                   help="instead: re-measure this machine (each installed runtime × precision on one small model, "
                        "cached per machine) for the default runtimes `bench`, `select` and `env` use")

    p = add_command(sub, "select", cmd_select, "the most accurate (α, ρ) that fits a latency budget on this machine")
    p.add_argument("--max-latency-ms", required=True, type=float_type("--max-latency-ms"), metavar="L",
                   help="budget for the median latency of one call (batch --batch), in milliseconds")
    p.add_argument("--max-params", type=quantity_type("--max-params"), metavar="P", help="e.g. 2.6M")
    p.add_argument("--max-mult-adds", type=quantity_type("--max-mult-adds"), metavar="M", help="e.g. 300M")
    p.add_argument("--accuracy", metavar="paper|tfslim|quant|FILE.csv",
                   help="top-1 source: TF-slim's published float table (default for fp32 and bf16), its 8-bit "
                        "table (quant; always used for int8 unless a CSV is given), the paper's Tables 6-9 (TF-slim's "
                        "where the paper has no figure), or a CSV width,resolution,top1[,precision]")
    p.add_argument("--bench-csv", metavar="FILE", help="latencies from a `mobilenets bench` CSV instead of measuring")
    p.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="auto (default): fp32, int8 and bf16 where this CPU accelerates it, each in its fastest "
                        "runtime here; or one precision (--int8 = --precision int8, --bf16 = --precision bf16)")
    p.add_argument("--out", metavar="DIR",
                   help="also write select.json (the answer) and select.csv/.md/.png (the latencies used, with a "
                        "precision column; reusable as --bench-csv) to this folder, checked before measuring")
    _runtime_options(p, iters=30)
    p.add_argument("--json", action="store_true",
                   help='print {"width", "resolution", "precision", "runtime", "latency_ms", "top1", '
                        '"comparison": [...], "pareto": [...], ...}')
