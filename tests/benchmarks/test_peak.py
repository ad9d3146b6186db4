"""The benchmarks' FMA-peak and steadiness loop (benchmarks/_peak.py): its verdict, its fallback,
and, where gcc is here, that the compiled loop runs and reports sane windows."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_peak.py"
_spec = importlib.util.spec_from_file_location("bench_peak", _PATH)
peak = importlib.util.module_from_spec(_spec)
sys.modules["bench_peak"] = peak  # (dataclasses look their module up there)
_spec.loader.exec_module(peak)
S = peak.Spread


def _verdict(fma, read) -> str:
    return peak.steadiness(peak.Peak("avx512", 2, fma, read), "now").rsplit("[now: ", 1)[1]


def test_a_quiet_machine_is_steady_and_a_noisy_or_shared_one_is_not():
    quiet = S(best=230, median=220, p10=205, window_ms=7), S(best=180, median=160, p10=150, window_ms=2.5)
    assert _verdict(*quiet) == "steady]"
    noisy = _verdict(S(230, 211, 131, 7), quiet[1])  # a neighbour takes a core now and then
    assert noisy.startswith("UNSTEADY (FMA 10th percentile under 85% of its median")
    shared = _verdict(S(225, 77, 66, 20), quiet[1])  # a job on the same cores all along: a steady low rate
    assert shared.startswith("UNSTEADY (FMA median under 85% of its best")
    assert "read 10th percentile" in _verdict(quiet[0], S(170, 150, 100, 2))


def test_without_gcc_the_lines_say_not_available(monkeypatch):
    monkeypatch.setattr(peak.shutil, "which", lambda name: None)
    assert peak.measure(1) is None
    assert "n/a" in peak.steadiness(None, "before the tables")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed: the loop cannot be built here")
def test_the_compiled_loop_runs_and_reports_its_windows(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))  # built into this cache, not the user's
    p = peak.measure(1, windows=12)
    if p is None:
        pytest.skip("gcc here cannot build the loop (no OpenMP, or a CPU without FMA)")
    assert p.isa in ("avx512", "avx2-fma") and p.threads == 1
    for s in (p.fma, p.read):
        assert 0 < s.p10 <= s.median <= s.best and s.window_ms > 0
    assert list(tmp_path.rglob("peak")), "the binary is kept in the project's cache"
    assert peak.measure(1, windows=3) is not None  # the kept binary runs again
