"""Seeds derived from named parts: independent, reproducible random streams per purpose."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["mix_seed", "seeded_generator"]


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (seed, "epoch", 3, ...): independent streams per purpose."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seeded_generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))
