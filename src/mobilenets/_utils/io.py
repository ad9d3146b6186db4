"""Writing files so that nothing half-written is ever left under the final name, and saying in
the user's terms which path could not be written, and why."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "check_writable", "make_dirs", "os_error_message"]

# The temporary names this package writes under: ``.NAME.XXXXXXXX`` (a folder) or ``.NAME.XXXXXXXX.tmp``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}(?:\.tmp)?$")


def _user_path(path: Path) -> Path:
    """The path the user named for a temporary one (``dir/.m.onnx.k2j4h1x9/m.onnx`` → ``dir/m.onnx``)."""
    for ancestor in (path, *path.parents):
        m = _TEMP_NAME.match(ancestor.name)
        if m:
            return ancestor.parent / m["name"]
    return path


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (the current folder at worst)."""
    for ancestor in (path, *path.parents):
        if os.path.lexists(ancestor):
            return ancestor
    return Path(".")


def _blocker(path: Path) -> Path | None:
    """The nearest parent of ``path`` that exists but is not a folder (it blocks the path), if any."""
    for ancestor in path.parents:
        if os.path.lexists(ancestor):
            return None if ancestor.is_dir() else ancestor
    return None


def os_error_message(e: OSError, path: str | os.PathLike | None = None, *, writing: bool = False) -> str:
    """One line for an ``OSError``: the path as the user gave it (never a temporary name) and the
    reason in plain words, e.g. ``out/m.onnx: cannot be written: out is a file, not a folder``.
    ``path``: the path meant (default: the error's own); ``writing``: the error came from writing it."""
    if e.errno is None:
        return str(e)  # already a sentence (e.g. from check_writable)
    target = _user_path(Path(path if path is not None else e.filename)) if (path or e.filename) else None
    verb = "cannot be written" if writing else "cannot be used"
    code = e.errno
    if code in (errno.ENOTDIR, errno.EEXIST) and target is not None and (_blocker(target) or target.exists()):
        blocker = _blocker(target) or target
        reason = f"{verb}: {blocker} is a file, not a folder"
    elif code in (errno.EACCES, errno.EPERM):
        where = _existing_ancestor(target if target is not None and target.is_dir() else
                                   (target.parent if target is not None else Path(".")))
        reason = f"{verb}: permission denied (no permission to {'write in' if writing else 'use'} {where})"
    elif code == errno.EROFS:
        reason = f"{verb}: the file system is read-only"
    elif code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason = f"{verb}: no space left on the device"
    elif code == errno.EISDIR:
        reason = "is a folder; give a file name"
    elif code == errno.ENOENT:
        reason = "no such file or folder"
    elif code == errno.ENAMETOOLONG:
        reason = "the name is too long for the file system"
    else:
        reason = f"{verb} ({(e.strerror or str(e)).lower()})"
    return f"{target}: {reason}" if target is not None else reason[0].upper() + reason[1:]


def _reraise(e: OSError, path: str | os.PathLike) -> OSError:
    """The same kind of error, its message in the user's terms (naming ``path``)."""
    return type(e)(os_error_message(e, path, writing=True))


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Raise (one line, naming ``path``) when ``path`` could not be created or written: a parent
    that is a file, a folder where a file is meant (or the reverse), a folder without write
    permission. Checked before long work, so that the work is not lost at the end."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: is a file; give a folder (it is created if missing)")
    if not folder and path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    blocker = _blocker(path)
    if blocker is not None:
        raise NotADirectoryError(f"{path}: cannot be written: {blocker} is a file, not a folder")
    where = path if folder and path.is_dir() else _existing_ancestor(path.parent)
    if where.is_dir() and not os.access(where, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: cannot be written: permission denied (no permission to write in {where})")


def make_dirs(path: str | os.PathLike) -> list[Path]:
    """``mkdir -p path``; returns the folders it created (outermost first), so that a failed
    write can remove them again. Errors name ``path`` in the user's terms."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _reraise(e, path) from None
    return missing


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file via a temporary name in the same folder and rename it into place, so a
    crash or interruption never leaves a half-written file where a good one was. An
    ``OSError`` names ``path`` (not the temporary name) and says why in plain words."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _reraise(e, path) from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files owner-only; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise _reraise(e, path) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
