"""The paper's ablations (Tables 4–7), retrained on CIFAR-10 with one recipe.

``run_experiment("table6", data, out)`` trains every model the table compares, each as a
normal run in ``out/<name>/`` (so an interrupted experiment resumes, and a rerun skips the
finished runs; runs shared between tables, like α = 1.0 at 32 px, are trained once), then
writes ``out/<table>.md`` (our CIFAR-10 top-1, Mult-Adds and parameters beside the paper's
ImageNet numbers from :data:`mobilenets.analysis.paper.PAPER_ROWS`), ``out/<table>.csv`` and
``out/<table>.png`` (accuracy against Mult-Adds, log scale, as in the paper's Figures 4 and 5).

All models use the small-input stem (stride 8: a 32-px image ends in a 4×4 map, see
:mod:`mobilenets.train`). Table 7's resolution multipliers are applied to CIFAR's native
32 px exactly as the paper applies them to 224 px: ρ ∈ {1, 6/7, 5/7, 4/7} gives inputs of
32, 27, 23 and 18 px (the images downsampled, antialiased). Downsampling, not upsampling,
because that is what a lower resolution means: less detail for fewer Mult-Adds, which is
the trade-off the table measures.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._utils import atomic_write, width_label
from ..analysis import PAPER_ROWS
from .settings import TrainConfig
from .trainer import train

__all__ = ["ExperimentRun", "TABLES", "run_experiment", "write_reports", "write_table_files"]


@dataclass(frozen=True)
class ExperimentRun:
    """One model of a table: how to build it and which of the paper's rows it stands for."""

    paper_model: str  # the paper's row name in PAPER_ROWS
    width: float = 1.0
    variant: str = "separable"
    input_size: int = 32

    @property
    def name(self) -> str:
        """Run folder name; equal settings give equal names, so tables share runs."""
        return f"{self.variant}-a{self.width:g}-r{self.input_size}"

    @property
    def label(self) -> str:
        prefix = {"separable": "", "conv": "Conv ", "shallow": "Shallow "}[self.variant]
        return f"{width_label(self.width)} {prefix}MobileNet ({self.input_size} px)"

    def tag(self, table: str) -> str:
        """A short name for plots: what the table varies."""
        if table == "table6":
            return f"α={width_label(self.width)}"
        if table == "table7":
            return f"{self.input_size} px"
        return self.paper_model


TABLES: dict[str, tuple[str, tuple[ExperimentRun, ...]]] = {
    "table4": ("Depthwise separable vs full convolution MobileNet", (
        ExperimentRun("Conv MobileNet", variant="conv"),
        ExperimentRun("MobileNet"),
    )),
    "table5": ("Narrow vs shallow MobileNet", (
        ExperimentRun("0.75 MobileNet", width=0.75),
        ExperimentRun("Shallow MobileNet", variant="shallow"),
    )),
    "table6": ("MobileNet width multiplier", (
        ExperimentRun("1.0 MobileNet-224", width=1.0),
        ExperimentRun("0.75 MobileNet-224", width=0.75),
        ExperimentRun("0.5 MobileNet-224", width=0.5),
        ExperimentRun("0.25 MobileNet-224", width=0.25),
    )),
    "table7": ("MobileNet resolution", (
        ExperimentRun("1.0 MobileNet-224", input_size=32),
        ExperimentRun("1.0 MobileNet-192", input_size=27),
        ExperimentRun("1.0 MobileNet-160", input_size=23),
        ExperimentRun("1.0 MobileNet-128", input_size=18),
    )),
}


def _paper_row(table: int, model: str) -> Any:
    for row in PAPER_ROWS:
        if row.table == table and row.model == model:
            return row
    raise KeyError(f"no row {model!r} in the paper's Table {table}")


def run_experiment(table: str, data: str | os.PathLike, out: str | os.PathLike, *, epochs: int | None = None,
                   subset: int | None = None, val_subset: int | None = None, device: str | None = None,
                   batch_size: int | None = None, seed: int = 0, recipe: str = "cifar", progress: bool = True,
                   **options: Any) -> dict[str, Any]:
    """Train the models of ``table`` (``table4`` … ``table7``, or ``all``) and write the reports.

    Extra keyword options go to every run's :class:`~mobilenets.train.TrainConfig` (amp,
    compile, workers, ...). Returns ``{"rows": [...], "files": [...], "status": ...}``; the
    status is ``"interrupted"`` when a run was stopped by a signal (rerun to continue).
    """
    if table == "table13":  # detection on COCO128 (train.table13); "cifar" is the CLI's classification default
        from .table13 import run_table13

        return run_table13(data, out, epochs=epochs, subset=subset, val_subset=val_subset, device=device,
                           batch_size=batch_size, seed=seed, recipe=None if recipe == "cifar" else recipe,
                           progress=progress, **options)
    tables = list(TABLES) if table == "all" else [table]
    for t in tables:
        if t not in TABLES:
            raise ValueError(f"unknown table {t!r}; choose one of: {', '.join(TABLES)}, all")
    out = Path(out)
    results: dict[str, dict[str, Any]] = {}
    all_rows: list[dict[str, Any]] = []
    files: list[str] = []
    for t in tables:
        title, runs = TABLES[t]
        rows = []
        for run in runs:
            if run.name not in results:
                run_dir = out / run.name
                _check_finished_run(run_dir, epochs=epochs, subset=subset, val_subset=val_subset, recipe=recipe,
                                    seed=seed)
                config = TrainConfig(data=data, out=run_dir, width=run.width, variant=run.variant,
                                     input_size=run.input_size, cifar_stem=True, recipe=recipe, epochs=epochs,
                                     batch_size=batch_size, subset=subset, val_subset=val_subset, device=device,
                                     seed=seed, resume=True, progress=progress, **options)
                summary = train(config)
                if summary.get("status") != "finished":
                    return {"status": "interrupted", "rows": all_rows, "files": files, "stopped_at": str(run_dir)}
                results[run.name] = summary
            rows.append(_row(t, run, results[run.name], out / run.name))
        files += write_reports(t, title, rows, out)
        all_rows += rows
    return {"status": "finished", "rows": all_rows, "files": files}


def _check_finished_run(run_dir: Path, **wanted: Any) -> None:
    """A finished run is reused only if it was trained with the options asked for now."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return
    settings = json.loads(path.read_text()).get("settings", {})
    for key, value in wanted.items():
        if value is not None and settings.get(key) != value:
            raise ValueError(f"{run_dir} was trained with {key}={settings.get(key)!r}, not {value!r}; "
                             "use another --out (or the same options) to compare like with like")


def _row(table: str, run: ExperimentRun, summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    paper = _paper_row(int(table.removeprefix("table")), run.paper_model)
    settings = summary.get("settings", {})
    return {
        "table": table, "name": run.name, "model": run.label, "tag": run.tag(table), "paper_model": run.paper_model,
        "width": run.width, "variant": run.variant, "input_size": run.input_size,
        "epochs": summary.get("epochs"), "train_images": settings.get("train_images"),
        "val_images": settings.get("val_images"),
        "val_top1": summary.get("val_top1"), "val_top5": summary.get("val_top5"),
        "best_val_top1": summary.get("best_val_top1"), "mult_adds": summary.get("mult_adds"),
        "params": summary.get("params"), "wall_seconds": summary.get("wall_seconds"),
        "paper_top1": paper.top1, "paper_mult_adds_m": float(paper.mult_adds), "paper_params_m": float(paper.params),
        "run_dir": str(run_dir),
    }


def write_reports(table: str, title: str, rows: list[dict[str, Any]], out: Path) -> list[str]:
    """``<table>.md``, ``<table>.csv`` and ``<table>.png`` in ``out``; returns their paths."""
    return write_table_files(out, table, rows, _markdown(table, title, rows), lambda tmp: _plot(table, title, rows, tmp))


def write_table_files(out: str | os.PathLike, table: str, rows: list[dict[str, Any]], markdown: str,
                      plot: Any) -> list[str]:
    """Every experiment's reports, atomically: ``<table>.md`` (``markdown``), ``<table>.csv`` (the rows)
    and ``<table>.png`` (``plot(path)`` draws it) in ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path, png = out / f"{table}.md", out / f"{table}.csv", out / f"{table}.png"
    atomic_write(md, lambda tmp: Path(tmp).write_text(markdown))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
    atomic_write(png, plot)
    return [str(md), str(csv_path), str(png)]


def _markdown(table: str, title: str, rows: list[dict[str, Any]]) -> str:
    r0 = rows[0]
    n = f"{r0['train_images']:,} training / {r0['val_images']:,} test images" if r0.get("train_images") else ""
    lines = [
        f"# Table {table.removeprefix('table')} on CIFAR-10: {title}",
        "",
        f"Each model trained from scratch with the same recipe for {r0['epochs']} epoch(s) ({n}), small-input "
        "stem (stride 8). Ours: CIFAR-10 test top-1 after the last epoch, exact Mult-Adds and parameters "
        "(BatchNorm included) for 10 classes at the trained input size. Paper: ImageNet top-1, Mult-Adds and "
        "parameters (1000 classes, 224 px scaled by ρ) as printed in Howard et al. (2017).",
        "",
        "| Model | CIFAR-10 top-1 (ours) | Mult-Adds (ours) | Params (ours) | Paper row | ImageNet top-1 (paper) "
        "| Mult-Adds (paper) | Params (paper) |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['val_top1']:.2f}% | {r['mult_adds'] / 1e6:.1f} M "
                     f"| {r['params'] / 1e6:.2f} M | {r['paper_model']} | {r['paper_top1']:.1f}% "
                     f"| {r['paper_mult_adds_m']:g} M | {r['paper_params_m']:g} M |")
    lines.append("")
    return "\n".join(lines)


def _plot(table: str, title: str, rows: list[dict[str, Any]], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    panels = (("ours: CIFAR-10", "mult_adds", 1e6, "val_top1"),
              ("paper: ImageNet", "paper_mult_adds_m", 1.0, "paper_top1"))
    for k, (name, x_key, scale, y_key) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        xs = [r[x_key] / scale for r in rows]
        ys = [r[y_key] for r in rows]
        ax.plot(xs, ys, "o-" if table in ("table6", "table7") else "o", color="C0" if k == 0 else "C1")
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(r.get("tag", r["model"]) if k == 0 else r["paper_model"], (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sorted(set(xs)), [f"{x:.3g}" for x in sorted(set(xs))])
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel("Million Mult-Adds (log scale)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Table {table.removeprefix('table')}: {title} — accuracy vs Mult-Adds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
