"""Shared timing helpers for the benchmarks: interleaved runs, medians, machine description."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def machine() -> str:
    """The CPU (brand, cores, features: mobilenets.deploy.cpu, which reads them with py-cpuinfo) and torch."""
    from mobilenets.deploy import cpu

    f = cpu.cpu_features()
    return f"{f.summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def sgemm_gflops(threads: int, n: int = 2048, calls: int = 8) -> tuple[float, str]:
    """This machine's fp32 matrix-multiply rate on ``threads`` threads (GFLOP/s, the faster of
    numpy's BLAS and torch's), and which BLAS gave it: what a good library reaches on the multiplies
    a network's 1x1 convolutions are. Not a ceiling (OpenVINO's 1x1 convs ran at up to 111% of it on
    Zen 4, 78–80% of the FMA peak there): the ceiling is ``_peak.measure``'s FMA peak."""
    import contextlib

    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    candidates = [("torch", torch.mm, torch.from_numpy(a))]
    try:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(limits=threads, user_api="blas")
        candidates.insert(0, ("numpy", np.matmul, a))
    except ImportError:  # numpy's BLAS would use every core, not ``threads``: torch's alone
        limit = contextlib.nullcontext()
    best: dict[str, float] = {}
    with limit:
        for name, mm, x in candidates:
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for _ in range(2):
                    mm(x, x)
                t0 = time.perf_counter()
                for _ in range(calls):
                    mm(x, x)
                best[name] = 2 * n ** 3 * calls / (time.perf_counter() - t0) / 1e9
            finally:
                torch.set_num_threads(saved)
    name = max(best, key=best.get)
    return best[name], name


def cuda_machine(script: str) -> str:
    """The GPU and host this run measures on (printed); exits with status 2 when there is no GPU."""
    import sys

    if not torch.cuda.is_available():
        print(f"{script} needs a CUDA GPU; none is available here", file=sys.stderr)
        raise SystemExit(2)
    where = f"{machine()}; GPU: {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}"
    print(f"machine: {where}")
    return where


def interleaved_medians(fns: dict[str, Callable[[], object]], *, warmup: int = 5, rounds: int = 30,
                        min_time: float = 0.0, block: int = 1, skip: int = 1, settle: float = 0.0
                        ) -> dict[str, list[float]]:
    """Time each function ``rounds`` times, alternating between them so that drift in the
    machine's speed hits all equally. Returns the list of times (seconds) per name.

    With ``block`` > 1 each turn is ``block`` consecutive calls of which the first ``skip`` are
    not recorded, and ``settle`` seconds of untimed calls come first (mobilenets.deploy.timing):
    ONNX Runtime's worker threads keep spinning for ~40 ms after a call and would otherwise steal
    the cores from whichever runtime is timed next (ten calls of a sub-millisecond model are not
    enough), and a cold thread pool would be charged to its own first call.
    """
    from mobilenets.deploy.timing import interleaved

    timed, untimed = (1, 0) if block == 1 else (block - skip, skip)
    return interleaved(fns, calls=rounds * timed, block=timed, warmup=warmup, skip=untimed, settle_seconds=settle,
                       min_time=min_time)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def p90_ms(samples: list[float]) -> float:
    from mobilenets.deploy.timing import p90

    return p90(samples) * 1e3
