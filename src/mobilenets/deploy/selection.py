"""Pick the most accurate MobileNet (α, ρ) that fits a latency budget on this machine.

The paper's point is that α and ρ trade accuracy for cost; which trade is right depends on
the deployment budget, and Mult-Adds only approximate what a runtime does with them. So
:func:`select` times the candidates in the chosen runtime (or reads a bench CSV measured
elsewhere), keeps those within the params / Mult-Adds limits, builds the latency-accuracy
Pareto front (every model no other model beats on both), and returns the most accurate
front member within the latency budget, with the reasons.

Precision is a choice like α and ρ: by default (``precision="auto"``) every (α, ρ) is a
candidate in fp32 and in int8, and in bf16 where the CPU accelerates it (AVX512_BF16 or AMX;
elsewhere bf16 is reported as not accelerated, never timed as fp32), each in the runtime that is
fastest for that precision on this machine (:func:`~mobilenets.deploy.default_runtime`: this
machine's probe, else the fixed fallback order). The answer says what each precision costs and
scores for the chosen (α, ρ).

Accuracy sources: ``tfslim`` — TF-slim's published ImageNet top-1 of the released float
checkpoints (all 16 configs); ``quant`` — of the released 8-bit checkpoints; ``paper`` — the
paper's Tables 6-9 where they list the config, else TF-slim's (said in the notes); or a CSV
with columns ``width,resolution,top1`` (and optionally ``precision``). By default fp32 uses
TF-slim's float table, int8 its 8-bit table (an assumption for our post-training int8 files,
said in the notes: :data:`INT8_ACCURACY_NOTE`), and bf16 the float table.

Measuring is cheapest first (by Mult-Adds) and stops early: a model that takes more than
``prune_margin`` × the budget rules out, without timing them, the models of that precision that
are at least as wide *and* have at least as large an input (see :func:`select` for why that
partial order, not Mult-Adds, is what is assumed).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .._utils import atomic_write, model_label, width_label
from ..analysis import PAPER_ROWS, cost
from ..config import MobileNetConfig
from ..models import OFFICIAL_MODELS
from . import cpu
from .bench import benchmark, check_out_dir, check_precision, check_settings, default_runtime
from .formats import EAGER_RUNTIME, RUNTIMES, format_of_runtime
from .probe import ensure_probe, probed_runtime
from .results import BenchResult, read_results, write_results

__all__ = ["ACCURACY_SOURCES", "INT8_ACCURACY_NOTE", "PRECISION_CHOICES", "PRUNE_MARGIN", "Candidate", "Measure",
           "Selection", "accuracy_table", "pareto_front", "runtime_name", "select", "write_selection"]

ACCURACY_SOURCES = ("paper", "tfslim", "quant")
PRECISION_CHOICES = ("auto", "fp32", "int8", "bf16")
# A model slower than this × the budget rules out the models that do at least its work (see select).
PRUNE_MARGIN = 1.5
_PAPER_NAME = re.compile(r"^([\d.]+) MobileNet-(\d+)$")
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "litert": "LiteRT", "torch": "PyTorch"}
INT8_ACCURACY_NOTE = (
    "int8 top-1 is TF-slim's published top-1 of Google's 8-bit checkpoints, assumed for our int8 files: they are "
    "post-training quantized from the float weights (`export --int8` refuses one that agrees with fp32 on fewer "
    "than 90% of held-out images); on the 100 ImageNet samples at 0.5-160 ours score 71-74% against 73% for "
    "Google's uint8 file")
BF16_ACCURACY_NOTE = ("bf16 top-1 is taken as fp32's (bf16 agreed with fp32 on 98% of top-1 on the 100 ImageNet "
                      "samples where it was measured); not measured on this machine")
# (width, resolution, runtime, precision) -> (median ms, p90 ms) or a BenchResult: how select times one model.
Measure = Callable[[float, int, str, str], "tuple[float, float] | BenchResult"]


def runtime_name(runtime: str) -> str:
    """The runtime as its makers spell it: ``onnxruntime`` → ``ONNX Runtime``."""
    return _RUNTIME_NAMES.get(runtime, runtime)


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
    precision: str = "fp32"
    runtime: str = ""

    @property
    def label(self) -> str:
        return model_label(self.width, self.resolution)

    @property
    def path(self) -> str:
        """How it runs: ``int8 in LiteRT``."""
        return f"{self.precision} in {runtime_name(self.runtime)}" if self.runtime else self.precision

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


@dataclass
class Selection:
    """The answer: the chosen model (``None`` when nothing fits), the front, and why.

    ``comparison`` says, for the chosen (α, ρ) (or, when nothing fits, the cheapest), what each
    precision costs and scores on this machine; ``not_measured`` lists the models ruled out
    without timing (assumed over budget); ``measurements`` are the latencies used, as bench rows
    (``precision`` and ``runtime`` columns included), for :func:`write_selection`.
    """

    chosen: Candidate | None
    pareto: list[Candidate]
    candidates: list[Candidate]
    fastest: Candidate
    budget: dict[str, float | None]
    runtime: str  # where the latencies come from, e.g. "fp32 in onnxruntime, int8 in litert, measured now"
    reason: str
    notes: list[str] = field(default_factory=list)
    runtimes: dict[str, str] = field(default_factory=dict)  # precision -> runtime
    comparison: list[dict[str, Any]] = field(default_factory=list)
    why_precision: str = ""
    not_measured: list[dict[str, Any]] = field(default_factory=list)
    measurements: list[BenchResult] = field(default_factory=list)
    timed: int = 0  # models timed now (0 when the latencies come from a bench CSV)
    where: str = "on this machine"  # or "in bench.csv": where the latencies were measured

    def to_json(self) -> dict[str, Any]:
        c = self.chosen
        return {
            "width": c.width if c else None, "resolution": c.resolution if c else None,
            "precision": c.precision if c else None, "runtime": c.runtime if c else None,
            "latency_ms": c.latency_ms if c else None, "top1": c.top1 if c else None,
            "top1_source": c.top1_source if c else None,
            "mult_adds": c.mult_adds if c else None, "params": c.params if c else None,
            "fits": c is not None, "reason": self.reason, "why_precision": self.why_precision,
            "measured": self.runtime, "where": self.where, "runtimes": self.runtimes, "budget": self.budget,
            "comparison": self.comparison, "fastest": self.fastest.to_dict(),
            "pareto": [p.to_dict() for p in self.pareto], "timed": self.timed,
            "not_measured": self.not_measured, "notes": self.notes,
        }

    def comparison_line(self) -> str:
        """``0.5 MobileNet-160 on this machine: int8 in LiteRT 2.400 ms, top-1 57.7 (quant) vs ...``
        (``in bench.csv`` instead when the latencies come from one)."""
        if not self.comparison:
            return ""
        first = self.comparison[0]
        parts, others = [], []
        limit = self.budget.get("max_latency_ms") or math.inf
        for e in self.comparison:
            if e["latency_ms"] is not None:
                over = " (over budget)" if e["latency_ms"] > limit else ""
                parts.append(f"{e['precision']} in {runtime_name(e['runtime'])} {e['latency_ms']:.3f} ms{over}, "
                             f"top-1 {e['top1']:.1f} ({e['top1_source']})")
            else:
                others.append(f"{e['precision']} {e['status']}")
        line = f"{model_label(first['width'], first['resolution'])} {self.where}: " + " vs ".join(parts)
        return line + ("; " if parts and others else "") + "; ".join(others)

    def format(self) -> str:
        lines = [self.reason]
        lines += [x for x in (self.comparison_line(), self.why_precision) if x]
        lines += ["", f"Pareto front (latency vs top-1, {self.runtime}; * = chosen, x = over budget):",
                  (f"  {'model':<20} {'precision':<22} {'latency ms':>10} {'p90 ms':>8} {'top-1':>6}  "
                   f"{'Mult-Adds':>9} {'params':>7}")]
        limit = self.budget.get("max_latency_ms") or math.inf
        for p in self.pareto:
            mark = "*" if p is self.chosen else ("x" if p.latency_ms > limit else " ")
            lines.append(f"{mark} {p.label:<20} {p.path:<22} {p.latency_ms:>10.3f} {p.p90_ms:>8.3f} {p.top1:>6.1f}  "
                         f"{p.mult_adds / 1e6:>8.1f}M {p.params / 1e6:>6.2f}M")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def write_selection(selection: Selection, out: str | os.PathLike) -> dict[str, Path]:
    """``select.json`` (the answer) and ``select.csv`` / ``.md`` / ``.png`` (the latencies it used, one row
    per model and precision, readable again with ``--bench-csv``) in folder ``out``."""
    paths = write_results(selection.measurements, out, name="select")
    path = Path(out) / "select.json"
    atomic_write(path, lambda t: Path(t).write_text(json.dumps(selection.to_json(), indent=2) + "\n"))
    return {"json": path, **paths}


def accuracy_table(source: str | os.PathLike, precision: str | None = None
                   ) -> tuple[dict[tuple[float, int], tuple[float, str]], list[str]]:
    """``{(α, ρ): (top1, where it comes from)}`` and notes about gaps or fallbacks.

    ``precision`` only matters for a CSV with a ``precision`` column: its rows for that precision
    (and rows that leave it empty) are used.
    """
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
    return _read_accuracy_csv(Path(source), precision), []


def _read_accuracy_csv(path: Path, precision: str | None = None) -> dict[tuple[float, int], tuple[float, str]]:
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ValueError(f"accuracy must be one of {', '.join(ACCURACY_SOURCES)} or an existing .csv file "
                         f"with columns width,resolution,top1; got {str(path)!r}")
    out: dict[tuple[float, int], tuple[float, str]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"width", "resolution", "top1"} <= cols:
            raise ValueError(f"{path}: accuracy CSV needs columns width,resolution,top1 (has {', '.join(sorted(cols))})")
        rows = 0
        for n, row in enumerate(reader, 2):
            rows += 1
            if precision is not None and (row.get("precision") or "").strip() not in ("", precision):
                continue
            try:
                out[(float(row["width"]), int(float(row["resolution"])))] = (float(row["top1"]), path.name)
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{n}: width, resolution and top1 must be numbers") from None
    if not rows:
        raise ValueError(f"{path}: accuracy CSV has no rows")
    return out


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other candidate beats on both latency and top-1, fastest first."""
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.top1)):
        if not front or c.top1 > front[-1].top1:
            front.append(c)
    return front


@functools.lru_cache(maxsize=64)
def _cost(width: float, resolution: int) -> Any:
    """Mult-Adds and params of one config (counted once per process: counting builds the model)."""
    return cost(MobileNetConfig(width_multiplier=width, resolution=resolution))


def _key(width: float, resolution: int) -> tuple[float, int]:
    return (round(float(width), 6), int(resolution))


def _measured_from_csv(bench_csv: str | os.PathLike, runtime: str | None, precision: str,
                       notes: list[str]) -> tuple[dict[tuple[tuple[float, int], str], BenchResult], str]:
    """``{((α, ρ), precision): the fastest row}`` from a bench CSV (filtered by runtime and, unless
    ``precision`` is ``"auto"``, by precision), and a label naming what was read."""
    rows = read_results(bench_csv)
    if runtime is not None:
        rows = [r for r in rows if r.runtime == runtime]
        if not rows:
            raise ValueError(f"{bench_csv}: no rows for runtime {runtime}")
    if precision != "auto":
        rows = [r for r in rows if r.precision == precision]
        if not rows:
            raise ValueError(f"{bench_csv}: no {precision} rows" + (f" for runtime {runtime}" if runtime else ""))
    paths = sorted({f"{r.runtime} {r.precision}" for r in rows})
    label = ", ".join(paths) + f" (from {Path(bench_csv).name})"
    best: dict[tuple[tuple[float, int], str], BenchResult] = {}
    for r in rows:
        k = (_key(r.width, r.resolution), r.precision)
        if k not in best or r.median_ms < best[k].median_ms:
            best[k] = r
    machines = sorted({r.machine for r in rows if r.machine})
    if len(machines) > 1:
        notes.append("the bench CSV mixes machines: " + "; ".join(machines))
    elif machines:
        notes.append(f"latencies measured on {machines[0]}")
    else:
        notes.append("the bench CSV does not say which CPU measured it (written before bench recorded the CPU)")
    return best, label


def _unsupported(runtime: str, precision: str, device: str) -> str | None:
    """Why ``runtime`` cannot time ``precision`` on ``device`` (None when it can)."""
    if device == "cuda" and runtime != EAGER_RUNTIME:
        return f"--device cuda is measured with the torch runtime (got {runtime})"
    if precision == "int8" and device == "cuda":
        return "int8 on CUDA is not supported"
    fmt = format_of_runtime(runtime)
    if precision == "int8" and fmt is not None and not fmt.int8:
        return f"{runtime} has no int8 export"
    if precision == "bf16" and fmt is not None and not fmt.bf16:
        return f"{runtime} has no bf16 CPU path"
    return None


def _plan(precision: str, runtime: str | None, device: str, notes: list[str],
          skipped: dict[str, str]) -> dict[str, str]:
    """``{precision: runtime}`` to measure: ``precision``, or for ``"auto"`` fp32, int8 and bf16 where
    this CPU accelerates it, each in ``runtime`` or else the fastest runtime for it on this machine."""
    wanted = [precision] if precision != "auto" else ["fp32", "int8", "bf16"]
    plan: dict[str, str] = {}
    for p in wanted:
        if p == "bf16" and device == "cpu" and not cpu.cpu_features().bf16:
            if precision != "auto":
                check_precision(p, device)  # the one-line refusal
            skipped[p] = "not accelerated on this CPU (no AVX512_BF16 or AMX): not considered, not timed as fp32"
            continue
        rt = runtime or default_runtime(device, p)
        why = _unsupported(rt, p, device)
        if why is not None:
            if precision != "auto":
                raise ValueError(why)
            skipped[p] = f"not considered: {why}"
            continue
        plan[p] = rt
    if runtime is None and device == "cpu":
        probed = [p for p in plan if probed_runtime(p) is not None]
        if probed:
            notes.append("runtime per precision: the fastest in this machine's probe (`mobilenets bench --probe`)"
                         + ("" if len(probed) == len(plan) else
                            f"; {', '.join(p for p in plan if p not in probed)}: the fixed fallback order"))
        else:
            notes.append("runtime per precision: the fixed fallback order (this machine has no probe: probing was "
                         "impossible or turned off; `mobilenets bench --probe` measures which runtime is fastest here)")
    return plan


def _bench_measure(device: str, threads: int | None, batch: int, iters: int, warmup: int) -> Measure:
    def measure(width: float, resolution: int, runtime: str, precision: str) -> BenchResult:
        (res,) = benchmark([width], [resolution], runtime=runtime, precision=precision, device=device,
                           threads=threads, batch=batch, warmup=warmup, iters=iters, progress=False, show_cpu=False)
        return res
    return measure


def _covers(big: tuple[float, int], small: tuple[float, int]) -> bool:
    """``big`` is at least as wide and has at least as large an input as ``small``."""
    return big[0] >= small[0] and big[1] >= small[1]


def select(max_latency_ms: float, *, max_params: float | None = None, max_mult_adds: float | None = None,
           accuracy: str | os.PathLike | None = None, runtime: str | None = None, precision: str = "auto",
           device: str = "cpu", threads: int | None = None, batch: int = 1,
           bench_csv: str | os.PathLike | None = None, widths: Sequence[float] | None = None,
           resolutions: Sequence[int] | None = None, iters: int = 30, warmup: int = 5,
           progress: bool = True, measure: Measure | None = None, prune_margin: float | None = PRUNE_MARGIN,
           out: str | os.PathLike | None = None) -> Selection:
    """The most accurate (α, ρ, precision) whose median latency is ≤ ``max_latency_ms``.

    Latencies come from ``bench_csv`` (a :func:`mobilenets.deploy.benchmark` CSV; every precision
    in it, or only ``precision``) or are measured now, one model at a time, for the configs with a
    known accuracy that pass the params / Mult-Adds limits. ``precision``: ``"auto"`` (fp32, int8,
    and bf16 where the CPU accelerates it) or one of them; ``runtime``: one runtime for every
    precision, else each precision's fastest on this machine. ``accuracy``: a source for every
    precision, or (``None``) TF-slim's float table for fp32 / bf16 and its 8-bit table for int8;
    a float table given for int8 is replaced by the 8-bit one (said in the notes).

    Early stop: models are timed cheapest first (by Mult-Adds) and, for each precision, a model
    that takes more than ``prune_margin`` × the budget rules out every model of that precision at
    least as wide *and* with at least as large an input, without timing it. The assumption: such
    a model runs the same 28 layers with at least as many channels and pixels in each, so it is no
    faster (the margin absorbs timing noise). Latency is *not* assumed to grow with Mult-Adds across
    widths: per-layer overhead dominates the thin models (0.25-224 has fewer Mult-Adds than 0.5-128
    and can be slower), so Mult-Adds only set the order. An impossible budget thus times one model
    per precision. ``prune_margin=None`` times every candidate.

    ``measure(width, resolution, runtime, precision)`` replaces the timing (median and p90 ms, or a
    :class:`BenchResult`); by default each model is exported and timed with :func:`benchmark`.
    One progress bar counts the models (``progress``). ``out``: a folder for :func:`write_selection`,
    checked before anything is measured.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISION_CHOICES)}")
    for name, value in (("max_latency_ms", max_latency_ms), ("max_params", max_params),
                        ("max_mult_adds", max_mult_adds)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if prune_margin is not None and (isinstance(prune_margin, bool) or not isinstance(prune_margin, (int, float))
                                     or not prune_margin >= 1):
        raise ValueError(f"prune_margin must be a number ≥ 1 (or None: time every model), got {prune_margin!r}")
    if out is not None:
        check_out_dir(out)  # before anything is measured
    notes: list[str] = []
    skipped: dict[str, str] = {}
    rows: dict[tuple[tuple[float, int], str], BenchResult] = {}
    if bench_csv is not None:
        rows, runtime_label = _measured_from_csv(bench_csv, runtime, precision, notes)
        considered = sorted({p for _, p in rows}, key=PRECISION_CHOICES.index)
        plan: dict[str, str] = {}
    else:
        if runtime is None and device == "cpu":
            check_settings(EAGER_RUNTIME, "fp32", device, batch, threads)  # bad settings: refused before probing
            if precision != "auto":
                check_precision(precision, device)
            ensure_probe(threads=threads or 2, progress=progress)  # each precision's default: this machine's fastest
        plan = _plan(precision, runtime, device, notes, skipped)
        considered = list(plan)
        runtime_label = ", ".join(f"{p} in {runtime_name(rt)}" for p, rt in plan.items()) + ", measured now"

    tables: dict[str, dict[tuple[float, int], tuple[float, str]]] = {}
    for p in considered:
        source = accuracy if accuracy is not None else ("quant" if p == "int8" else "tfslim")
        if p == "int8" and source in ("tfslim", "paper"):
            notes.append(f"int8 candidates use TF-slim's 8-bit table, not the float {source} table")
            source = "quant"
        table, more = accuracy_table(source, p)
        if p == "int8" and source == "quant":
            more.append(INT8_ACCURACY_NOTE)
        if p == "bf16" and source in ACCURACY_SOURCES:
            more.append(BF16_ACCURACY_NOTE)
        for n in more:
            if n not in notes:
                notes.append(n)
        table = {_key(*k): v for k, v in table.items()}
        if widths is not None or resolutions is not None:
            table = {k: v for k, v in table.items()
                     if (widths is None or k[0] in {round(w, 6) for w in widths})
                     and (resolutions is None or k[1] in set(resolutions))}
        if table:
            tables[p] = table
        else:
            skipped[p] = "not considered: no accuracy known for it" + (
                " among the given widths and resolutions" if widths is not None or resolutions is not None else "")
    if not tables:
        raise ValueError("no config with a known accuracy among the given widths and resolutions"
                         if widths is not None or resolutions is not None else "no accuracy known for any candidate")
    considered = [p for p in considered if p in tables]
    configs = sorted({k for t in tables.values() for k in t})

    def static_ok(mult_adds: int, params: int) -> bool:
        return (max_params is None or params <= max_params) and (max_mult_adds is None or mult_adds <= max_mult_adds)

    costs = {k: _cost(*k) for k in configs}
    not_measured: list[dict[str, Any]] = []
    timed = 0
    if bench_csv is not None:
        unknown = sorted({k for k, p in rows if p in tables and k not in tables[p]})
        if unknown:
            notes.append("no accuracy for " + ", ".join(f"{width_label(a)}-{r}" for a, r in unknown) + "; skipped")
        untimed = sorted({k for p in considered for k in tables[p] if (k, p) not in rows})
        if untimed and len(untimed) < len(configs):
            notes.append("not in the bench CSV: " + ", ".join(f"{width_label(a)}-{r}" for a, r in untimed))
    else:
        measure = measure or _bench_measure(device, threads, batch, iters, warmup)
        todo = [k for k in configs if static_ok(costs[k].mult_adds, costs[k].params)] or configs
        order = sorted(todo, key=lambda k: (costs[k].mult_adds, costs[k].params, k))  # cheapest first
        jobs = [(k, p) for k in order for p in considered if k in tables[p]]
        ruled_out: dict[tuple[tuple[float, int], str], tuple[tuple[float, int], float]] = {}
        if progress and device == "cpu":
            print(cpu.cpu_features().summary(), file=sys.stderr, flush=True)
        features = cpu.cpu_features()
        bar = tqdm(total=len(jobs), desc="select: timing", unit="model", disable=not progress, dynamic_ncols=True)
        try:
            for i, (k, p) in enumerate(jobs):  # one model at a time keeps the order of timing irrelevant
                if (k, p) in ruled_out:
                    m, t = ruled_out[(k, p)]
                    not_measured.append({"width": k[0], "resolution": k[1], "precision": p, "runtime": plan[p],
                                         "because": model_label(*m), "because_ms": t})
                    continue
                bar.set_postfix_str(f"{width_label(k[0])}-{k[1]} {p} in {runtime_name(plan[p])}")
                res = measure(k[0], k[1], plan[p], p)
                timed += 1
                if not isinstance(res, BenchResult):
                    median, p90 = (float(v) for v in res)
                    res = BenchResult(
                        width=k[0], resolution=k[1], runtime=plan[p], precision=p, device=device, batch=batch,
                        threads=threads or 0, mult_adds=costs[k].mult_adds, params=costs[k].params,
                        median_ms=median, p90_ms=p90, throughput=1000 * batch / median if median > 0 else math.inf,
                        iters=iters).with_cpu(features)
                rows[(k, p)] = res
                bar.update(1)
                if prune_margin is not None and res.median_ms > prune_margin * max_latency_ms:
                    later = [j for j in jobs[i + 1:] if j[1] == p and j not in ruled_out and _covers(j[0], k)]
                    ruled_out.update((j, (k, res.median_ms)) for j in later)
                    if later:
                        bar.total -= len(later)
                        bar.refresh()
        finally:
            bar.close()
        if not_measured:
            for p in considered:
                mine = [m for m in not_measured if m["precision"] == p]
                if mine:
                    causes = sorted({m["because"] for m in mine})
                    notes.append(
                        f"{p}: {len(mine)} model(s) not timed, assumed over budget: each is at least as wide and has "
                        f"at least as large an input as {' / '.join(causes)}, which took more than "
                        f"{prune_margin:g} × the {max_latency_ms:g} ms budget (the assumption: such a model is no "
                        "faster; prune_margin=None times every model)")

    candidates = [Candidate(k[0], k[1], r.median_ms, r.p90_ms, tables[p][k][0], tables[p][k][1], costs[k].mult_adds,
                            costs[k].params, p, r.runtime)
                  for (k, p), r in sorted(rows.items(), key=lambda kv: (-kv[0][0][0], -kv[0][0][1],
                                                                        PRECISION_CHOICES.index(kv[0][1])))
                  if p in tables and k in tables[p]]
    if not candidates:
        raise ValueError("no candidate has both a latency and an accuracy (check the bench CSV's widths/resolutions)")
    measurements = [rows[(c.width, c.resolution), c.precision] for c in candidates]
    runtimes = plan or {c.precision: c.runtime for c in sorted(candidates, key=lambda c: -c.latency_ms)}
    fastest = min(candidates, key=lambda c: c.latency_ms)
    eligible = [c for c in candidates if static_ok(c.mult_adds, c.params)]
    budget = {"max_latency_ms": float(max_latency_ms), "max_params": max_params, "max_mult_adds": max_mult_adds}
    front = pareto_front(eligible)
    fitting = [c for c in front if c.latency_ms <= max_latency_ms]
    limits = f"≤ {max_latency_ms:g} ms" + (f", ≤ {max_params / 1e6:g} M params" if max_params else "") + \
        (f", ≤ {max_mult_adds / 1e6:g} M Mult-Adds" if max_mult_adds else "")
    chosen = max(fitting, key=lambda c: (c.top1, -c.latency_ms)) if fitting else None
    focus = chosen or (min(eligible, key=lambda c: (c.mult_adds, c.latency_ms)) if eligible else fastest)
    comparison = _comparison(focus, candidates, considered, skipped, not_measured, tables, plan)
    why = _why_precision(chosen, eligible, considered, max_latency_ms)
    common: dict[str, Any] = {"notes": notes, "runtimes": runtimes, "comparison": comparison, "why_precision": why,
                              "not_measured": not_measured, "measurements": measurements, "timed": timed,
                              "where": "on this machine" if bench_csv is None else f"in {Path(bench_csv).name}"}
    if chosen is None:
        why_not = ("no model meets the params / Mult-Adds limits" if not eligible
                   else f"the fastest model within the params / Mult-Adds limits, {front[0].label} {front[0].path}, "
                        f"takes {front[0].latency_ms:.3f} ms")
        reason = (f"no MobileNet fits the budget ({limits}) on {runtime_label}: {why_not}. The fastest model "
                  f"overall is {fastest.label} ({fastest.path}) at {fastest.latency_ms:.3f} ms "
                  f"({fastest.mult_adds / 1e6:.0f} M Mult-Adds, {fastest.params / 1e6:.2f} M params, "
                  f"top-1 {fastest.top1:.1f})")
        selection = Selection(None, front, candidates, fastest, budget, runtime_label, reason, **common)
    else:
        reason = (f"{chosen.label} {chosen.path} (α={width_label(chosen.width)}, ρ={chosen.resolution}): top-1 "
                  f"{chosen.top1:.1f} ({chosen.top1_source}) at {chosen.latency_ms:.3f} ms median, within {limits}")
        better = [c for c in front if c.top1 > chosen.top1]
        if better:
            nxt = min(better, key=lambda c: c.latency_ms)
            reason += (f"; the next more accurate model on the Pareto front, {nxt.label} {nxt.path} "
                       f"(top-1 {nxt.top1:.1f}), takes {nxt.latency_ms:.3f} ms")
        else:
            reason += "; it is the most accurate candidate"
        dominated = [c for c in eligible if c not in front and c.latency_ms <= max_latency_ms]
        if dominated:
            reason += (f"; {len(dominated)} other model(s) within budget are dominated (slower and no more "
                       "accurate than a front member)")
        selection = Selection(chosen, front, candidates, fastest, budget, runtime_label, reason, **common)
    if out is not None:
        write_selection(selection, out)
    return selection


def _comparison(focus: Candidate, candidates: Sequence[Candidate], considered: Sequence[str],
                skipped: dict[str, str], not_measured: Sequence[dict[str, Any]],
                tables: dict[str, dict[tuple[float, int], tuple[float, str]]],
                plan: dict[str, str]) -> list[dict[str, Any]]:
    """Each precision's latency and top-1 for ``focus``'s (α, ρ), or why there is none."""
    k = _key(focus.width, focus.resolution)
    out = []
    for p in considered:
        c = next((c for c in candidates if _key(c.width, c.resolution) == k and c.precision == p), None)
        entry: dict[str, Any] = {"width": k[0], "resolution": k[1], "precision": p,
                                 "runtime": c.runtime if c else plan.get(p, ""), "latency_ms": None,
                                 "top1": tables[p].get(k, (None, ""))[0], "top1_source": tables[p].get(k, (None, ""))[1]}
        if c is not None:
            entry.update(latency_ms=c.latency_ms, status="measured")
        else:
            m = next((m for m in not_measured if _key(m["width"], m["resolution"]) == k and m["precision"] == p), None)
            entry["status"] = (f"in {runtime_name(entry['runtime'])}: not timed, assumed over budget ({m['because']} "
                               f"took {m['because_ms']:.3f} ms)" if m else "not measured")
        out.append(entry)
    for p, why in skipped.items():
        out.append({"width": k[0], "resolution": k[1], "precision": p, "runtime": "", "latency_ms": None,
                    "top1": None, "top1_source": "", "status": why})
    return out


def _why_precision(chosen: Candidate | None, eligible: Sequence[Candidate], considered: Sequence[str],
                   limit: float) -> str:
    """Per precision, the most accurate model within the budget: why the chosen precision won."""
    if len(considered) < 2:
        return ""
    parts = []
    for p in considered:
        fit = [c for c in eligible if c.precision == p and c.latency_ms <= limit]
        if fit:
            b = max(fit, key=lambda c: (c.top1, -c.latency_ms))
            parts.append(f"{b.path}: {b.label}, top-1 {b.top1:.1f} at {b.latency_ms:.3f} ms")
        else:
            parts.append(f"{p}: none within the budget")
    head = "the most accurate within the budget per precision: " + "; ".join(parts)
    return head + (f" → {chosen.precision}" if chosen is not None else "")
