"""``summary``, ``table`` and ``list-models``: a model's exact cost, the paper's tables, the
official configs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..analysis import cost, format_rows, reproduce
from ..models import OFFICIAL_MODELS, MobileNetV1
from .base import add_model_options, config_from_args

__all__ = ["cmd_list_models", "cmd_summary", "cmd_table", "register"]


def cmd_summary(args: argparse.Namespace) -> int:
    import torch


    config = config_from_args(args)
    with torch.device("meta"):
        model = MobileNetV1(config)
    report = cost(model)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"{config.label} (α={config.width_multiplier:g}, ρ={config.resolution}, variant={config.variant}, "
              f"classes={config.num_classes})")
        print(report.format_table(include_bn=not args.no_bn))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    rows = reproduce()
    print(json.dumps(rows) if args.json else format_rows(rows))
    return 0


def cmd_list_models(args: argparse.Namespace) -> int:
    rows = []
    for name, entry in OFFICIAL_MODELS.items():
        report = cost(entry.config)
        rows.append({
            "name": name, "width": entry.width_multiplier, "resolution": entry.resolution,
            "mult_adds": report.mult_adds, "params": report.params,
            "tfslim_macs_m": entry.tfslim_macs_m, "tfslim_params_m": entry.tfslim_params_m,
            "top1": entry.top1, "top5": entry.top5,
            "quant_top1": entry.quant_top1, "quant_top5": entry.quant_top5,
        })
    if args.json:
        print(json.dumps(rows))
        return 0
    head = (f"{'name':<22} {'α':>5} {'ρ':>4}  {'Mult-Adds':>10} {'params':>7}  {'top-1':>5} {'top-5':>5}"
            f"  {'int8 top-1':>10} {'int8 top-5':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:<22} {r['width']:>5g} {r['resolution']:>4}  {r['mult_adds'] / 1e6:>9.1f}M "
              f"{r['params'] / 1e6:>6.2f}M  {r['top1']:>5.1f} {r['top5']:>5.1f}  {r['quant_top1']:>10.1f} "
              f"{r['quant_top5']:>10.1f}")
    print("\nMult-Adds and params: our exact count (1000 classes, BN included in params). "
          "Accuracy: ImageNet val, TF-slim's published table (float and 8-bit quantized checkpoints).")
    return 0


def register(sub: Any) -> None:
    """Add ``summary``, ``table`` and ``list-models`` to the ``mobilenets`` subparsers."""
    p = sub.add_parser("summary", help="per-layer table of Mult-Adds and params for one model",
                       description="Per-layer output shape, Mult-Adds and parameters of one MobileNet, "
                                   "counted by running the real module, and the totals.")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (mult_adds, params, layers)")
    p.add_argument("--no-bn", action="store_true", help="hide BatchNorm rows in the text table")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("table", help="the paper's Tables 2-9 beside our exact counts",
                       description="Every row of the paper's Tables 2-9 that concerns MobileNets: the "
                                   "paper's Mult-Adds and params beside ours and the difference.")
    p.add_argument("--json", action="store_true", help="print a JSON list of row objects")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("list-models", help="the 16 official configs with published accuracy and cost",
                       description="The 16 official MobileNet V1 configurations (α × ρ) with TF-slim's "
                                   "published top-1/top-5 (float and quantized) beside our Mult-Adds and params.")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_list_models)
