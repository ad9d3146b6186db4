"""Latency of the MobileNet family on this machine, in the runtime you will deploy with.

:func:`benchmark` builds each (α, ρ) model, folds its BatchNorms, exports it the way
:func:`mobilenets.export` does (static shapes; int8 with per-channel weights), loads it in
the chosen runtime set up for single-stream latency (fixed threads, one stream), warms it up
and times single calls: median and p90 latency and throughput. Results go to a CSV, a
markdown table and a plot of latency against Mult-Adds: the paper's claim is that Mult-Adds
predict speed; the plot shows how well they do on this machine and runtime.

Weights are random: latency does not depend on their values. int8 models are calibrated on
random inputs for the same reason (accuracy is measured elsewhere, on real images).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .._utils import model_label
from ..config import MobileNetConfig

__all__ = [
    "RUNTIMES", "BenchResult", "default_runtime", "make_runner", "time_calls", "benchmark",
    "write_results", "read_results", "format_markdown",
]

RUNTIMES = ("torch", "onnxruntime", "openvino", "litert")
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEFAULT_RESOLUTIONS = (224, 192, 160, 128)
_RUNTIME_MODULE = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino",
                   "litert": "ai_edge_litert"}
_RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}


@dataclass
class BenchResult:
    """One timed configuration (latencies in milliseconds, throughput in images per second)."""

    width: float
    resolution: int
    runtime: str
    precision: str
    device: str
    batch: int
    threads: int
    mult_adds: int
    params: int
    median_ms: float
    p90_ms: float
    throughput: float
    iters: int

    @property
    def label(self) -> str:
        return model_label(self.width, self.resolution)


def runtime_available(runtime: str) -> bool:
    return importlib.util.find_spec(_RUNTIME_MODULE[runtime]) is not None


# Fastest first, per precision, from benchmarks/deploy_cpu.py (see default_runtime).
_CPU_RUNTIME_ORDER = {"fp32": ("openvino", "onnxruntime", "litert"), "bf16": ("openvino",),
                      "int8": ("litert", "openvino", "onnxruntime")}


def default_runtime(device: str = "cpu", precision: str = "fp32") -> str:
    """The fastest installed runtime for the device and precision, by measurement
    (``benchmarks/deploy_cpu.py``: batch 1, 2 threads, x86 with AVX-512 VNNI/BF16 and AMX,
    runtimes interleaved in turns of 50 calls).

    fp32 (1.0-224, our exports): OpenVINO 5.85 ms, ONNX Runtime 6.09, LiteRT 6.11: level
    within noise, OpenVINO first. bf16: OpenVINO, the only runtime with a bf16 CPU path
    (2.4 ms). int8 (0.5-160): LiteRT (XNNPACK) 0.63 ms, OpenVINO 0.81, ONNX Runtime 0.83.
    PyTorch eager is 3-4× slower on a CPU. On CUDA, PyTorch (cuDNN, CUDA graphs). Pass
    ``runtime`` to choose.
    """
    if device == "cuda":
        return "torch"
    for runtime in _CPU_RUNTIME_ORDER.get(precision, _CPU_RUNTIME_ORDER["fp32"]):
        if runtime_available(runtime):
            return runtime
    return "torch"


def _check(runtime: str, precision: str, device: str, batch: int, threads: int | None) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and runtime != "torch":
        raise ValueError(f"--device cuda is benchmarked with the torch runtime (got {runtime})")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available on this machine")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer ≥ 1, got {batch!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer ≥ 1, got {threads!r}")
    if precision == "bf16" and runtime in ("onnxruntime", "litert"):
        raise ValueError(f"{runtime} has no bf16 CPU path; use --runtime openvino or torch for bf16")
    if precision == "int8" and runtime == "torch" and device == "cuda":
        raise ValueError("int8 on CUDA is not supported; use bf16 on the GPU")
    if not runtime_available(runtime):
        package = {"litert": "ai-edge-litert"}.get(runtime, runtime)
        raise ValueError(f"runtime {runtime} is not installed: pip install {package}")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_runner(config: MobileNetConfig, runtime: str, *, precision: str = "fp32", device: str = "cpu",
                threads: int | None = None, batch: int = 1, workdir: str | os.PathLike | None = None,
                compile: bool = False, model: torch.nn.Module | None = None) -> Callable[[], Any]:
    """A zero-argument function that runs one inference of ``config`` in ``runtime``.

    The model is built (or ``model`` used), BN-folded and exported to ``workdir`` as our
    exports are; the input is allocated once so only inference is timed.
    """
    from ..models import MobileNetV1
    from ..quant import fuse
    from .export import _INT8_WRITERS, _WRITERS, open_runtime

    _check(runtime, precision, device, batch, threads)
    model = (model if model is not None else MobileNetV1(config)).eval()
    fused = fuse(model)
    r, c = config.resolution, config.in_chans
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch, c, r, r, generator=gen)
    if runtime == "torch":
        return _torch_runner(fused, example, precision, device, threads, compile)
    fmt = _RUNTIME_FORMAT[runtime]
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mobilenets-bench-"))
    suffix = {"openvino": ".xml"}.get(fmt, "." + fmt)
    path = str(workdir / f"mobilenet_{config.width_multiplier:g}_{r}_{precision}_b{batch}{suffix}")
    if precision == "int8":
        calibration = torch.randn(8 * batch, c, r, r, generator=gen).clamp_(-2, 2).numpy()
        _INT8_WRITERS[fmt](fused, example, path, batch, calibration)
    else:
        _WRITERS[fmt](fused, example, path, batch)
    runner = open_runtime(path, fmt, threads=threads, precision=precision)
    x = runner.prepare(example.numpy())  # the file's own layout (NHWC for TFLite): no transpose is timed
    return lambda: runner(x)


def _torch_runner(fused: torch.nn.Module, example: torch.Tensor, precision: str, device: str,
                  threads: int | None, compile: bool) -> Callable[[], Any]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = fused.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    x = example.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    if precision == "int8":
        from ..quant import pt2e_quantize

        model = pt2e_quantize(fused, example, example.shape[0], example.repeat(4, 1, 1, 1).numpy())
        x = example
        compile = True  # PT2E int8 runs as int8 only once inductor lowers it
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model, mode="reduce-overhead" if device == "cuda" else "max-autotune-no-cudagraphs")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run() -> Any:
        with _torch_threads(threads), torch.inference_mode():
            out = model(x)
        sync()
        return out
    return run


def time_calls(fn: Callable[[], Any], *, warmup: int = 10, iters: int = 50, min_time: float = 0.0
               ) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (at least ``iters`` calls, and
    at least ``min_time`` seconds)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def _interleaved_blocks(fns: Sequence[Callable[[], Any]], *, warmup: int, iters: int, min_time: float,
                        desc: str, progress: bool, block: int = 10) -> list[list[float]]:
    """Per-function call times, taken in rounds of ``block`` calls per function: a slow spell of
    the machine (another job starting) then spreads over all configs instead of hitting one and
    reordering the results; within a block the model's weights stay in cache, as when serving."""
    from tqdm import tqdm

    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    rounds = -(-iters // block)
    bar = tqdm(total=rounds * len(fns), desc=desc, unit="block", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    r = 0
    while r < rounds or time.perf_counter() - start < min_time:
        for fn, out in zip(fns, times):
            n = min(block, iters - r * block) if r < rounds else block
            fn()  # back from another model: one untimed call to bring this one into cache
            out.extend(time_calls(fn, warmup=0, iters=n))
            bar.update(1)
        r += 1
    bar.close()
    return times


def _p90(samples: Sequence[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def benchmark(widths: Sequence[float] = DEFAULT_WIDTHS, resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, *,
              runtime: str | None = None, precision: str = "fp32", device: str = "cpu",
              threads: int | None = None, batch: int = 1, warmup: int = 10, iters: int = 50,
              min_time: float = 0.0, num_classes: int = 1000, compile: bool = False,
              out: str | os.PathLike | None = None, progress: bool = True) -> list[BenchResult]:
    """Time every (α, ρ) in ``widths × resolutions``; write CSV/markdown/PNG to ``out`` if given."""
    from tqdm import tqdm

    from ..analysis import cost

    runtime = runtime or default_runtime(device, precision)
    if isinstance(warmup, bool) or warmup < 0 or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"warmup must be ≥ 0 and iters ≥ 1, got warmup={warmup!r}, iters={iters!r}")
    configs = [MobileNetConfig(width_multiplier=float(w), resolution=int(r), num_classes=num_classes)
               for w in widths for r in resolutions]
    if not configs:
        raise ValueError("nothing to benchmark: give at least one width and one resolution")
    _check(runtime, precision, device, batch, threads)
    used_threads = threads or (torch.get_num_threads() if runtime == "torch" else os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as workdir:
        fns = []
        for config in tqdm(configs, desc=f"build {runtime} {precision}", unit="model", disable=not progress,
                           dynamic_ncols=True):
            fns.append(make_runner(config, runtime, precision=precision, device=device, threads=threads,
                                   batch=batch, workdir=workdir, compile=compile))
        samples = _interleaved_blocks(fns, warmup=warmup, iters=iters, min_time=min_time,
                                      desc=f"time {runtime} {precision}", progress=progress)
    results: list[BenchResult] = []
    for config, times in zip(configs, samples):
        median = statistics.median(times)
        report = cost(config)
        results.append(BenchResult(
            width=config.width_multiplier, resolution=config.resolution, runtime=runtime,
            precision=precision, device=device, batch=batch, threads=used_threads,
            mult_adds=report.mult_adds, params=report.params, median_ms=median * 1e3,
            p90_ms=_p90(times) * 1e3, throughput=batch / median, iters=len(times)))
    if out is not None:
        write_results(results, out)
    return results


# ----------------------------------------------------------------------------- outputs

_FIELDS = [f.name for f in dataclasses.fields(BenchResult)]


def write_results(results: Sequence[BenchResult], out: str | os.PathLike, *, name: str = "bench"
                  ) -> dict[str, Path]:
    """``bench.csv``, ``bench.md`` and ``bench.png`` (latency vs Mult-Adds) in folder ``out``."""
    from .._utils import atomic_write

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory; --out names a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "png": out / f"{name}.png"}

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_FIELDS)
            w.writeheader()
            for r in results:
                w.writerow(dataclasses.asdict(r))

    atomic_write(paths["csv"], write_csv)
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(format_markdown(results) + "\n"))
    atomic_write(paths["png"], lambda tmp: _plot(results, tmp))
    return paths


def read_results(path: str | os.PathLike) -> list[BenchResult]:
    """Rows of a CSV written by :func:`write_results` (e.g. from another machine)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such bench CSV")
    types = {f.name: f.type for f in dataclasses.fields(BenchResult)}
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in ("width", "resolution", "median_ms") if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a bench CSV (missing column {missing[0]}; expected {', '.join(_FIELDS)})")
        for n, row in enumerate(reader, 2):
            try:
                values: dict[str, Any] = {}
                for k in _FIELDS:
                    v = row.get(k)
                    kind = types[k]
                    if v in (None, ""):
                        values[k] = {"str": "", "int": 0, "float": float("nan")}[kind]
                    else:
                        values[k] = {"str": str, "int": lambda s: int(float(s)), "float": float}[kind](v)
                rows.append(BenchResult(**values))
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{n}: bad row ({e})") from None
    if not rows:
        raise ValueError(f"{path}: bench CSV has no rows")
    return rows


def format_markdown(results: Sequence[BenchResult]) -> str:
    """A markdown table, one row per configuration."""
    lines = ["| α | ρ | Mult-Adds (M) | params (M) | runtime | precision | device | batch | threads "
             "| median ms | p90 ms | images/s |",
             "|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        width = f"{r.width:.1f}" if float(r.width).is_integer() else f"{r.width:g}"
        lines.append(f"| {width} | {r.resolution} | {r.mult_adds / 1e6:.1f} | {r.params / 1e6:.2f} | "
                     f"{r.runtime} | {r.precision} | {r.device} | {r.batch} | {r.threads} | {r.median_ms:.3f} | "
                     f"{r.p90_ms:.3f} | {r.throughput:.1f} |")
    return "\n".join(lines)


def _plot(results: Sequence[BenchResult], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for width in sorted({r.width for r in results}, reverse=True):
        rows = sorted((r for r in results if r.width == width), key=lambda r: r.mult_adds)
        xs, ys = [r.mult_adds / 1e6 for r in rows], [r.median_ms for r in rows]
        ax.plot(xs, ys, marker="o", label=f"α = {width:.1f}" if float(width).is_integer() else f"α = {width:g}")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(str(r.resolution), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    first = results[0]
    if all(r.mult_adds > 0 and r.median_ms > 0 for r in results):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 × 10ⁿ, written 0.5, 20, 100 rather than 5×10¹
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("Mult-Adds (millions)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"MobileNet V1 latency: {first.runtime} {first.precision}, {first.device}, "
                 f"batch {first.batch}, {first.threads} threads", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="points: ρ", fontsize=8)
    fig.tight_layout()
    with open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
