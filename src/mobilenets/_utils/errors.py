"""One exception as one short line: the runtimes' and loaders' messages run to pages (C++ stacks,
protobuf dumps), and the package's errors are one line that says what is wrong and what to do."""

from __future__ import annotations

__all__ = ["error_line"]


def error_line(e: BaseException, limit: int = 160, *, with_type: bool = False) -> str:
    """The first non-blank line of ``e``'s message, at most ``limit`` characters; prefixed by the
    exception's type when ``with_type``, and the type alone when the message is empty (an empty
    ``str(e)`` must not turn a one-line error into a traceback)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if with_type or not line:
        line = f"{type(e).__name__}: {line}" if line else type(e).__name__
    return line[:limit]
