"""The paper's resource tables (Tables 2–9, the rows about MobileNets), recomputed.

Each :class:`PaperRow` holds what the paper prints, as the paper prints it (the number of
decimals is the precision we must match), and a function that builds the model or layer
the row describes so :func:`mobilenets.analysis.cost` can count it. :func:`reproduce` returns
our count beside the paper's for every row. Where the paper's figure is not what an exact
count gives, the row carries an ``erratum``: what the exact count prints at the paper's
precision and why (a typo, or the paper's ρ² scaling of the 224 figure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable

import torch
from torch import nn

from ..config import MobileNetConfig
from ..layers import DepthwiseSeparable
from .cost import PAPER_LAYER_TYPES, CostReport, cost

__all__ = ["PaperRow", "PAPER_ROWS", "reproduce", "format_rows", "round_like"]


def _model(width: float = 1.0, resolution: int = 224, variant: str = "separable") -> CostReport:
    config = MobileNetConfig(width_multiplier=width, resolution=resolution, variant=variant)
    return cost(config)


def _layer(module_fn: Callable[[], nn.Module], channels: int, size: int) -> CostReport:
    with torch.device("meta"):
        module = module_fn()
    return cost(module, size, in_chans=channels)


def _detector(kind: str, size: int) -> tuple[float, float]:
    """Table 13: billions of Mult-Adds (body, extra layers, predictors; Faster R-CNN's box head on
    its 300 proposals) and millions of parameters (all of them: the paper counts the detector's)."""
    from ..models.detection import faster_rcnn_mobilenet_v1, ssd_mobilenet_v1  # torchvision's detection: slow import

    with torch.device("meta"):
        model = ssd_mobilenet_v1(1.0, resolution=size) if kind == "ssd" else faster_rcnn_mobilenet_v1(1.0, min_size=size)
    report = cost(model, size)
    return report.mult_adds / 1e9, report.params / 1e6


def _millions(report: CostReport) -> tuple[float, float]:
    return report.mult_adds / 1e6, report.paper_params / 1e6


def _share(layer_type: str) -> Callable[[], tuple[float, float]]:
    def compute() -> tuple[float, float]:
        report = _model()
        kinds = report.by_type()
        entry = kinds[layer_type]
        return (100.0 * entry["mult_adds"] / report.mult_adds,
                100.0 * entry["params"] / report.paper_params)
    return compute


@dataclass(frozen=True)
class PaperRow:
    """One row of one of the paper's tables."""

    table: int
    model: str
    mult_adds: str | None  # as printed; Million Mult-Adds, or % for Table 2
    params: str | None  # as printed; Million parameters, or % for Table 2
    compute: Callable[[], tuple[float, float]] = field(repr=False, compare=False)
    top1: float | None = None
    unit: str = "M"
    erratum: dict[str, str] = field(default_factory=dict)  # quantity -> explanation
    corrected: dict[str, str] = field(default_factory=dict)  # quantity -> what an exact count prints


_RHO_NOTE = ("the paper scales the 224 count by ρ² ({base}·({r}/224)² = {scaled:.1f}); the exact "
             "count is {exact:.1f} because the FC layer does not shrink with ρ (TF-slim's table prints {tfslim})")

PAPER_ROWS: list[PaperRow] = [
    # Table 2: resource per layer type, 1.0 MobileNet-224.
    PaperRow(2, "Conv 1 × 1", "94.86", "74.59", _share("conv 1x1"), unit="%"),
    PaperRow(2, "Conv DW 3 × 3", "3.06", "1.06", _share("conv dw 3x3"), unit="%"),
    PaperRow(2, "Conv 3 × 3", "1.19", "0.02", _share("conv 3x3"), unit="%",
             erratum={"mult_adds": "typo for 1.91: the four shares must sum to 100%"},
             corrected={"mult_adds": "1.91"}),
    PaperRow(2, "Fully Connected", "0.18", "24.33", _share("fc"), unit="%"),
    # Table 3: one 14×14×512 layer (D_K = 3, M = N = 512, D_F = 14), weights only.
    PaperRow(3, "Convolution", "462", "2.36",
             lambda: _millions(_layer(lambda: nn.Conv2d(512, 512, 3, padding=1, bias=False), 512, 14))),
    PaperRow(3, "Depthwise Separable Conv", "52.3", "0.27",
             lambda: _millions(_layer(lambda: DepthwiseSeparable(512, 512), 512, 14))),
    PaperRow(3, "α = 0.75", "29.6", "0.15",
             lambda: _millions(_layer(lambda: DepthwiseSeparable(384, 384), 384, 14))),
    PaperRow(3, "ρ = 0.714", "15.1", "0.15",
             lambda: _millions(_layer(lambda: DepthwiseSeparable(384, 384), 384, 10))),
    # Table 4: depthwise separable vs full convolutions.
    PaperRow(4, "Conv MobileNet", "4866", "29.3", lambda: _millions(_model(variant="conv")), top1=71.7,
             erratum={"mult_adds": "the paper's 4866 is our count without the FC layer (4866.3); "
                                   "with the FC layer, counted in every other row, it is 4867.3"},
             corrected={"mult_adds": "4867"}),
    PaperRow(4, "MobileNet", "569", "4.2", lambda: _millions(_model()), top1=70.6),
    # Table 5: narrow vs shallow at similar cost.
    PaperRow(5, "0.75 MobileNet", "325", "2.6", lambda: _millions(_model(0.75)), top1=68.4),
    PaperRow(5, "Shallow MobileNet", "307", "2.9", lambda: _millions(_model(variant="shallow")), top1=65.3),
    # Table 6: width multiplier.
    PaperRow(6, "1.0 MobileNet-224", "569", "4.2", lambda: _millions(_model(1.0)), top1=70.6),
    PaperRow(6, "0.75 MobileNet-224", "325", "2.6", lambda: _millions(_model(0.75)), top1=68.4),
    PaperRow(6, "0.5 MobileNet-224", "149", "1.3", lambda: _millions(_model(0.5)), top1=63.7),
    PaperRow(6, "0.25 MobileNet-224", "41", "0.5", lambda: _millions(_model(0.25)), top1=50.6),
    # Table 7: resolution multiplier.
    PaperRow(7, "1.0 MobileNet-224", "569", "4.2", lambda: _millions(_model(1.0, 224)), top1=70.6),
    PaperRow(7, "1.0 MobileNet-192", "418", "4.2", lambda: _millions(_model(1.0, 192)), top1=69.1),
    PaperRow(7, "1.0 MobileNet-160", "290", "4.2", lambda: _millions(_model(1.0, 160)), top1=67.2,
             erratum={"mult_adds": _RHO_NOTE.format(base=569, r=160, scaled=569 * (160 / 224) ** 2,
                                                    exact=290.675, tfslim=291)},
             corrected={"mult_adds": "291"}),
    PaperRow(7, "1.0 MobileNet-128", "186", "4.2", lambda: _millions(_model(1.0, 128)), top1=64.4),
    # Table 8: the MobileNet row.
    PaperRow(8, "1.0 MobileNet-224", "569", "4.2", lambda: _millions(_model(1.0, 224)), top1=70.6),
    # Table 9: the MobileNet row.
    PaperRow(9, "0.50 MobileNet-160", "76", "1.32", lambda: _millions(_model(0.5, 160)), top1=60.2,
             erratum={"mult_adds": _RHO_NOTE.format(base=149.5, r=160, scaled=149.497 * (160 / 224) ** 2,
                                                    exact=76.525, tfslim=77)},
             corrected={"mult_adds": "77"}),
    # Table 13: COCO detection (Mult-Adds in billions; the top-1 column holds the paper's COCO mAP).
    PaperRow(13, "SSD300 MobileNet", "1.2", "6.8", lambda: _detector("ssd", 300), top1=19.3, unit="B"),
    PaperRow(13, "Faster-RCNN 300 MobileNet", "25.2", "6.1", lambda: _detector("faster_rcnn", 300), top1=16.4,
             unit="B"),
    PaperRow(13, "Faster-RCNN 600 MobileNet", "30.5", "6.1", lambda: _detector("faster_rcnn", 600), top1=19.8,
             unit="B"),
]


def round_like(value: float, printed: str) -> str:
    """``value`` rounded half-up to as many decimals as ``printed`` shows."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    quantum = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def reproduce() -> list[dict[str, Any]]:
    """Every row: the paper's value, ours, the difference, and whether they agree."""
    cache: dict[int, tuple[float, float]] = {}
    rows = []
    for row in PAPER_ROWS:
        key = id(row.compute)
        if key not in cache:
            cache[key] = row.compute()
        ours_ma, ours_p = cache[key]
        out: dict[str, Any] = {"table": row.table, "model": row.model, "unit": row.unit}
        status = "match"
        notes = []
        for quantity, printed, ours in (("mult_adds", row.mult_adds, ours_ma), ("params", row.params, ours_p)):
            ours_printed = round_like(ours, printed)
            out[f"paper_{quantity}"] = float(printed)
            out[f"ours_{quantity}"] = round(ours, 4)
            out[f"{quantity}_diff"] = round(ours - float(printed), 4)
            out[f"ours_{quantity}_printed"] = ours_printed
            if ours_printed != printed:
                expected = row.corrected.get(quantity)
                status = "erratum" if expected == ours_printed else "MISMATCH"
                notes.append(f"{quantity.replace('_', '-')}: {row.erratum.get(quantity, 'no explanation')}")
        out["paper_top1"] = row.top1
        out["status"] = status
        out["note"] = "; ".join(notes)
        rows.append(out)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The reproduction as a plain-text table, notes below."""
    head = (f"{'table':>5}  {'model':<26} {'unit':>4}  {'Mult-Adds paper':>15} {'ours':>9} {'diff':>7}"
            f"  {'params paper':>12} {'ours':>7} {'diff':>7}  {'top-1':>5}  status")
    lines = [head, "-" * len(head)]
    footnotes = []
    for r in rows:
        top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-"
        mark = r["status"]
        if r["note"]:
            footnotes.append(r["note"])
            mark += f" [{len(footnotes)}]"
        lines.append(
            f"{r['table']:>5}  {r['model']:<26} {r['unit']:>4}  {r['paper_mult_adds']:>15g} "
            f"{r['ours_mult_adds']:>9.2f} {r['mult_adds_diff']:>+7.2f}  {r['paper_params']:>12g} "
            f"{r['ours_params']:>7.3f} {r['params_diff']:>+7.3f}  {top1:>5}  {mark}"
        )
    lines.append("")
    lines.append("Mult-Adds and params in millions (Table 2: % of the total; Table 13: billions of Mult-Adds); "
                 "params as the paper counts them (conv and FC weights; Table 13: all of the detector's). top-1: "
                 "the paper's ImageNet figure (Table 13: COCO mAP), for reference.")
    for i, note in enumerate(footnotes, 1):
        lines.append(f"[{i}] {note}")
    return "\n".join(lines)


def paper_layer_name(layer_type: str) -> str:
    return PAPER_LAYER_TYPES.get(layer_type, layer_type)
