"""Shared fixtures: where the real data lives, and helpers to skip clearly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOBILENETS_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def need_data(*parts: str) -> Path:
    """The path under ../shared/data, or skip the test saying what is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MOBILENETS_DATA to the shared data folder)")
    return path


@pytest.fixture
def data_dir() -> Path:
    return need_data()
