"""The ``mobilenets`` command: a thin layer over the library API.

Every subcommand parses its options into a :class:`~mobilenets.config.MobileNetConfig`
(or a file path) and calls the library. Bad input exits with status 2 and one line on
stderr saying what is wrong and what is allowed; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable, Sequence

from ..config import (
    ACTIVATIONS,
    MIN_RESOLUTION,
    OUTPUT_STRIDES,
    VARIANTS,
    MobileNetConfig,
)

PROG = "mobilenets"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage dump) and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ----------------------------------------------------------------------------- option types

def width_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; the width multiplier α must be a number > 0, e.g. 0.75") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"width multiplier α must be a number > 0 (e.g. 1.0, 0.75, 0.5, 0.25), got {text}")
    return value


def resolution_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer; the resolution is the input size in pixels, "
            f"at least {MIN_RESOLUTION}, e.g. 224") from None
    if value < MIN_RESOLUTION:
        raise argparse.ArgumentTypeError(
            f"resolution must be at least {MIN_RESOLUTION} pixels (e.g. 224, 192, 160, 128), got {text}")
    return value


def count_type(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {what} must be an integer ≥ {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be an integer ≥ {minimum}, got {text}")
        return value
    return parse


def float_type(what: str, *, minimum: float = 0.0, inclusive: bool = False,
               below: float | None = None) -> Callable[[str], float]:
    """A float option in a range: ``> minimum`` (or ``≥`` when ``inclusive``), and ``< below`` if given."""
    rule = f"{'≥' if inclusive else '>'} {minimum:g}" + (f" and < {below:g}" if below is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; {what} must be a number {rule}") from None
        ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
        if not ok or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"{what} must be a number {rule}, got {text}")
        return value
    return parse


def add_model_options(p: argparse.ArgumentParser, *, with_classes: bool = True) -> None:
    """The options that define a MobileNet, shared by every subcommand that builds one."""
    g = p.add_argument_group("model (the paper's two knobs: α thins every layer, ρ shrinks the input)")
    g.add_argument("--model", metavar="NAME", help="a named official config, e.g. mobilenet_v1_050_160 "
                   "(see `mobilenets list-models`); --width/--resolution override it")
    g.add_argument("--width", "--alpha", dest="width", type=width_type, metavar="A",
                   help="width multiplier α > 0: every layer keeps α × its channels (cost ~α²); default 1.0")
    g.add_argument("--resolution", type=resolution_type, metavar="R",
                   help=f"input resolution ρ in pixels (≥ {MIN_RESOLUTION}; cost ~R²); default 224")
    g.add_argument("--variant", choices=VARIANTS, help="separable: MobileNet (default); conv: every "
                   "depthwise separable block as a full 3×3 conv (Table 4); shallow: without the five "
                   "14×14×512 blocks (Table 5)")
    if with_classes:
        g.add_argument("--num-classes", type=count_type(0, "--num-classes"), metavar="N",
                       help="classifier outputs (0: no classifier); default 1000")
    g.add_argument("--activation", choices=ACTIVATIONS, help="relu (the paper, default) or relu6")
    g.add_argument("--tf-padding", action="store_true", default=None,
                   help="TensorFlow 'SAME' padding, as TF-trained weights need")
    g.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES,
                   help="32 (default), or 16 / 8: dilate the last layers instead of striding")


def config_from_args(args: argparse.Namespace) -> MobileNetConfig:
    """Build the one config object from the parsed model options."""
    from ..models import get_config

    base = get_config(args.model) if getattr(args, "model", None) else MobileNetConfig()
    changes: dict[str, Any] = {}
    for arg, field_name in (("width", "width_multiplier"), ("resolution", "resolution"),
                            ("variant", "variant"), ("num_classes", "num_classes"),
                            ("activation", "activation"), ("tf_padding", "tf_padding"),
                            ("output_stride", "output_stride")):
        value = getattr(args, arg, None)
        if value is not None:
            changes[field_name] = value
    return base.replace(**changes) if changes else base


# ----------------------------------------------------------------------------- subcommands

def cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import cost
    from ..models import MobileNetV1

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
    from ..analysis import format_rows, reproduce

    rows = reproduce()
    if args.json:
        print(json.dumps(rows))
    else:
        print(format_rows(rows))
    return 0


def cmd_list_models(args: argparse.Namespace) -> int:
    from ..analysis import cost
    from ..models import OFFICIAL_MODELS

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


def _load_weights(path: str, args: argparse.Namespace):
    from ..weights import load_pretrained

    return load_pretrained(path, resolution=getattr(args, "resolution", None))


def cmd_predict(args: argparse.Namespace) -> int:
    from ..inference import Classifier

    classifier = Classifier(_load_weights(args.weights, args))
    status = 0
    for pred in classifier.predict(args.images, top_k=args.top, batch_size=args.batch_size):
        if pred.error is not None:
            print(f"{PROG}: error: {pred.error}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(pred.to_dict()), flush=True)
        else:
            print(pred.image)
            for t in pred.top:
                print(f"  {t['prob']:7.4f}  {t['label']} ({t['index']})")
    return status


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..inference import Classifier, evaluate_imagenet_folder

    if args.weights:
        weights, data = args.weights, args.target
    else:
        weights, data = args.target, args.data
    if not weights or not data:
        raise UsageError("give the data folder and --weights FILE, or a run directory / weights file and --data PATH")
    model = _load_weights(weights, args)
    if args.device:
        model = model.to(args.device)
    if (getattr(model, "pretrained_info", None) or {}).get("class_names"):
        # A model trained with `mobilenets train`: its own classes and preprocessing.
        from ..inference import evaluate_dataset

        # "val" means val/, validation/ or test/, whichever the data has.
        result = evaluate_dataset(model, data, split=args.split or "val", batch_size=args.batch_size,
                                  progress=not args.no_progress)
    else:
        result = evaluate_imagenet_folder(Classifier(model), data, batch_size=args.batch_size,
                                          progress=not args.no_progress)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['images']} images"
              + (f"  ({result['unlabelled']} without an ImageNet class skipped)" if result.get("unlabelled") else "")
              + (f"  ({result['unreadable']} unreadable skipped)" if result.get("unreadable") else "")
              + (f"  ({result['skipped']} unreadable skipped)" if result.get("skipped") else ""))
    return 0


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="MobileNet V1 (Howard et al., 2017): build any member of the family, count its exact "
                    "cost, and reproduce the paper's tables. α (--width) is the width multiplier that thins "
                    "every layer; ρ (--resolution) the input size.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

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

    p = sub.add_parser("predict", help="classify images with a weights file",
                       description="Top-K labels with probabilities for each image (a directory means every "
                                   "image in it), preprocessed exactly as the weights' reference does.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories")
    p.add_argument("--weights", required=True, metavar="FILE", help="TFLite, Keras .h5, .pt/.pth or "
                   ".safetensors file, or a training run directory")
    p.add_argument("--top", type=count_type(1, "--top"), default=5, metavar="K", help="how many classes (default 5)")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"image", "top": [{"index", "label", "prob"}]}')
    p.add_argument("--resolution", type=resolution_type, metavar="R", help="input size (default: the file's)")
    p.add_argument("--batch-size", type=count_type(1, "--batch-size"), default=16, metavar="B")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="top-1 / top-5 accuracy on an image folder",
                       description="Top-1 and top-5 on an ImageNet-style folder (class subfolders named by "
                                   "WordNet id, or files named <wnid>_*.JPEG). Either `evaluate DIR --weights "
                                   "FILE` or `evaluate RUN_DIR_or_WEIGHTS --data DIR`.")
    p.add_argument("target", nargs="?", metavar="DIR_or_WEIGHTS")
    p.add_argument("--weights", metavar="FILE", help="weights file (then the positional argument is the data folder)")
    p.add_argument("--data", metavar="PATH", help="data folder (then the positional argument is the weights or run dir)")
    p.add_argument("--resolution", type=resolution_type, metavar="R", help="input size (default: the file's)")
    p.add_argument("--batch-size", type=count_type(1, "--batch-size"), default=32, metavar="B")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--split", choices=("val", "test", "train"), default=None,
                   help="for a model trained with `mobilenets train`: which split of --data (default: val/, else test/)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.set_defaults(func=cmd_evaluate)

    from .deploy import add_parsers as add_deploy_parsers
    from .train import add_parsers as add_train_parsers

    add_train_parsers(sub)
    add_deploy_parsers(sub)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse and run a subcommand; bad input becomes one line on stderr and exit status 2."""
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
