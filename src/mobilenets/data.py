"""Training data: ImageFolder trees and archives of them, as fast as the device allows.

Two input paths, chosen by the size of the images (``loader="auto"``):

* **tensor**: small images (CIFAR-10's 32×32) are decoded once into one ``uint8`` tensor,
  kept on the training device, and augmented there a whole batch at a time (random crop
  with padding, flip, cutout are index arithmetic, not per-image Python). The GPU never
  waits for the CPU, and on a CPU it is also the fastest way to feed a small model.
  Decoded tensors of large sets are cached (``<cache>/decoded/``).
* **folder**: ImageNet-scale trees go through a ``DataLoader`` with worker processes and
  pinned memory; workers decode, crop and resize to ``uint8``, normalization happens on the
  device.

Both are deterministic: the order of an epoch is a pure function of ``(seed, epoch)`` and each
augmentation of ``(seed, epoch, step)`` or ``(seed, epoch, sample)``, whatever the number of
processes or workers, so a run resumed at any step replays exactly what it would have done.

An archive (``.tar.gz``, ``.tar``, ``.zip``) given as the data path is read in place when its
images are small (CIFAR-10: two passes over 19 MB instead of writing 60,000 files); otherwise
it is extracted once, atomically (to a temporary folder, then renamed), into the cache folder
outside the repository: ``$MOBILENETS_CACHE``, else ``$XDG_CACHE_HOME/mobilenets`` or
``~/.cache/mobilenets``. Both ways list and order the images identically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .preprocess import IMAGE_EXTENSIONS, central_crop, load_image, resize_bilinear_legacy

__all__ = [
    "cache_dir", "resolve_data", "open_data", "DataSource", "ArchiveTree", "find_split", "scan_split",
    "balanced_subset", "mix_seed", "epoch_permutation", "FolderIndex", "TensorSplit", "load_tensor_split",
    "load_tensor_splits", "choose_loader", "AugmentParams", "augment_params", "crop_flip", "cutout_", "to_input",
    "FolderDataset", "random_resized_crop_box", "EpochSampler", "ShardSampler", "collate_masked", "skipped_message",
]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
VAL_SPLITS = ("val", "validation", "test")
SMALL_IMAGE_MAX = 64  # images up to this many pixels a side go the tensor path by default
_DECODE_CACHE_MIN = 2000  # decoded sets at least this large are cached on disk
_CACHE_VERSION = "1"


# ----------------------------------------------------------------------------- seeds

def mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (seed, "epoch", 3, ...): independent streams per purpose."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training set in one epoch: a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=_generator(seed, "epoch", epoch))


def balanced_subset(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Indices of a fixed, seeded subset of ``n`` samples with (nearly) equal counts per class.

    Each class gets ``n // classes`` samples, the first ``n % classes`` classes of a seeded
    order one more; a class with too few gives all it has. Indices come back sorted.
    """
    if n <= 0:
        raise ValueError(f"a subset needs at least 1 image, got {n}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    classes = sorted(by_class)
    if n >= len(labels):
        return list(range(len(labels)))
    base, extra = divmod(n, len(classes))
    order = torch.randperm(len(classes), generator=_generator(seed, "subset-classes")).tolist()
    bonus = {classes[i] for i in order[:extra]}
    chosen: list[int] = []
    for c in classes:
        members = by_class[c]
        take = min(len(members), base + (1 if c in bonus else 0))
        perm = torch.randperm(len(members), generator=_generator(seed, "subset", c)).tolist()
        chosen.extend(members[j] for j in perm[:take])
    return sorted(chosen)


# ----------------------------------------------------------------------------- locating data

def cache_dir() -> Path:
    """Where extracted archives and decoded tensors live (never inside the repository)."""
    env = os.environ.get("MOBILENETS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base).expanduser() / "mobilenets"


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _file_key(path: Path) -> str:
    """Content hash for files up to 2 GiB (cheap for CIFAR's 19 MB); size + mtime beyond."""
    st = path.stat()
    if st.st_size <= 2 << 30:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _writable_cache(sub: str) -> Path:
    root = cache_dir() / sub
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the cache folder {root} ({e.strerror}); "
                         "set MOBILENETS_CACHE to a writable folder") from None
    return root


_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error)


def _extracted_path(archive: Path) -> Path:
    return cache_dir() / "datasets" / f"{_archive_stem(archive)}-{_file_key(archive)}"


def extract_archive(archive: Path) -> Path:
    """Extract once into the cache: to a temporary folder, then renamed into place, so an
    interrupted extraction is never mistaken for a finished one. Returns the folder."""
    root = _writable_cache("datasets")
    dest = _extracted_path(archive)
    if dest.is_dir():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                if hasattr(tarfile, "data_filter"):
                    t.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    t.extractall(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a lost race with another process: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except _ARCHIVE_ERRORS as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{archive}: corrupt or truncated archive ({e}); download it again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _find_root(p: Path, given: Path) -> Path:
    for _ in range(3):
        if (p / "train").is_dir():
            return p
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) != 1:
            break
        p = subdirs[0]
    raise ValueError(f"{given}: no train/ folder found; expected PATH/train/<class>/*.jpg and "
                     "PATH/val/<class>/ or PATH/test/<class>/")


def _check_exists(given: Path) -> None:
    if not given.exists():
        raise ValueError(f"{given}: no such file or folder; give an ImageFolder tree (train/ and val/ "
                         "or test/ with one sub-folder per class) or a .tar.gz of one")
    if given.is_file() and not _is_archive(given):
        raise ValueError(f"{given}: not a folder or an archive (.tar.gz, .tar, .zip) of one")


def resolve_data(path: str | os.PathLike) -> Path:
    """The folder holding ``train/`` (and ``val/`` or ``test/``) for a data path: the folder
    itself, a folder with a single sub-folder holding them, or an archive of either (extracted)."""
    given = Path(path).expanduser()
    _check_exists(given)
    return _find_root(extract_archive(given) if given.is_file() else given, given)


def _split_names(split: str) -> tuple[str, ...]:
    return ("train",) if split == "train" else ((split,) if split != "val" else VAL_SPLITS)


def _no_split(root: Any, split: str) -> ValueError:
    wanted = " or ".join(f"{n}/" for n in _split_names(split))
    return ValueError(f"{root}: no {wanted} folder next to train/; the trainer evaluates on it")


def find_split(root: Path, split: str) -> Path:
    """``root/train``, or for ``"val"`` the first of ``val/``, ``validation/``, ``test/``."""
    for name in _split_names(split):
        if (root / name).is_dir():
            return root / name
    raise _no_split(root, split)


# ----------------------------------------------------------------------------- scanning

@dataclass
class FolderIndex:
    """The image files of one split and their class indices. For a split read straight from
    an archive, ``paths`` are member names and ``archive`` is the archive."""

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    archive: Path | None = None
    split: str = ""  # the split folder's name (train, val, test, ...)

    def subset(self, indices: Sequence[int]) -> "FolderIndex":
        return FolderIndex(self.root, [self.paths[i] for i in indices], [self.labels[i] for i in indices],
                           self.class_names, self.archive, self.split)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, i: int) -> str:
        return f"{self.archive}:{self.paths[i]}" if self.archive is not None else str(self.paths[i])


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _walk_key(parts: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """``os.walk`` order with sorted names: a folder's files, then its sub-folders in turn."""
    return tuple((1, p) for p in parts[:-1]) + ((0, parts[-1]),)


def _images_below(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f))
    return out


def _index(where: Any, listing: dict[str, list[Any]], loose: list[str], class_names: Sequence[str] | None,
           root: Path, archive: Path | None = None, split: str = "") -> FolderIndex:
    """One split's index from its class → files listing, with the errors of :func:`scan_split`."""
    classes = sorted(listing)
    if not classes:
        if loose:
            raise ValueError(f"{where}: images must sit in one sub-folder per class "
                             f"({where}/<class>/{loose[0]}), found them directly in the folder")
        raise ValueError(f"{where}: no class folders and no images; expected {where}/<class>/*.jpg")
    if class_names is None:
        index = {c: i for i, c in enumerate(classes)}
    else:
        index = {c: i for i, c in enumerate(class_names)}
        unknown = [c for c in classes if c not in index]
        if unknown:
            raise ValueError(f"{where}: class folder {unknown[0]!r} is not one of the model's "
                             f"{len(index)} classes ({', '.join(list(index)[:5])}, ...); "
                             "the folders must match the training classes")
    paths: list[Any] = []
    labels: list[int] = []
    for c in classes:
        found = listing[c]
        if not found and class_names is None:
            raise ValueError(f"{where}/{c}: class folder has no images (JPEG, PNG, ...); "
                             "add images or remove the folder")
        paths.extend(found)
        labels.extend([index[c]] * len(found))
    if not paths:
        raise ValueError(f"{where}: no images in any class folder (expected JPEG/PNG files in {where}/<class>/)")
    names = list(class_names) if class_names is not None else classes
    return FolderIndex(root, paths, labels, names, archive, split)


def scan_split(folder: Path, class_names: Sequence[str] | None = None) -> FolderIndex:
    """List ``folder/<class>/**/*.jpg``. With ``class_names`` (the training classes), the
    folder's classes must be among them and keep their indices.

    A folder without class sub-folders or images, and a training class without images, are
    errors with a one-line message; so is a class the model does not know.
    """
    folder = Path(folder)
    listing = {d.name: _images_below(d) for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")}
    loose = [f.name for f in folder.iterdir() if f.is_file() and _is_image(f.name)]
    return _index(folder, listing, loose, class_names, folder, split=folder.name)


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


class ArchiveTree:
    """An ImageFolder tree inside a .tar(.gz) or .zip, read without extracting it: listing
    costs one pass over the archive, reading a split (or a subset of it) one more. Splits come
    out in the same order as from the extracted folder, so results do not depend on which
    way the data was read."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.members: dict[str, str] = {}  # normalized name -> name in the archive
        self.dirs: set[str] = set()
        self.probe: dict[str, bytes] = {}  # the first few images, to tell their size
        self._bytes: dict[str, bytes] = {}
        self._kept = 0
        try:
            if archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as z:
                    for info in z.infolist():
                        if info.is_dir():
                            self.dirs.add(_norm(info.filename).rstrip("/"))
                        else:
                            self._add(info.filename, lambda info=info: z.read(info.filename))
            else:
                with tarfile.open(archive) as t:
                    for m in t:
                        if m.isdir():
                            self.dirs.add(_norm(m.name).rstrip("/"))
                        elif m.isfile():
                            self._add(m.name, lambda m=m: t.extractfile(m).read())  # type: ignore[union-attr]
        except _ARCHIVE_ERRORS as e:
            raise ValueError(f"{archive}: corrupt or truncated archive ({e}); download it again") from None
        prefixes = sorted({tuple(p[:i]) for p in map(lambda n: n.split("/"), self.members)
                           for i in range(min(4, len(p) - 2)) if p[i] == "train"}, key=len)
        if not prefixes:
            raise ValueError(f"{archive}: no train/ folder found; expected PATH/train/<class>/*.jpg and "
                             "PATH/val/<class>/ or PATH/test/<class>/ inside the archive")
        self.prefix = "/".join(prefixes[0])

    def _add(self, name: str, read: Any) -> None:
        norm = _norm(name)
        self.members[norm] = name
        if len(self.probe) < 16 and _is_image(norm.rsplit("/", 1)[-1]):
            self.probe[norm] = read()

    def small_images(self) -> bool:
        """Whether the images are small and of one size (then they go the tensor path)."""
        sizes = set()
        for data in self.probe.values():
            try:
                with Image.open(io.BytesIO(data)) as img:
                    sizes.add(img.size)
            except Exception:
                continue
        return len(sizes) == 1 and max(next(iter(sizes))) <= SMALL_IMAGE_MAX

    def index(self, split: str, class_names: Sequence[str] | None = None) -> FolderIndex:
        base = f"{self.prefix}/" if self.prefix else ""
        for name in _split_names(split):
            head = f"{base}{name}/"
            inside = [n[len(head):] for n in self.members if n.startswith(head)]
            if inside:
                break
        else:
            raise _no_split(f"{self.archive}:{self.prefix or '.'}", split)
        listing: dict[str, list[tuple[tuple[tuple[int, str], ...], str]]] = {
            d[len(head):]: [] for d in self.dirs
            if d.startswith(head) and "/" not in d[len(head):] and not d[len(head):].startswith(".")}
        loose = []
        for rel in inside:
            parts = rel.split("/")
            if any(p.startswith(".") for p in parts[:-1]):
                continue
            if len(parts) == 1:
                if _is_image(parts[0]):
                    loose.append(parts[0])
                continue
            files = listing.setdefault(parts[0], [])
            if _is_image(parts[-1]):
                files.append((_walk_key(parts[1:]), head + rel))
        ordered = {c: [n for _, n in sorted(v)] for c, v in listing.items()}
        return _index(f"{self.archive}:{head.rstrip('/')}", ordered, loose, class_names, self.archive, self.archive,
                      split=name)

    def read(self, names: Sequence[str]) -> dict[str, bytes]:
        """The bytes of the given members (one pass over a tar; random access in a zip).
        Bytes read are kept (up to 512 MB), so runs on the same subset do not read again."""
        missing = {self.members[n]: n for n in names if n not in self._bytes}
        got: dict[str, bytes] = {}
        try:
            if missing and self.archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(self.archive) as z:
                    got = {n: z.read(m) for m, n in missing.items()}
            elif missing:
                with tarfile.open(self.archive) as t:
                    for m in t:
                        if m.name in missing:
                            got[missing[m.name]] = t.extractfile(m).read()  # type: ignore[union-attr]
                            if len(got) == len(missing):
                                break
        except _ARCHIVE_ERRORS as e:
            raise ValueError(f"{self.archive}: corrupt or truncated archive ({e}); download it again") from None
        out = {n: self._bytes[n] for n in names if n in self._bytes}
        out.update(got)
        size = sum(map(len, got.values()))
        if self._kept + size <= 512 << 20:
            self._bytes.update(got)
            self._kept += size
        return out


_TREES: dict[tuple[str, int, int], ArchiveTree] = {}


def _archive_tree(archive: Path) -> ArchiveTree:
    """The listing of an archive, made once per process (it costs a pass over the archive)."""
    st = archive.stat()
    key = (str(archive.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _TREES:
        _TREES.clear()
        _TREES[key] = ArchiveTree(archive)
    return _TREES[key]


@dataclass
class DataSource:
    """An ImageFolder tree: a folder on disk, or (small images) read straight from an archive."""

    root: Path
    tree: ArchiveTree | None = None

    def index(self, split: str, class_names: Sequence[str] | None = None) -> FolderIndex:
        if self.tree is not None:
            return self.tree.index(split, class_names)
        return scan_split(find_split(self.root, split), class_names)


def open_data(path: str | os.PathLike, loader: str = "auto") -> DataSource:
    """The data behind a path. An archive of small images (CIFAR-10) is read in place, without
    extracting 60,000 files; one of large images, or with ``loader="folder"``, is extracted
    once into the cache (as is anything already extracted, which gives identical results)."""
    given = Path(path).expanduser()
    _check_exists(given)
    if given.is_file():
        done = _extracted_path(given)
        if loader != "folder" and not done.is_dir():
            tree = _archive_tree(given)
            if loader == "tensor" or tree.small_images():
                return DataSource(given, tree)
        return DataSource(_find_root(extract_archive(given), given))
    return DataSource(_find_root(given, given))


def choose_loader(index: FolderIndex, requested: str = "auto") -> str:
    """``"tensor"`` for small, equal-sized images (decode once, augment on the device),
    ``"folder"`` (DataLoader workers) otherwise."""
    if requested not in ("auto", "tensor", "folder"):
        raise ValueError(f"unknown loader {requested!r}; choose auto, tensor or folder")
    if index.archive is not None:
        if requested == "folder":
            raise ValueError("the folder loader needs the archive extracted; open it with loader='folder'")
        return "tensor"
    if requested != "auto":
        return requested
    n = len(index)
    probe = [index.paths[int(i)] for i in np.linspace(0, n - 1, num=min(n, 16)).round()]
    sizes = set()
    for p in probe:
        try:
            with Image.open(p) as img:
                sizes.add(img.size)
        except Exception:  # unreadable files are reported when decoded
            continue
    if len(sizes) != 1:
        return "folder"
    w, h = sizes.pop()
    fits = n * w * h * 3 <= 8 << 30
    return "tensor" if max(w, h) <= SMALL_IMAGE_MAX and fits else "folder"


# ----------------------------------------------------------------------------- tensor path

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
    """As :func:`~mobilenets.preprocess.load_image` does for a file."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA")
        return img.convert("RGB")


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
    from .weights import atomic_write

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
    g = _generator(seed, "augment", epoch, step)
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


# ----------------------------------------------------------------------------- folder path

class FolderDataset(torch.utils.data.Dataset):
    """Images of a :class:`FolderIndex` for a DataLoader.

    Training keys are ``(index, seed)`` pairs from :class:`EpochSampler`: the random crop and
    flip of a sample are seeded by them, so they do not depend on the worker that runs them.
    Training returns uint8 (3, R, R) (RandomResizedCrop + flip); evaluation returns float
    (3, R, R) in [0, 1] computed as :class:`~mobilenets.predict.Classifier` does (central
    crop, TF's bilinear resize), so the accuracy logged in training is what ``evaluate``
    reports. An unreadable image yields a zero image marked invalid; it is skipped and counted.
    """

    def __init__(self, index: FolderIndex, size: int, *, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                 eval_crop: float = 0.875) -> None:
        self.index = index
        self.size = size
        self.train = train
        self.crop_scale = crop_scale
        self.eval_crop = eval_crop

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, str | None]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        path, label = self.index.paths[i], self.index.labels[i]
        try:
            img = load_image(path)
        except ValueError:
            dtype = torch.uint8 if self.train else torch.float32
            return torch.zeros(3, self.size, self.size, dtype=dtype), label, str(path)
        if self.train:
            from torchvision.transforms.functional import hflip, pil_to_tensor, resized_crop

            g = torch.Generator().manual_seed(seed)  # the sample's own stream, whichever worker runs it
            top, left, h, w = random_resized_crop_box(img.size, self.crop_scale, g)
            img = resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
            if torch.rand(1, generator=g).item() < 0.5:
                img = hflip(img)
            return pil_to_tensor(img), label, None
        array = np.asarray(img)
        if self.eval_crop < 1.0:
            array = central_crop(array, self.eval_crop)
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).to(torch.float32) / 255.0
        return resize_bilinear_legacy(x, self.size, self.size), label, None


def random_resized_crop_box(size: tuple[int, int], scale: tuple[float, float], g: torch.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of an Inception-style random crop (torchvision's
    RandomResizedCrop rule: area fraction in ``scale``, log-uniform aspect ratio in ``ratio``,
    ten tries, then the central crop), drawn from ``g`` instead of the global RNG."""
    width, height = size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=g).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=g).item())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def collate_masked(batch: list[tuple[torch.Tensor, int, str | None]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Stack a batch; ``valid`` marks readable images, failures are listed by path."""
    x = torch.stack([b[0] for b in batch])
    y = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    valid = torch.tensor([b[2] is None for b in batch], dtype=torch.bool)
    return x, y, valid, [b[2] for b in batch if b[2] is not None]


class EpochSampler(torch.utils.data.Sampler):
    """This process's share of each global batch of the epoch's permutation, from a given
    step on, as ``(index, augmentation seed)`` keys. Global batch ``s`` is
    ``perm[s·B : (s+1)·B]``; process ``r`` of ``W`` takes its ``r``-th contiguous slice."""

    def __init__(self, n: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    @property
    def steps(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * (self.global_batch // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch).tolist()
        per = self.global_batch // self.world
        for s in range(self.start_step, self.steps):
            start = s * self.global_batch + self.rank * per
            for i in perm[start:start + per]:
                yield i, mix_seed(self.seed, "sample", self.epoch, i) & 0xFFFFFFFF


class ShardSampler(torch.utils.data.Sampler):
    """Process ``r``'s contiguous share of ``range(n)`` for evaluation (counts are summed)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        per = -(-n // world)
        self.indices = list(range(rank * per, min(n, (rank + 1) * per)))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def skipped_message(paths: Sequence[str], where: str) -> str:
    """One line naming the first unreadable files and the count."""
    head = ", ".join(paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return f"{where}: skipped {len(paths)} unreadable image(s): {head}{more}"
