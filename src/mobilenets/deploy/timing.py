"""Timing runtimes one after another without one paying for another.

ONNX Runtime's worker threads keep spinning on the cores for a while after each run, waiting
for the next one (about 40 ms on the project's 2-core machines, measured idle; OpenVINO, LiteRT
and ExecuTorch go idle at once; an OpenMP build of torch spins too, by default up to
``KMP_BLOCKTIME`` = 200 ms with Intel's runtime, so eager-torch rows settle less than fully). Whatever is timed next shares the cores with them: timed straight after an
ONNX Runtime session, in turns of 10 calls, a model read up to 2.3× its own median and 3–7× its
p90. So every interleaved timing here first *settles*: untimed calls of the next function for
:data:`SETTLE_SECONDS`, which also brings its weights back into cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SETTLE_SECONDS", "p90", "settle", "time_calls"]

#: Untimed calls for this long before each timed turn (ONNX Runtime's spin, ~40 ms, with margin).
SETTLE_SECONDS = 0.1


def settle(fn: Callable[[], Any], seconds: float = SETTLE_SECONDS) -> None:
    """Call ``fn`` untimed for ``seconds`` (at least once), so that the runtime timed before it
    has stopped spinning and ``fn``'s model is in cache when its timed calls start."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < seconds:
        fn()


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


def p90(samples: Sequence[float]) -> float:
    """The 90th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]
