"""Timing runtimes one after another without one paying for another.

ONNX Runtime's worker threads keep spinning on the cores for a while after each run, waiting
for the next one: about 40 ms, measured idle on the Xeon with psutil. OpenVINO, LiteRT and
ExecuTorch went idle at once. torch's OpenMP threads may spin longer (Intel's runtime defaults to
``KMP_BLOCKTIME`` = 200 ms; not measured here), so eager-torch rows may settle less than fully.
Whatever is timed next shares the cores with the spinning threads: timed straight after an ONNX
Runtime session, in turns of 10 calls, a model read up to 2.3× its own median and 3–7× its p90. So every interleaved timing here first *settles*: untimed calls of the next function for
:data:`SETTLE_SECONDS`, which also brings its weights back into cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["SETTLE_SECONDS", "interleaved", "p90", "settle", "time_calls"]

K = TypeVar("K", bound=Hashable)

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


def interleaved(fns: Mapping[K, Callable[[], Any]], *, calls: int, block: int, warmup: int = 0, skip: int = 0,
                settle_seconds: float = SETTLE_SECONDS, min_time: float = 0.0,
                on_error: Callable[[K, Exception], None] | None = None,
                on_turn: Callable[[], None] | None = None) -> dict[K, list[float]]:
    """Seconds per call of each function, timed in turns: ``warmup`` untimed calls of each first,
    then rounds in which each function settles (:func:`settle`), makes ``skip`` more untimed calls
    and ``block`` timed ones, until each has ``calls`` timed calls (and ``min_time`` seconds have
    passed). Turns spread a slow spell of the machine over every function instead of reordering
    them; within a turn a model's weights stay in cache, as when serving.

    ``on_error``: a function that raises is dropped (its times too) and ``on_error(key, e)`` told,
    and the others go on; without it the exception propagates. ``on_turn`` is called after each
    turn (a progress bar)."""
    live = dict(fns)
    times: dict[K, list[float]] = {key: [] for key in fns}

    def attempt(key: K, body: Callable[[], None]) -> bool:
        try:
            body()
            return True
        except Exception as e:
            if on_error is None:
                raise
            on_error(key, e)  # the caller records why; the others go on
            del live[key], times[key]
            return False

    def warm(fn: Callable[[], Any]) -> None:
        for _ in range(warmup):
            fn()

    for key in list(live):
        attempt(key, lambda: warm(live[key]))
    rounds = -(-calls // block)
    start = time.perf_counter()
    r = 0
    while r < rounds or time.perf_counter() - start < min_time:
        n = min(block, calls - r * block) if r < rounds else block
        for key in list(live):
            def turn(fn: Callable[[], Any] = live[key], out: list[float] = times[key]) -> None:
                if settle_seconds > 0:
                    settle(fn, settle_seconds)
                for _ in range(skip):
                    fn()
                out.extend(time_calls(fn, warmup=0, iters=n))
            if attempt(key, turn) and on_turn is not None:
                on_turn()
        r += 1
    return times


def p90(samples: Sequence[float]) -> float:
    """The 90th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]
