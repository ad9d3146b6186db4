"""Measure this machine instead of assuming it: a short probe times every installed runtime at
every precision the CPU accelerates on one small model (α=0.5, 128 px, batch 1, interleaved), and
caches the result per machine signature in ``<cache>/probe/`` (``$MOBILENETS_CACHE``, else
``$XDG_CACHE_HOME/mobilenets``). ``default_runtime`` and ``mobilenets env`` read it; ``mobilenets
bench --probe`` measures again. Without a probe the fixed order in :mod:`.bench` is the fallback."""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .._utils import atomic_write
from ..config import MobileNetConfig
from ..data import cache_dir
from . import cpu
from .formats import EAGER_RUNTIME, RUNTIMES

__all__ = ["PROBE_CONFIG", "load_probe", "precisions_to_probe", "probe_path", "probed_runtime", "run_probe"]

PROBE_CONFIG = MobileNetConfig(width_multiplier=0.5, resolution=128)
_VERSION = 1


def probe_path() -> Path:
    sig = cpu.machine_signature()
    return cache_dir() / "probe" / f"{hashlib.sha256(sig.encode()).hexdigest()[:16]}.json"


def load_probe() -> dict[str, Any] | None:
    """The cached probe of this machine, or None (none yet, or made on another machine)."""
    path = probe_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != _VERSION or data.get("machine") != cpu.machine_signature():
        return None
    return data


def precisions_to_probe() -> list[str]:
    """fp32 and int8 always; bf16 only where the CPU accelerates it (AVX512_BF16 or AMX)."""
    return ["fp32", "int8"] + (["bf16"] if cpu.cpu_features().bf16 else [])


def run_probe(*, threads: int = 2, rounds: int = 8, block: int = 10) -> dict[str, Any]:
    """Time each installed runtime × precision (a few seconds per pair) and cache the medians."""
    from .bench import make_runner, runtime_available  # bench's default_runtime reads this module

    runners, keys = [], []
    with tempfile.TemporaryDirectory(prefix="mobilenets-probe-") as tmp:
        for precision in precisions_to_probe():
            for runtime in RUNTIMES:
                if runtime == EAGER_RUNTIME or not runtime_available(runtime):
                    continue
                if precision == "bf16" and runtime != "openvino":
                    continue
                try:
                    runners.append(make_runner(PROBE_CONFIG, runtime, precision=precision, threads=threads,
                                               workdir=tmp))
                    keys.append((runtime, precision))
                except (ValueError, RuntimeError):  # a runtime that cannot run this precision here
                    continue
        samples: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        for fn in runners:
            for _ in range(5):
                fn()
        for _ in range(rounds):  # interleaved in turns, so a busy spell hits every runtime alike
            for key, fn in zip(keys, runners):
                t0 = time.perf_counter()
                for _ in range(block):
                    fn()
                samples[key].append((time.perf_counter() - t0) / block)
    results = [{"runtime": r, "precision": p, "median_ms": 1000 * statistics.median(samples[(r, p)])}
               for r, p in keys]
    data = {"version": _VERSION, "machine": cpu.machine_signature(), "cpu": cpu.cpu_features().to_dict(),
            "config": PROBE_CONFIG.label, "threads": threads, "results": results}
    atomic_write(probe_path(), lambda t: Path(t).write_text(json.dumps(data, indent=2) + "\n"))
    return data


def probed_runtime(precision: str, probe: dict[str, Any] | None = None) -> tuple[str, float] | None:
    """The fastest runtime the probe measured at ``precision`` and its latency (ms), or None."""
    probe = probe if probe is not None else load_probe()
    if probe is None:
        return None
    rows = [r for r in probe["results"] if r["precision"] == precision]
    if not rows:
        return None
    best = min(rows, key=lambda r: r["median_ms"])
    return best["runtime"], best["median_ms"]
