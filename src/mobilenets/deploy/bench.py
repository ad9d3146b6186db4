"""Latency of the MobileNet family on this machine, in the runtime you will deploy with.

:func:`benchmark` builds each (α, ρ) model, folds its BatchNorms, exports it the way
:func:`mobilenets.export` does (static shapes; int8 with per-channel weights), loads it in
the chosen runtime set up for single-stream latency (fixed threads, one stream), warms it up
and times single calls: median and p90 latency and throughput. Results go to a CSV, a
markdown table and a plot of latency against Mult-Adds: the paper's claim is that Mult-Adds
predict speed; the plot shows how well they do on this machine and runtime.

Weights are random: latency does not depend on their values. int8 models are calibrated on
random inputs for the same reason (accuracy is measured elsewhere, on real images).

Every run records the CPU that measured it (:mod:`mobilenets.deploy.cpu`): a line printed
before timing, and columns of ``bench.csv``. A precision the CPU cannot accelerate is refused,
not timed as something else: ``precision="bf16"`` on a CPU without AVX512_BF16 or AMX raises
``ValueError``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .._utils import check_writable, os_error_message
from ..analysis import cost
from ..config import MobileNetConfig
from ..models import MobileNetV1
from ..quant import fuse, pt2e_quantize
from . import cpu
from .formats import EAGER_RUNTIME, RUNTIMES, format_of_runtime, runtime_package
from .probe import ensure_probe, probed_runtime
from .results import BenchResult, format_markdown, read_results, write_results
from .runtime import open_runtime, runtime_available
from .timing import interleaved, p90, time_calls

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "BenchResult",
    "benchmark",
    "check_settings",
    "check_out_dir",
    "check_precision",
    "default_runtime",
    "export_name",
    "format_markdown",
    "make_runner",
    "read_results",
    "runtime_available",
    "time_calls",
    "write_results",
]

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEFAULT_RESOLUTIONS = (224, 192, 160, 128)


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
    PyTorch eager is 3-4× slower on a CPU. That order is only the fallback: once this machine has
    been probed (:mod:`.probe`, ``mobilenets bench --probe``) its own fastest runtime is the default.
    On CUDA, PyTorch (cuDNN, CUDA graphs). Pass ``runtime`` to choose.
    """
    if device == "cuda":
        return EAGER_RUNTIME

    measured = probed_runtime(precision)  # this machine's probe (`mobilenets bench --probe`), if made
    if measured is not None and runtime_available(measured[0]):
        return measured[0]
    for runtime in _CPU_RUNTIME_ORDER.get(precision, _CPU_RUNTIME_ORDER["fp32"]):
        if runtime_available(runtime):
            return runtime
    return EAGER_RUNTIME


def check_settings(runtime: str, precision: str, device: str, batch: int, threads: int | None) -> None:
    """Refuse bad benchmark settings with a one-line ``ValueError`` (before anything is measured)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and runtime != EAGER_RUNTIME:
        raise ValueError(f"--device cuda is benchmarked with the torch runtime (got {runtime})")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available on this machine")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer ≥ 1, got {batch!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer ≥ 1, got {threads!r}")
    fmt = format_of_runtime(runtime)
    if precision == "bf16" and fmt is not None and not fmt.bf16:
        raise ValueError(f"{runtime} has no bf16 CPU path; use --runtime {' or '.join(_bf16_runtimes())} for bf16")
    if precision == "int8" and runtime == EAGER_RUNTIME and device == "cuda":
        raise ValueError("int8 on CUDA is not supported; use bf16 on the GPU")
    if not runtime_available(runtime):
        raise ValueError(f"runtime {runtime} is not installed: pip install {runtime_package(runtime)}")
    check_precision(precision, device)


def _bf16_runtimes() -> list[str]:
    return [r for r in RUNTIMES if getattr(format_of_runtime(r), "bf16", True)]


def check_precision(precision: str, device: str = "cpu", features: cpu.CpuFeatures | None = None) -> None:
    """Refuse a precision this CPU cannot accelerate, rather than time it as something else.

    bf16 on a CPU without AVX512_BF16 or AMX would be emulated, or silently run as fp32
    (OpenVINO's bf16 hint falls back to f32 there): a one-line ``ValueError`` says so.
    int8 runs on every x86 CPU (without VNNI it is slower, and the ONNX int8 writer adapts).
    """
    if device != "cpu" or precision != "bf16":
        return
    features = features if features is not None else cpu.cpu_features()
    if not features.bf16:
        raise ValueError(f"bf16 is not accelerated on this CPU ({features.brand}: no AVX512_BF16 or AMX), so it would "
                         "be emulated or run as fp32, not timed as bf16; benchmark fp32 or int8 here")


def check_out_dir(out: str | os.PathLike) -> Path:
    """``out`` as a folder results can be written to, checked before anything is measured.

    A one-line ``ValueError`` naming ``out`` when it cannot be: it (or a folder above it) is a
    file, or the nearest existing folder does not accept new files (permissions, a read-only file
    system: tried with an unnamed temporary file, so it holds for root too). Nothing is created:
    the folder itself is made only when the results are written.
    """
    path = Path(out)
    try:
        check_writable(path, folder=True)
        existing = next((p for p in (path, *path.absolute().parents) if p.is_dir()), Path("."))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(os_error_message(e, path, writing=True)) from None
    return path


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
                compile: bool = False, model: torch.nn.Module | None = None, reuse: bool = False
                ) -> Callable[[], Any]:
    """A zero-argument function that runs one inference of ``config`` in ``runtime``.

    The model is built (or ``model`` used), BN-folded and exported to ``workdir`` as our
    exports are; the input is allocated once so only inference is timed. ``reuse``: when
    ``workdir`` already holds this export (:func:`export_name`; the probe's file cache), it is
    opened instead of exported again. The file name says only the config, runtime, precision and
    batch, so the caller keys the workdir by everything else the file depends on (the weights, the
    toolchain, the code), as the probe does.
    """
    check_settings(runtime, precision, device, batch, threads)
    model = (model if model is not None else MobileNetV1(config)).eval()
    fused = fuse(model)
    r, c = config.resolution, config.in_chans
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch, c, r, r, generator=gen)
    fmt = format_of_runtime(runtime)
    if fmt is None:
        return _torch_runner(fused, example, precision, device, threads, compile)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mobilenets-bench-"))
    path = str(workdir / export_name(config, runtime, precision, batch))
    if precision == "int8" and fmt.write_int8 is None:
        raise ValueError(f"{runtime} has no int8 export ({fmt.name})")
    if not (reuse and os.path.exists(path)):
        if precision == "int8":
            calibration = torch.randn(8 * batch, c, r, r, generator=gen).clamp_(-2, 2).numpy()
            fmt.write_int8(fused, example, path, batch, calibration)
        else:
            fmt.write(fused, example, path, batch)
    runner = open_runtime(path, fmt.name, threads=threads, precision=precision)
    x = runner.prepare(example.numpy())  # the file's own layout (NHWC for TFLite): no transpose is timed
    return lambda: runner(x)


def export_name(config: MobileNetConfig, runtime: str, precision: str, batch: int) -> str:
    """The file name :func:`make_runner` exports ``config`` to for ``runtime`` (in its workdir)."""
    fmt = format_of_runtime(runtime)
    suffix = fmt.suffix if fmt is not None else ""
    return f"mobilenet_{config.width_multiplier:g}_{config.resolution}_{precision}_b{batch}{suffix}"


def _torch_runner(fused: torch.nn.Module, example: torch.Tensor, precision: str, device: str,
                  threads: int | None, compile: bool) -> Callable[[], Any]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = fused.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    x = example.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    if precision == "int8":
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


def _interleaved_blocks(fns: Sequence[Callable[[], Any]], *, warmup: int, iters: int, min_time: float,
                        desc: str, progress: bool, block: int = 25) -> list[list[float]]:
    """Per-model call times, in turns of ``block`` calls (:func:`~.timing.interleaved`: each turn
    settles first, as the previous model's runtime may still be spinning on the cores)."""
    bar = tqdm(total=-(-iters // block) * len(fns), desc=desc, unit="block", disable=not progress, dynamic_ncols=True)
    try:
        times = interleaved(dict(enumerate(fns)), calls=iters, block=block, warmup=warmup, min_time=min_time,
                            on_turn=lambda: bar.update(1))
    finally:
        bar.close()
    return [times[i] for i in range(len(fns))]


def benchmark(widths: Sequence[float] = DEFAULT_WIDTHS, resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, *,
              runtime: str | None = None, precision: str = "fp32", device: str = "cpu",
              threads: int | None = None, batch: int = 1, warmup: int = 10, iters: int = 50,
              min_time: float = 0.0, num_classes: int = 1000, compile: bool = False,
              out: str | os.PathLike | None = None, progress: bool = True,
              show_cpu: bool | None = None) -> list[BenchResult]:
    """Time every (α, ρ) in ``widths × resolutions``; write CSV/markdown/PNG to ``out`` if given.

    The CPU's features (:func:`mobilenets.deploy.cpu_features`) are printed to stderr before
    timing (``show_cpu``, default: with ``progress``) and recorded in every row.
    """
    if isinstance(warmup, bool) or warmup < 0 or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"warmup must be ≥ 0 and iters ≥ 1, got warmup={warmup!r}, iters={iters!r}")
    configs = [MobileNetConfig(width_multiplier=float(w), resolution=int(r), num_classes=num_classes)
               for w in widths for r in resolutions]
    if not configs:
        raise ValueError("nothing to benchmark: give at least one width and one resolution")
    if out is not None:
        check_out_dir(out)  # before anything is measured, not after
    if runtime is None and device == "cpu":
        check_settings(EAGER_RUNTIME, precision, device, batch, threads)  # bad settings: refused before probing
        ensure_probe(threads=threads or 2, progress=progress)  # the default is this machine's fastest
    runtime = runtime or default_runtime(device, precision)
    check_settings(runtime, precision, device, batch, threads)
    features = cpu.cpu_features()
    if show_cpu or (show_cpu is None and progress):
        print(features.summary(), file=sys.stderr, flush=True)
    used_threads = threads or (torch.get_num_threads() if runtime == EAGER_RUNTIME else cpu.usable_cores())
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
            p90_ms=p90(times) * 1e3, throughput=batch / median, iters=len(times)).with_cpu(features))
    if out is not None:
        write_results(results, out)
    return results
