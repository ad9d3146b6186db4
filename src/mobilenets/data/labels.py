"""ImageNet class lists, shipped with the package.

``resources/imagenet_classes.tsv`` holds the 1000 ILSVRC-2012 classes in index order (sorted
WordNet ids), each with a short name and its WordNet lemmas (the label text TF-slim uses).
Google's released models have 1001 outputs: index 0 is "background", then the same 1000.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = ["imagenet_wnids", "imagenet_names", "imagenet_lemmas", "labels_for", "wnid_to_index", "coco_category_names"]


@lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, str, str], ...]:
    text = resources.files("mobilenets").joinpath("resources/imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#")]
    assert len(rows) == 1000, "corrupt package data: imagenet_classes.tsv must have 1000 rows"
    return tuple(rows)  # type: ignore[return-value]


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids in class-index order."""
    return [r[0] for r in _table()]


def imagenet_names() -> list[str]:
    """Short class names ("Egyptian cat", "military uniform", ...) in class-index order."""
    return [r[1] for r in _table()]


def imagenet_lemmas() -> list[str]:
    """WordNet lemmas ("tench, Tinca tinca", ...): TF-slim's label text."""
    return [r[2] for r in _table()]


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def labels_for(num_classes: int) -> list[str]:
    """Label text for a classifier's outputs: ImageNet for 1000 / 1001 classes, else ``class N``."""
    if num_classes == 1000:
        return imagenet_names()
    if num_classes == 1001:
        return ["background"] + imagenet_names()
    return [f"class {i}" for i in range(num_classes)]


@lru_cache(maxsize=1)
def _coco() -> tuple[str, ...]:
    text = resources.files("mobilenets").joinpath("resources/coco_categories.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines())


def coco_category_names() -> list[str]:
    """COCO's category names by id: index 0 is "background", ``n/a`` where COCO leaves an id unused (91 entries)."""
    return list(_coco())
