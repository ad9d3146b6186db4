"""Where data lives: archives extracted once (atomically) into the cache folder, the split folders below a root."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
VAL_SPLITS = ("val", "validation", "test")



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
