"""Counting what a model costs (Mult-Adds, params), and the paper's tables recomputed from it."""

from .cost import PAPER_LAYER_TYPES, CostReport, LayerCost, cost, layer_type
from .paper import PAPER_ROWS, PaperRow, format_rows, reproduce, round_like

__all__ = ["cost", "CostReport", "LayerCost", "PAPER_LAYER_TYPES", "layer_type", "PAPER_ROWS", "PaperRow",
           "format_rows", "reproduce", "round_like"]
