"""Deployment: export to every runtime's format (int8 included), verified in that runtime; timing
the family on this machine; choosing the model that fits a latency budget.

The export formats and the runtimes that run them are listed once, in
:data:`mobilenets.deploy.formats.REGISTRY`; :data:`FORMATS`, :data:`INT8_FORMATS` and
:data:`RUNTIMES` (the CLI's choices) are derived from it.
"""

from .bench import (
           PRECISIONS,
           benchmark,
           check_out_dir,
           check_precision,
           default_runtime,
           make_runner,
           time_calls,
)
from .calibration import load_calibration
from .cpu import CpuFeatures, cpu_features, machine_signature
from .detector import DETECTOR_FORMATS, export_detector
from .export import ExportReport, export, verify_export
from .exported import ExportedModel, exported_format, load_exported
from .formats import FORMATS, INT8_FORMATS, REGISTRY, RUNTIMES, Format, format_for_path, get_format
from .results import BenchResult, format_markdown, read_results, write_results
from .runner import Runner
from .runtime import open_runtime, runtime_available
from .selection import (
           ACCURACY_SOURCES,
           Candidate,
           Selection,
           accuracy_table,
           pareto_front,
           select,
)

__all__ = [
    "export_detector",
    "DETECTOR_FORMATS",
           "ACCURACY_SOURCES",
           "FORMATS",
           "INT8_FORMATS",
           "PRECISIONS",
           "REGISTRY",
           "RUNTIMES",
           "BenchResult",
           "Candidate",
           "CpuFeatures",
           "ExportReport",
           "ExportedModel",
           "Format",
           "Runner",
           "Selection",
           "accuracy_table",
           "benchmark",
           "check_out_dir",
           "check_precision",
           "cpu_features",
           "default_runtime",
           "export",
           "exported_format",
           "format_for_path",
           "format_markdown",
           "get_format",
           "load_calibration",
           "load_exported",
           "machine_signature",
           "make_runner",
           "open_runtime",
           "pareto_front",
           "read_results",
           "runtime_available",
           "select",
           "time_calls",
           "verify_export",
           "write_results",
]
