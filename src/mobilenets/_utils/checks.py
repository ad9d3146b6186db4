"""One validator per rule, each raising ``ValueError`` with one line that says what is wrong and
what would be right. The config, the trainer, the exporters and the CLI's option types all use
these, so a rule and its message exist once."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["MIN_RESOLUTION", "is_int", "check_width", "check_resolution", "check_int", "check_choice",
           "check_number"]

MIN_RESOLUTION = 32  # five stride-2 layers: a smaller input would vanish before the last block


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` in Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_width(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"width multiplier α must be a number > 0 (e.g. 1.0, 0.75, 0.5, 0.25), got {value!r}")
    return float(value)


def check_resolution(value: Any, minimum: int = MIN_RESOLUTION) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"resolution must be an integer of at least {minimum} pixels "
                         f"(e.g. 224, 192, 160, 128), got {value!r}")
    return int(value)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = False,
                 below: float | None = None) -> float:
    """A finite number ``> minimum`` (``≥`` when ``inclusive``) and ``< below`` if given."""
    rule = f"{'≥' if inclusive else '>'} {minimum:g}" + (f" and < {below:g}" if below is not None else "")
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value >= minimum if inclusive else value > minimum) and (below is None or value < below))
    if not ok:
        raise ValueError(f"{name} must be a number {rule}, got {value!r}")
    return float(value)


def check_choice(value: Any, allowed: Sequence[str], what: str) -> Any:
    """``value`` if it is one of ``allowed`` (``None`` passes: "the default")."""
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
    return value
