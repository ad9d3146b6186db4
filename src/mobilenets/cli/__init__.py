"""The ``mobilenets`` command: a thin layer over the library API.

``mobilenets COMMAND ...`` (the console script) and ``python -m mobilenets COMMAND ...`` both
call :func:`main`. Each command group is one module with a ``register(subparsers)``:
:mod:`.model` (summary, table, list-models), :mod:`.inference` (predict, evaluate),
:mod:`.detect` (detect),
:mod:`.train` (train, experiment), :mod:`.distill` (distill), :mod:`.deploy` (export, bench, select) and :mod:`.env`; what they share
(the parser class, the option types, the runner) is :mod:`.base`. Bad input exits with status
2 and one line on stderr saying what is wrong and what is allowed; no traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from . import deploy, detect, distill, env, inference, model, train
from .base import PROG, CommandParser, run

__all__ = ["build_parser", "main"]

_GROUPS = (model, inference, detect, train, distill, deploy, env)  # the order of the commands in --help


def build_parser() -> argparse.ArgumentParser:
    """The ``mobilenets`` parser with every command group registered."""
    parser = CommandParser(
        prog=PROG,
        description="MobileNet V1 (Howard et al., 2017): build any member of the family, count its exact "
                    "cost, and reproduce the paper's tables. α (--width) is the width multiplier that thins "
                    "every layer; ρ (--resolution) the input size.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mobilenets ARGV...``; returns the exit status."""
    return run(build_parser(), argv)
