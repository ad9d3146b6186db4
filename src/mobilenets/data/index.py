"""Scanning ImageFolder trees and archives read in place into one ordered index of (image, class)."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .archives import (
    _ARCHIVE_ERRORS,
    _check_exists,
    _extracted_path,
    _find_root,
    _no_split,
    _split_names,
    extract_archive,
    find_split,
)
from .preprocess import IMAGE_EXTENSIONS

SMALL_IMAGE_MAX = 64  # images up to this many pixels a side go the tensor path by default



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
