"""Deployment: export to every runtime's format (int8 included), verified in that runtime; timing
the family on this machine; choosing the model that fits a latency budget."""

from .bench import (
           BenchResult,
           benchmark,
           default_runtime,
           format_markdown,
           make_runner,
           read_results,
           time_calls,
           write_results,
)
from .export import (
           FORMATS,
           INT8_FORMATS,
           ExportReport,
           Runner,
           export,
           format_for_path,
           load_calibration,
           open_runtime,
           verify_export,
)
from .select import (
           ACCURACY_SOURCES,
           Candidate,
           Selection,
           accuracy_table,
           pareto_front,
           select,
)

__all__ = ["export", "ExportReport", "FORMATS", "INT8_FORMATS", "Runner", "open_runtime", "verify_export",
           "load_calibration", "format_for_path", "benchmark", "BenchResult", "default_runtime", "make_runner",
           "time_calls", "read_results", "write_results", "format_markdown", "select", "Selection", "Candidate",
           "accuracy_table", "pareto_front", "ACCURACY_SOURCES"]
