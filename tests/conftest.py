"""Shared fixtures: where the real data lives, and helpers to skip clearly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOBILENETS_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# The tests measure nothing unasked: no automatic runtime probe (the tests of probing turn it on).
os.environ["MOBILENETS_AUTO_PROBE"] = "0"


def need_data(*parts: str) -> Path:
    """The path under ../shared/data, or skip the test saying what is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MOBILENETS_DATA to the shared data folder)")
    return path


@pytest.fixture
def data_dir() -> Path:
    return need_data()


COLORS = [(220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 210, 40)]


def make_image_folder(root: Path, counts: dict[str, int], *, classes: int = 3, size: int = 32,
                      noise: float = 30.0, seed: int = 0) -> Path:
    """An ImageFolder tree ``root/<split>/class<c>/NNN.png`` with ``counts[split]`` images per
    class: one colour per class plus Gaussian noise (learnable, and different every image)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(np.array(COLORS[c % 4]) + rng.normal(0, noise, (size, size, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _no_machine_probe(monkeypatch, tmp_path):
    """Each test sees no runtime probe of this machine unless it makes one: a developer's
    `mobilenets bench --probe` must not change which runtime the tests' defaults pick."""
    import mobilenets.deploy.probe as probe

    path = tmp_path / "mobilenets-probe.json"
    monkeypatch.setattr(probe, "probe_path", lambda: path)
