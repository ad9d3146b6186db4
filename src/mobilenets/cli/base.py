"""What every command group shares: the parser class, the option types, the model options,
and the runner that turns bad input into one line on stderr and exit status 2.

The option types parse the text and leave the rule to the library's validators
(:mod:`mobilenets._utils.checks`), so each rule and its message exist once. A command group
(:mod:`.model`, :mod:`.inference`, :mod:`.train`, :mod:`.deploy`) imports this module and the
library, never another command group.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._utils import MIN_RESOLUTION, check_int, check_number, check_resolution, check_width, os_error_message
from ..config import ACTIVATIONS, OUTPUT_STRIDES, VARIANTS, MobileNetConfig
from ..models import get_config

__all__ = [
    "PROG",
    "CommandParser",
    "UsageError",
    "add_command",
    "add_model_options",
    "batch_type",
    "config_from_args",
    "count_type",
    "device_type",
    "error",
    "report_each",
    "warn",
    "float_type",
    "list_type",
    "quantity_type",
    "require_device",
    "resolution_type",
    "run",
    "width_type",
]

PROG = "mobilenets"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class CommandParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage dump) naming the ``--help`` to read.

    A misspelled option is reported against the subcommand it was given to
    (``unrecognized arguments: --x (see 'mobilenets train --help')``), not the top-level parser.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A subcommand's defaults overwrite its parent's: after parsing, this names the innermost parser.
        self.set_defaults(_command_prog=self.prog)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "_command_prog", None) or self.prog
            raise UsageError(f"unrecognized arguments: {' '.join(extras)} (see '{prog} --help')")
        return parsed


# ----------------------------------------------------------------------------- option types

def _checked(text: str, convert: Callable[[str], Any], kind: str, check: Callable[[Any], Any]) -> Any:
    """``check(convert(text))``, the validator's ``ValueError`` as an ``ArgumentTypeError``.

    The validators end their message with ``, got <value>``; that is replaced by the text as
    typed, or, when the text does not even convert, the message becomes
    ``'<text>' is not <kind>; <rule>``.
    """
    try:
        value = convert(text)
    except ValueError:
        value, converted = text, False
    else:
        converted = True
    try:
        return check(value)
    except ValueError as e:
        rule = re.sub(r", got .*$", "", str(e))
        raise argparse.ArgumentTypeError(f"{rule}, got {text}" if converted else f"{text!r} is not {kind}; {rule}") \
            from None


def width_type(text: str) -> float:
    return _checked(text, float, "a number", check_width)


def resolution_type(text: str) -> int:
    def check(value: Any) -> int:
        try:
            return check_resolution(value)
        except ValueError:
            if not isinstance(value, int):
                raise
            # The text is an integer, so the rule the user broke is only the minimum.
            raise ValueError(f"resolution must be at least {MIN_RESOLUTION} pixels "
                             f"(e.g. 224, 192, 160, 128), got {value}") from None
    return _checked(text, int, "an integer", check)


def count_type(minimum: int, what: str) -> Callable[[str], int]:
    """An integer option ``≥ minimum``."""
    def parse(text: str) -> int:
        return _checked(text, int, "an integer", lambda v: check_int(what, v, minimum))
    return parse


def float_type(what: str, *, minimum: float = 0.0, inclusive: bool = False,
               below: float | None = None) -> Callable[[str], float]:
    """A float option in a range: ``> minimum`` (or ``≥`` when ``inclusive``), and ``< below`` if given."""
    def parse(text: str) -> float:
        return _checked(text, float, "a number",
                        lambda v: check_number(what, v, minimum=minimum, inclusive=inclusive, below=below))
    return parse


def batch_type(text: str) -> int | str:
    """``dynamic`` or an integer ≥ 1 (``export --batch``)."""
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch must be 'dynamic' or an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch must be 'dynamic' or an integer ≥ 1, got {text}")
    return value


def list_type(item: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """A comma-separated list, each element parsed by ``item``."""
    def parse(text: str) -> list[Any]:
        parts = [t.strip() for t in text.split(",") if t.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list, got {text!r}")
        return [item(t) for t in parts]
    return parse


def quantity_type(what: str) -> Callable[[str], float]:
    """A positive count with an optional K/M/G suffix: ``4.2M``, ``300000``, ``569e6``."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}

    def parse(text: str) -> float:
        t = text.strip().lower()
        factor = scale.get(t[-1:], 1.0)
        try:
            value = float(t[:-1] if t[-1:] in scale else t) * factor
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a number > 0 (e.g. 4.2M or 4200000), got {text!r}")
        return value
    return parse


def device_type(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; whether that device exists is :func:`require_device`'s question."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from 'cpu', 'cuda', 'cuda:N')")


def require_device(device: str | None) -> None:
    """A one-line :class:`UsageError` when ``device`` names a GPU this machine does not have."""
    if not device or not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


# ----------------------------------------------------------------------------- the model options

def add_model_options(p: argparse.ArgumentParser, *, with_classes: bool = True, alpha_alias: bool = True) -> None:
    """The options that define a MobileNet, shared by every subcommand that builds one (``alpha_alias``:
    ``--alpha`` also names the width; ``distill`` uses ``--alpha`` for the distillation weight)."""
    g = p.add_argument_group("model (the paper's two knobs: α thins every layer, ρ shrinks the input)")
    g.add_argument("--model", metavar="NAME", help="a named official config, e.g. mobilenet_v1_050_160 "
                   "(see `mobilenets list-models`); --width/--resolution override it")
    g.add_argument("--width", *(("--alpha",) if alpha_alias else ()), dest="width", type=width_type, metavar="A",
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


_MODEL_ARGS = (("width", "width_multiplier"), ("resolution", "resolution"), ("variant", "variant"),
               ("num_classes", "num_classes"), ("activation", "activation"), ("tf_padding", "tf_padding"),
               ("output_stride", "output_stride"))


def config_from_args(args: argparse.Namespace) -> MobileNetConfig:
    """Build the one config object from the parsed model options."""
    base = get_config(args.model) if getattr(args, "model", None) else MobileNetConfig()
    changes = {field: getattr(args, arg) for arg, field in _MODEL_ARGS if getattr(args, arg, None) is not None}
    return base.replace(**changes) if changes else base


# ----------------------------------------------------------------------------- running a command

def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` description is ``func``'s docstring and which runs ``func``."""
    import inspect

    p = sub.add_parser(name, help=help, description=inspect.cleandoc(func.__doc__ or help))
    p.set_defaults(func=func)
    return p


def report_each(results: Any, as_json: bool, show: Callable[[Any], None],
                after: Callable[[Any], None] | None = None) -> int:
    """Print each per-image result (``.error``, ``.to_dict()``) as JSON or via ``show``; unreadable
    images get one line on stderr and make the exit status 1, the rest are still reported. A
    result's ``warning`` (e.g. an image far smaller than the model's input) is one line on stderr."""
    import json

    status = 0
    for result in results:
        if result.error is not None:
            error(result.error)
            status = 1
            continue
        if getattr(result, "warning", None):
            warn(result.warning)
        if as_json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            show(result)
        if after is not None:
            after(result)
    return status


def error(message: object) -> None:
    """One line on stderr, ``mobilenets: error: ...``."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def warn(message: object) -> None:
    """One line on stderr, ``mobilenets: warning: ...`` (the command goes on)."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse and run a subcommand; bad input becomes one line on stderr and exit status 2."""
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # (an OSError) the reader of stdout went away, e.g. `| head`
        return 0
    except (UsageError, ValueError) as e:
        error(e)
        return 2
    except OSError as e:  # a path that cannot be read or written: the path as given and why, in words
        error(os_error_message(e))
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
