"""The command-line interface: ``mobilenets COMMAND ...``."""

from .main import main

__all__ = ["main"]
