"""Images with or without labels, from several sources: what distillation learns from.

Distillation needs no labels ("training from large and potentially infinite unlabeled
datasets", the paper's §4.5), so a source may be any folder or archive of images:

* an ImageFolder tree (``PATH/train/<class>/``; CIFAR-10's archive): single labels;
* a COCO or YOLO detection folder (COCO128): image-level **multi-labels** (which of COCO's 80
  classes have a box in the image);
* any other folder or archive: every image below it, unlabeled.

:func:`open_images` combines sources (labels are kept only when every source has the same
kind of labels over the same classes). :func:`iter_decoded` decodes them in chunks, each image
once, into one or more square ``uint8`` views (the student's and the teacher's), so a teacher
can be run over a large set without holding its large inputs in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .archives import ARCHIVE_SUFFIXES, _check_exists, _file_key, extract_archive, find_split
from .detection import COCO80_TO_91, open_detection_data
from .index import _archive_tree, _images_below, open_data, scan_split
from .labels import coco_category_names
from .preprocess import central_crop, load_image, resize_bilinear_legacy
from .tensor import _decode_bytes

__all__ = ["ImageSet", "View", "decode_views", "iter_decoded", "open_images"]


@dataclass
class ImageSet:
    """Image references (files, or members of an archive read in place) and their labels, if any.

    ``labels``: (N,) class indices into ``class_names`` (ImageFolder sources), ``multilabels``:
    (N, C) 0/1 (detection sources: COCO's 80 classes), both None for unlabeled images.
    ``keys`` identify each image's content (path, size, time; or the archive's hash and member).
    """

    paths: list[Path | str]
    archives: list[Path | None]
    keys: list[str]
    class_names: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    multilabels: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def label_kind(self) -> str:
        """"single", "multi" or "none"."""
        return "single" if self.labels is not None else "multi" if self.multilabels is not None else "none"

    def describe(self, i: int) -> str:
        a = self.archives[i]
        return f"{a}:{self.paths[i]}" if a is not None else str(self.paths[i])

    def subset(self, indices: Sequence[int]) -> ImageSet:
        idx = list(indices)
        return ImageSet([self.paths[i] for i in idx], [self.archives[i] for i in idx], [self.keys[i] for i in idx],
                        list(self.class_names), None if self.labels is None else self.labels[idx],
                        None if self.multilabels is None else self.multilabels[idx], list(self.sources))


def _file_keys(paths: Sequence[Path]) -> list[str]:
    out = []
    for p in paths:
        st = p.stat()
        out.append(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}")
    return out


def _is_detection(root: Path) -> bool:
    for p in (root, *(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))):
        if (p / "annotations").is_dir() or ((p / "images").is_dir() and (p / "labels").is_dir()):
            return True
    return False


def _plain(folder: Path) -> ImageSet:
    files = _images_below(folder)
    return ImageSet(list(files), [None] * len(files), _file_keys(files), sources=[str(folder)])


def _open_one(path: str | os.PathLike, split: str, required: bool) -> ImageSet | None:
    """One source's images of ``split`` ("train": all images of a source without splits; "val":
    None when the source has no val/test split and ``required`` is False)."""
    given = Path(path).expanduser()
    _check_exists(given)
    root = given
    if given.is_file():
        if not given.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"{given}: not an image folder or an archive (.tar.gz, .tar, .zip) of images")
        try:
            source = open_data(given)
        except ValueError:
            source = None  # no ImageFolder inside: extract it and take every image
        if source is not None and source.tree is not None:
            index = source.tree.index(split) if required or split == "train" else _maybe(source.tree.index, split)
            if index is None:
                return None
            key = _file_key(given)
            names = [str(p) for p in index.paths]
            return ImageSet(names, [given] * len(names), [f"{key}\0{n}" for n in names], list(index.class_names),
                            np.asarray(index.labels, np.int64), sources=[str(given)])
        root = source.root if source is not None else extract_archive(given)
    if root.is_dir() and _is_detection(root):
        try:
            det = open_detection_data(root, split)
        except ValueError:
            if split == "train" or required:
                raise
            return None
        names = [coco_category_names()[c] for c in COCO80_TO_91]  # the 80 classes, in YOLO order
        index80 = {cat: i for i, cat in enumerate(COCO80_TO_91)}
        multi = np.zeros((len(det), len(names)), np.float32)
        for i, s in enumerate(det.samples):
            for cat in s.labels.tolist():
                multi[i, index80[int(cat)]] = 1.0
        files = [s.path for s in det.samples]
        return ImageSet(files, [None] * len(files), _file_keys(files), names, multilabels=multi, sources=[str(given)])
    try:
        folder = find_split(root, split)
    except ValueError:
        if split != "train":
            if required:
                raise
            return None
        folder = root
    try:
        index = scan_split(folder)
    except ValueError:
        found = _plain(folder)
        if not len(found):
            raise ValueError(f"{given}: no images (JPEG, PNG, ...) found in it") from None
        return found
    return ImageSet(list(index.paths), [None] * len(index), _file_keys(index.paths), list(index.class_names),
                    np.asarray(index.labels, np.int64), sources=[str(given)])


def _maybe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError:
        return None


def open_images(paths: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train", *,
                required: bool = True) -> ImageSet | None:
    """The images of ``split`` of every source in ``paths``, in order. Labels survive only when all
    sources carry the same kind over the same classes; otherwise the set is unlabeled."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [s for s in (_open_one(p, split, required) for p in paths) if s is not None]
    if not parts:
        return None
    kinds = {(s.label_kind, tuple(s.class_names)) for s in parts}
    keep = len(kinds) == 1
    out = ImageSet([p for s in parts for p in s.paths], [a for s in parts for a in s.archives],
                   [k for s in parts for k in s.keys], list(parts[0].class_names) if keep else [],
                   sources=[x for s in parts for x in s.sources])
    if keep and parts[0].labels is not None:
        out.labels = np.concatenate([s.labels for s in parts])  # type: ignore[misc]
    if keep and parts[0].multilabels is not None:
        out.multilabels = np.concatenate([s.multilabels for s in parts])  # type: ignore[misc]
    if not len(out):
        raise ValueError(f"{', '.join(map(str, paths))}: no images (JPEG, PNG, ...) found")
    return out


@dataclass(frozen=True)
class View:
    """How one consumer sees an image: a square of ``size`` px after a central crop of ``crop`` of
    each side; ``resize``: "tf_legacy_bilinear" (TF-slim's arithmetic, as Google's files were
    evaluated) or "bilinear" (PIL, antialiased)."""

    size: int
    crop: float = 1.0
    resize: str = "bilinear"


def _view(img: Image.Image, v: View) -> np.ndarray:
    array = np.asarray(img)
    if v.crop < 1.0:
        array = central_crop(array, v.crop)
    if v.resize == "tf_legacy_bilinear":
        chw = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float()
        out = resize_bilinear_legacy(chw, v.size, v.size).round().clamp(0, 255).to(torch.uint8)
        return out.permute(1, 2, 0).numpy()
    im = Image.fromarray(array) if v.crop < 1.0 else img
    if im.size != (v.size, v.size):
        im = im.resize((v.size, v.size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _read(images: ImageSet, lo: int, hi: int) -> list[Any]:
    """The sources of images ``lo:hi``: a path, or an archive member's bytes."""
    out: list[Any] = list(images.paths[lo:hi])
    wanted: dict[Path, list[int]] = {}
    for i in range(lo, hi):
        a = images.archives[i]
        if a is not None:
            wanted.setdefault(a, []).append(i)
    for a, idx in wanted.items():
        content = _archive_tree(a).read([str(images.paths[i]) for i in idx])
        for i in idx:
            out[i - lo] = content.get(str(images.paths[i]))
    return out


def _decode(src: Any, views: Sequence[View]) -> list[np.ndarray] | None:
    try:
        if src is None:
            return None
        img = _decode_bytes(src) if isinstance(src, bytes) else load_image(src)
        return [_view(img, v) for v in views]
    except (ValueError, OSError, SyntaxError, Image.DecompressionBombError):
        return None


def iter_decoded(images: ImageSet, views: Sequence[View], *, chunk: int = 256, threads: int | None = None,
                 start: int = 0) -> Iterator[tuple[int, list[torch.Tensor], torch.Tensor]]:
    """Per chunk of images from ``start``: ``(first index, [uint8 (n, 3, S, S) per view], readable mask (n,))``;
    unreadable images are zeros with the mask False."""
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for lo in range(start, len(images), chunk):
            hi = min(len(images), lo + chunk)
            decoded = list(pool.map(lambda s: _decode(s, views), _read(images, lo, hi)))
            ok = torch.tensor([d is not None for d in decoded], dtype=torch.bool)
            tensors = []
            for j, v in enumerate(views):
                arr = np.zeros((hi - lo, v.size, v.size, 3), np.uint8)
                for k, d in enumerate(decoded):
                    if d is not None:
                        arr[k] = d[j]
                tensors.append(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous())
            yield lo, tensors, ok


def decode_views(images: ImageSet, views: Sequence[View], **kw: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every image in every view at once (see :func:`iter_decoded`)."""
    parts = list(iter_decoded(images, views, **kw))
    if not parts:
        return [torch.zeros((0, 3, v.size, v.size), dtype=torch.uint8) for v in views], torch.zeros(0, dtype=torch.bool)
    return [torch.cat([p[1][j] for p in parts]) for j in range(len(views))], torch.cat([p[2] for p in parts])


def content_key(images: ImageSet) -> str:
    """One hash of every image's key, in order."""
    h = hashlib.sha256()
    for k in images.keys:
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()[:24]
