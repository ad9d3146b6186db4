"""The on-device tensor path: small images decoded once into a uint8 tensor and augmented a batch at a time."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .._utils import atomic_write, seeded_generator
from .archives import _file_key, _writable_cache
from .index import FolderIndex, _archive_tree
from .preprocess import load_image, to_rgb8

_DECODE_CACHE_MIN = 2000  # decoded sets at least this large are cached on disk
_CACHE_VERSION = "1"



@dataclass
class TensorSplit:
    """A split decoded into memory: ``images`` (N, 3, H, W) uint8, ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[str] = field(default_factory=list)  # unreadable files, left out

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def to(self, device: torch.device | str) -> "TensorSplit":
        return TensorSplit(self.images.to(device), self.labels.to(device), self.skipped)


def _decode_bytes(data: bytes) -> Image.Image:
    """As :func:`~mobilenets.data.preprocess.load_image` does for a file."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return to_rgb8(img)


def _decode_one(source: Path | bytes | None, size: tuple[int, int] | None) -> np.ndarray | None:
    try:
        if source is None:
            return None
        img = _decode_bytes(source) if isinstance(source, bytes) else load_image(source)
    except (ValueError, OSError, SyntaxError, Image.DecompressionBombError):
        return None
    if size is not None and img.size != size:
        img = img.resize(size, Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _decode_key(index: FolderIndex) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}\n".encode())
    if index.archive is not None:
        h.update(f"{_file_key(index.archive)}\n".encode())
        for p, y in zip(index.paths, index.labels):
            h.update(f"{p}\0{y}\n".encode())
        return h.hexdigest()[:24]
    h.update(f"{index.root.resolve()}\n".encode())
    for p, y in zip(index.paths, index.labels):
        st = p.stat()
        h.update(f"{p.relative_to(index.root)}\0{y}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cache_file(index: FolderIndex, cache: bool | None) -> Path | None:
    if not (len(index) >= _DECODE_CACHE_MIN if cache is None else cache):
        return None
    return _writable_cache("decoded") / f"{_decode_key(index)}.pt"


def _from_cache(path: Path | None) -> TensorSplit | None:
    if path is None or not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return TensorSplit(obj["images"], obj["labels"], list(obj["skipped"]))
    except Exception:  # a stale or damaged cache file is rebuilt, never trusted
        return None


def _decode_index(index: FolderIndex, content: dict[str, bytes] | None, threads: int | None) -> TensorSplit:
    sources: list[Any] = list(index.paths)
    if index.archive is not None:
        content = content or {}
        sources = [content.get(str(p)) for p in index.paths]
    first = None
    for src in sources[:50]:
        first = _decode_one(src, None)
        if first is not None:
            break
    if first is None:
        raise ValueError(f"{index.root}: none of the first images can be read; is this an image folder?")
    size = (first.shape[1], first.shape[0])
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        arrays = list(pool.map(lambda src: _decode_one(src, size), sources, chunksize=64))
    keep = [i for i, a in enumerate(arrays) if a is not None]
    skipped = [index.describe(i) for i, a in enumerate(arrays) if a is None]
    images = torch.from_numpy(np.stack([arrays[i] for i in keep])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([index.labels[i] for i in keep], dtype=torch.int64)
    return TensorSplit(images, labels, skipped)


def load_tensor_splits(indexes: Sequence[FolderIndex], *, threads: int | None = None,
                       cache: bool | None = None) -> list[TensorSplit]:
    """Decode every image of each index into one uint8 tensor per index (unreadable files
    skipped and listed; images of another size resized to the first one's). Splits read
    from one archive share one pass over it. Sets of ``_DECODE_CACHE_MIN`` images or more are
    cached in the cache folder, keyed by file names, sizes and times (or the archive's hash),
    so the next run loads them in a second."""

    files = [_cache_file(ix, cache) for ix in indexes]
    out: list[TensorSplit | None] = [_from_cache(f) for f in files]
    wanted: dict[Path, list[str]] = {}
    for ix, got in zip(indexes, out):
        if got is None and ix.archive is not None:
            wanted.setdefault(ix.archive, []).extend(str(p) for p in ix.paths)
    content = {a: _archive_tree(a).read(names) for a, names in wanted.items()}
    result = []
    for ix, got, f in zip(indexes, out, files):
        if got is None:
            got = _decode_index(ix, content.get(ix.archive) if ix.archive is not None else None, threads)
            if f is not None:
                payload = {"images": got.images, "labels": got.labels, "skipped": got.skipped}
                atomic_write(f, lambda tmp, payload=payload: torch.save(payload, tmp))
        result.append(got)
    return result


def load_tensor_split(index: FolderIndex, *, threads: int | None = None, cache: bool | None = None) -> TensorSplit:
    """One split as a uint8 tensor; see :func:`load_tensor_splits`."""
    return load_tensor_splits([index], threads=threads, cache=cache)[0]


@dataclass
class AugmentParams:
    """Random choices for one global batch: crop offsets, flips, cutout centres."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    cy: torch.Tensor | None = None
    cx: torch.Tensor | None = None

    def slice(self, start: int, stop: int) -> "AugmentParams":
        def s(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]
        return AugmentParams(self.dy[start:stop], self.dx[start:stop], self.flip[start:stop],
                             s(self.cy), s(self.cx))

    def to(self, device: torch.device) -> "AugmentParams":
        def m(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)
        return AugmentParams(m(self.dy), m(self.dx), m(self.flip), m(self.cy), m(self.cx))


def augment_params(batch: int, size: int, pad: int, cutout: int, *, seed: int, epoch: int,
                   step: int, flip: bool = True) -> AugmentParams:
    """The augmentation of one global step, a pure function of (seed, epoch, step); each
    process takes its slice, so 1 process and N processes see identical inputs."""
    g = seeded_generator(seed, "augment", epoch, step)
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=g)
    flips = torch.rand(batch, generator=g) < 0.5 if flip else torch.zeros(batch, dtype=torch.bool)
    cy = cx = None
    if cutout > 0:
        cy = torch.randint(0, size, (batch,), generator=g)
        cx = torch.randint(0, size, (batch,), generator=g)
    return AugmentParams(dy, dx, flips, cy, cx)


def crop_flip(images: torch.Tensor, params: AugmentParams, pad: int) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a uint8 batch, as one gather
    on the batch's device: the flip is a reversed column index, not a second pass."""
    if pad > 0:
        images = F.pad(images, (pad, pad, pad, pad))
    b, c, hp, wp = images.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    dev = images.device
    rows = params.dy[:, None] + torch.arange(h, device=dev)
    cols = params.dx[:, None] + torch.arange(w, device=dev)
    cols = torch.where(params.flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return images[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def cutout_(x: torch.Tensor, params: AugmentParams, size: int) -> torch.Tensor:
    """Zero a ``size``×``size`` square (clipped at the border) of each normalized image
    (DeVries & Taylor 2017); zero is the dataset mean after normalization."""
    if params.cy is None or size <= 0:
        return x
    h, w = x.shape[-2:]
    dev = x.device
    r = torch.arange(h, device=dev)[None, :]
    c = torch.arange(w, device=dev)[None, :]
    cy, cx = params.cy[:, None], params.cx[:, None]
    in_r = (r >= cy - size // 2) & (r < cy - size // 2 + size)
    in_c = (c >= cx - size // 2) & (c < cx - size // 2 + size)
    mask = in_r[:, :, None] & in_c[:, None, :]
    return x.masked_fill_(mask[:, None], 0.0)


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, size: int | None = None,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 (or [0, 1] float) batch → normalized float32 model input, resized if asked
    (bilinear, antialiased when shrinking)."""
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < x.shape[-1])
    x = x.sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
