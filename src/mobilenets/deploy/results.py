"""Benchmark results: the row type, and its CSV / markdown / PNG forms."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._utils import atomic_write, model_label
from .cpu import CpuFeatures

__all__ = ["CPU_FIELDS", "BenchResult", "format_markdown", "read_results", "write_results"]


@dataclass
class BenchResult:
    """One timed configuration (latencies in milliseconds, throughput in images per second).

    The ``cpu_*`` / feature / ``machine`` fields say which CPU measured it (see
    :mod:`mobilenets.deploy.cpu`); rows read from a CSV written before they existed leave
    them empty (``""``, ``0``, ``None``: unknown).
    """

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
    cpu_vendor: str = ""
    cpu: str = ""  # brand string
    cpu_cores: int = 0
    avx2: bool | None = None
    avx512: bool | None = None
    avx512_vnni: bool | None = None
    avx_vnni: bool | None = None
    avx512_bf16: bool | None = None
    amx: bool | None = None
    machine: str = ""  # mobilenets.deploy.machine_signature() of the machine that measured it

    @property
    def label(self) -> str:
        return model_label(self.width, self.resolution)

    def with_cpu(self, features: CpuFeatures) -> BenchResult:
        """This row, recording ``features`` as the machine that measured it."""
        return dataclasses.replace(
            self, cpu_vendor=features.vendor, cpu=features.brand, cpu_cores=features.cores, avx2=features.avx2,
            avx512=features.avx512, avx512_vnni=features.avx512_vnni, avx_vnni=features.avx_vnni,
            avx512_bf16=features.avx512_bf16, amx=features.amx, machine=features.signature())


_FIELDS = [f.name for f in dataclasses.fields(BenchResult)]
CPU_FIELDS = tuple(_FIELDS[_FIELDS.index("cpu_vendor"):])  # the columns added to say which CPU measured a row
_REQUIRED = ("width", "resolution", "median_ms")


def write_results(results: Sequence[BenchResult], out: str | os.PathLike, *, name: str = "bench"
                  ) -> dict[str, Path]:
    """``bench.csv``, ``bench.md`` and ``bench.png`` (latency vs Mult-Adds) in folder ``out``."""
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


def _parse_bool(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"not a boolean: {text!r}")
    return value


_PARSE: dict[str, Any] = {"str": str, "int": lambda s: int(float(s)), "float": float, "bool": _parse_bool}
_EMPTY: dict[str, Any] = {"str": "", "int": 0, "float": float("nan"), "bool": None}


def read_results(path: str | os.PathLike) -> list[BenchResult]:
    """Rows of a CSV written by :func:`write_results` (e.g. from another machine; older CSVs
    without the CPU columns read with those fields empty)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such bench CSV")
    kinds = {f.name: str(f.type).split("|")[0].strip() for f in dataclasses.fields(BenchResult)}
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in _REQUIRED if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a bench CSV (missing column {missing[0]}; expected {', '.join(_FIELDS)})")
        for n, row in enumerate(reader, 2):
            try:
                values = {k: _EMPTY[kinds[k]] if row.get(k) in (None, "") else _PARSE[kinds[k]](row[k])
                          for k in _FIELDS}
                rows.append(BenchResult(**values))
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{n}: bad row ({e})") from None
    if not rows:
        raise ValueError(f"{path}: bench CSV has no rows")
    return rows


def format_markdown(results: Sequence[BenchResult]) -> str:
    """A markdown table, one row per configuration."""
    lines = [("| α | ρ | Mult-Adds (M) | params (M) | runtime | precision | device | batch | threads "
              "| median ms | p90 ms | images/s |"),
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
    title = (f"MobileNet V1 latency: {first.runtime} {first.precision}, {first.device}, "
             f"batch {first.batch}, {first.threads} threads")
    ax.set_title(title + (f"\n{first.machine}" if first.machine else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="points: ρ", fontsize=8)
    fig.tight_layout()
    with open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
