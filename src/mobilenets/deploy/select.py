"""Pick the most accurate MobileNet (α, ρ) that fits a latency budget on this machine.

The paper's point is that α and ρ trade accuracy for cost; which trade is right depends on
the deployment budget, and Mult-Adds only approximate what a runtime does with them. So
:func:`select` times the candidates in the chosen runtime (or reads a bench CSV measured
elsewhere), keeps those within the params / Mult-Adds limits, builds the latency-accuracy
Pareto front (every model no other model beats on both), and returns the most accurate
front member within the latency budget, with the reasons.

Accuracy sources: ``tfslim`` — TF-slim's published ImageNet top-1 of the released float
checkpoints (all 16 configs); ``quant`` — of the released 8-bit checkpoints; ``paper`` — the
paper's Tables 6-9 where they list the config, else TF-slim's (said in the notes); or a CSV
with columns ``width,resolution,top1``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._utils import model_label, width_label
from ..analysis import PAPER_ROWS, cost
from ..config import MobileNetConfig
from ..models import OFFICIAL_MODELS
from . import cpu
from .bench import benchmark, default_runtime
from .formats import RUNTIMES
from .results import read_results

__all__ = ["ACCURACY_SOURCES", "Candidate", "Selection", "accuracy_table", "pareto_front", "select"]

ACCURACY_SOURCES = ("paper", "tfslim", "quant")
_PAPER_NAME = re.compile(r"^([\d.]+) MobileNet-(\d+)$")


@dataclass
class Candidate:
    """One (α, ρ) with its measured latency, accuracy and cost."""

    width: float
    resolution: int
    latency_ms: float
    p90_ms: float
    top1: float
    top1_source: str
    mult_adds: int
    params: int

    @property
    def label(self) -> str:
        return model_label(self.width, self.resolution)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


@dataclass
class Selection:
    """The answer: the chosen model (``None`` when nothing fits), the front, and why."""

    chosen: Candidate | None
    pareto: list[Candidate]
    candidates: list[Candidate]
    fastest: Candidate
    budget: dict[str, float | None]
    runtime: str
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        c = self.chosen
        return {
            "width": c.width if c else None, "resolution": c.resolution if c else None,
            "latency_ms": c.latency_ms if c else None, "top1": c.top1 if c else None,
            "mult_adds": c.mult_adds if c else None, "params": c.params if c else None,
            "fits": c is not None, "reason": self.reason, "runtime": self.runtime, "budget": self.budget,
            "fastest": self.fastest.to_dict(),
            "pareto": [p.to_dict() for p in self.pareto], "notes": self.notes,
        }

    def format(self) -> str:
        lines = [self.reason, "",
                 f"Pareto front (latency vs top-1, {self.runtime}; * = chosen, x = over budget):",
                 f"  {'model':<20} {'latency ms':>10} {'p90 ms':>8} {'top-1':>6}  {'Mult-Adds':>9} {'params':>7}"]
        limit = self.budget.get("max_latency_ms") or math.inf
        for p in self.pareto:
            mark = "*" if p is self.chosen else ("x" if p.latency_ms > limit else " ")
            lines.append(f"{mark} {p.label:<20} {p.latency_ms:>10.3f} {p.p90_ms:>8.3f} {p.top1:>6.1f}  "
                         f"{p.mult_adds / 1e6:>8.1f}M {p.params / 1e6:>6.2f}M")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def accuracy_table(source: str | os.PathLike) -> tuple[dict[tuple[float, int], tuple[float, str]], list[str]]:
    """``{(α, ρ): (top1, where it comes from)}`` and notes about gaps or fallbacks."""
    tfslim = {(m.width_multiplier, m.resolution): (m.top1, "tfslim") for m in OFFICIAL_MODELS.values()}
    if source == "tfslim":
        return tfslim, []
    if source == "quant":
        return {(m.width_multiplier, m.resolution): (m.quant_top1, "quant") for m in OFFICIAL_MODELS.values()}, []
    if source == "paper":
        table = dict(tfslim)
        paper: set[tuple[float, int]] = set()
        for row in PAPER_ROWS:
            m = _PAPER_NAME.match(row.model)
            if row.table in (6, 7, 8, 9) and m and row.top1 is not None:
                key = (float(m[1]), int(m[2]))
                table[key] = (row.top1, f"paper Table {row.table}")
                paper.add(key)
        missing = sorted(set(tfslim) - paper, key=lambda k: (-k[0], -k[1]))
        note = ("the paper lists top-1 for " + ", ".join(f"{width_label(a)}-{r}" for a, r in sorted(paper, reverse=True))
                + "; for the other configs (" + ", ".join(f"{width_label(a)}-{r}" for a, r in missing)
                + ") TF-slim's published float top-1 is used")
        return table, [note]
    return _read_accuracy_csv(Path(source)), []


def _read_accuracy_csv(path: Path) -> dict[tuple[float, int], tuple[float, str]]:
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ValueError(f"accuracy must be one of {', '.join(ACCURACY_SOURCES)} or an existing .csv file "
                         f"with columns width,resolution,top1; got {str(path)!r}")
    out: dict[tuple[float, int], tuple[float, str]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"width", "resolution", "top1"} <= cols:
            raise ValueError(f"{path}: accuracy CSV needs columns width,resolution,top1 (has {', '.join(sorted(cols))})")
        for n, row in enumerate(reader, 2):
            try:
                out[(float(row["width"]), int(float(row["resolution"])))] = (float(row["top1"]), path.name)
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{n}: width, resolution and top1 must be numbers") from None
    if not out:
        raise ValueError(f"{path}: accuracy CSV has no rows")
    return out


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other candidate beats on both latency and top-1, fastest first."""
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.top1)):
        if not front or c.top1 > front[-1].top1:
            front.append(c)
    return front


def _key(width: float, resolution: int) -> tuple[float, int]:
    return (round(float(width), 6), int(resolution))


def _measured_from_csv(bench_csv: str | os.PathLike, runtime: str | None, table: dict[tuple[float, int], Any],
                       notes: list[str]) -> tuple[dict[tuple[float, int], tuple[float, float]], str]:
    """``{(α, ρ): (median ms, p90 ms)}`` from a bench CSV (the fastest row per config), and its label."""
    rows = read_results(bench_csv)
    if runtime is not None:
        rows = [r for r in rows if r.runtime == runtime]
        if not rows:
            raise ValueError(f"{bench_csv}: no rows for runtime {runtime}")
    runtimes = sorted({r.runtime for r in rows})
    runtime_label = "/".join(runtimes) + f" (from {Path(bench_csv).name})"
    measured: dict[tuple[float, int], tuple[float, float]] = {}
    for r in rows:
        k = _key(r.width, r.resolution)
        if k in measured and measured[k][0] <= r.median_ms:
            continue
        measured[k] = (r.median_ms, r.p90_ms)
    unknown = sorted(k for k in measured if k not in table)
    if unknown:
        notes.append("no accuracy for " + ", ".join(f"{width_label(a)}-{r}" for a, r in unknown) + "; skipped")
    untimed = sorted(k for k in table if k not in measured)
    if untimed and len(untimed) < len(table):
        notes.append("not in the bench CSV: " + ", ".join(f"{width_label(a)}-{r}" for a, r in untimed))
    machines = sorted({r.machine for r in rows if r.machine})
    if len(machines) > 1:
        notes.append("the bench CSV mixes machines: " + "; ".join(machines))
    return measured, runtime_label


def select(max_latency_ms: float, *, max_params: float | None = None, max_mult_adds: float | None = None,
           accuracy: str | os.PathLike = "tfslim", runtime: str | None = None, precision: str = "fp32",
           device: str = "cpu", threads: int | None = None, batch: int = 1,
           bench_csv: str | os.PathLike | None = None, widths: Sequence[float] | None = None,
           resolutions: Sequence[int] | None = None, iters: int = 30, warmup: int = 5,
           progress: bool = True) -> Selection:
    """The most accurate (α, ρ) whose median latency is ≤ ``max_latency_ms``.

    Latencies come from ``bench_csv`` (a :func:`mobilenets.deploy.benchmark` CSV) or are
    measured now for the configs with a known accuracy that pass the params / Mult-Adds limits.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    for name, value in (("max_latency_ms", max_latency_ms), ("max_params", max_params),
                        ("max_mult_adds", max_mult_adds)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    table, notes = accuracy_table(accuracy)
    table = {_key(*k): v for k, v in table.items()}
    if widths is not None or resolutions is not None:
        table = {k: v for k, v in table.items()
                 if (widths is None or k[0] in {round(w, 6) for w in widths})
                 and (resolutions is None or k[1] in set(resolutions))}
        if not table:
            raise ValueError("no config with a known accuracy among the given widths and resolutions")

    def static_ok(mult_adds: int, params: int) -> bool:
        return (max_params is None or params <= max_params) and (max_mult_adds is None or mult_adds <= max_mult_adds)

    costs = {k: cost(MobileNetConfig(width_multiplier=k[0], resolution=k[1])) for k in table}
    if bench_csv is not None:
        measured, runtime_label = _measured_from_csv(bench_csv, runtime, table, notes)
    else:
        runtime = runtime or default_runtime(device, precision)
        runtime_label = f"{runtime} {precision}, measured now"
        todo = [k for k in table if static_ok(costs[k].mult_adds, costs[k].params)] or list(table)
        measured = {}
        if progress and device == "cpu":
            print(cpu.cpu_features().summary(), file=sys.stderr, flush=True)
        for k in todo:  # one model at a time keeps the order of timing irrelevant to the choice
            res = benchmark([k[0]], [k[1]], runtime=runtime, precision=precision, device=device,
                            threads=threads, batch=batch, warmup=warmup, iters=iters, progress=progress,
                            show_cpu=False)[0]
            measured[_key(res.width, res.resolution)] = (res.median_ms, res.p90_ms)

    candidates = [Candidate(k[0], k[1], measured[k][0], measured[k][1], table[k][0], table[k][1],
                            costs[k].mult_adds, costs[k].params) for k in table if k in measured]
    if not candidates:
        raise ValueError("no candidate has both a latency and an accuracy (check the bench CSV's widths/resolutions)")
    fastest = min(candidates, key=lambda c: c.latency_ms)
    eligible = [c for c in candidates if static_ok(c.mult_adds, c.params)]
    budget = {"max_latency_ms": float(max_latency_ms), "max_params": max_params, "max_mult_adds": max_mult_adds}
    front = pareto_front(eligible)
    fitting = [c for c in front if c.latency_ms <= max_latency_ms]
    limits = f"≤ {max_latency_ms:g} ms" + (f", ≤ {max_params / 1e6:g} M params" if max_params else "") + \
        (f", ≤ {max_mult_adds / 1e6:g} M Mult-Adds" if max_mult_adds else "")
    if not fitting:
        why = ("no model meets the params / Mult-Adds limits" if not eligible
               else f"the fastest model within the params / Mult-Adds limits, {front[0].label}, takes "
                    f"{front[0].latency_ms:.3f} ms")
        reason = (f"no MobileNet fits the budget ({limits}) on {runtime_label}: {why}. The fastest model "
                  f"overall is {fastest.label} at {fastest.latency_ms:.3f} ms ({fastest.mult_adds / 1e6:.0f} M "
                  f"Mult-Adds, {fastest.params / 1e6:.2f} M params, top-1 {fastest.top1:.1f})")
        return Selection(None, front, candidates, fastest, budget, runtime_label, reason, notes)
    chosen = max(fitting, key=lambda c: (c.top1, -c.latency_ms))
    reason = (f"{chosen.label} (α={width_label(chosen.width)}, ρ={chosen.resolution}): top-1 {chosen.top1:.1f} "
              f"({chosen.top1_source}) at {chosen.latency_ms:.3f} ms median on {runtime_label}, within {limits}")
    better = [c for c in front if c.top1 > chosen.top1]
    if better:
        nxt = min(better, key=lambda c: c.latency_ms)
        reason += (f"; the next more accurate model on the Pareto front, {nxt.label} (top-1 {nxt.top1:.1f}), "
                   f"takes {nxt.latency_ms:.3f} ms")
    else:
        reason += "; it is the most accurate candidate"
    dominated = [c for c in eligible if c not in front and c.latency_ms <= max_latency_ms]
    if dominated:
        reason += (f"; {len(dominated)} other model(s) within budget are dominated (slower and no more "
                   "accurate than a front member)")
    return Selection(chosen, front, candidates, fastest, budget, runtime_label, reason, notes)
