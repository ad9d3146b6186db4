"""Small helpers every layer may use: atomic writes, one-line errors, seeded random streams, argument checks, model labels."""

from .checks import MIN_RESOLUTION, check_choice, check_int, check_number, check_resolution, check_width, is_int
from .errors import error_line
from .io import atomic_write, check_writable, make_dirs, os_error_message
from .labels import model_label, width_label
from .seeding import mix_seed, seeded_generator

__all__ = ["atomic_write", "error_line", "check_writable", "make_dirs", "os_error_message", "mix_seed", "seeded_generator", "width_label", "model_label", "MIN_RESOLUTION", "is_int",
           "check_width", "check_resolution", "check_int", "check_number", "check_choice"]
