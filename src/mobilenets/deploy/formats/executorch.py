"""ExecuTorch: a ``torch.export`` program of the BN-folded model lowered to the XNNPACK delegate
(``to_edge_transform_and_lower`` + ``XnnpackPartitioner``), written as a ``.pte`` program and run
by the ExecuTorch runtime's Python bindings (XNNPACK on the CPU). fp32 only, with a static batch
(ExecuTorch plans its memory for fixed shapes).

The ``.pte`` is PyTorch's own on-device format: the same file runs in the ExecuTorch runtime on
Android (``org.pytorch.executorch``) and iOS. ExecuTorch is optional (``pip install executorch``);
importing mobilenets never needs it, and exporting or running a ``.pte`` without it is a one-line
error naming the package.

mobilenets' metadata is stored **inside the file**, as the program's named-data entry
:data:`~.base.METADATA_KEY` (a segment beside the XNNPACK weights, which are named data too; the
runtime reads only the entries a delegate asks for, so it is ignored when running): no sidecar
file. :func:`embed_executorch` adds it by re-serializing the written program with ExecuTorch's
own (de)serializer (``executorch.exir._serialize``: there is no public call that adds named data
to a written program); :func:`read_pte_metadata` reads it back by parsing the file's header and
flatbuffer itself, so reading the metadata needs no ExecuTorch install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import struct
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..._utils import atomic_write
from ..cpu import usable_cores
from ..runner import Runner
from ..support import need, quiet
from .base import METADATA_KEY, Format
from .pt2 import export_program

__all__ = ["FORMAT", "embed_executorch", "open_executorch", "read_pte_metadata", "write_executorch"]

_PACKAGE = "executorch"
# torch logs a deprecation warning from torchao's pytree registrations when ExecuTorch is imported.
_IMPORT_LOGGERS = ("torch.utils._pytree",)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence the runtime's C++ log lines (threadpool creation prints cpuinfo probes to fd 2);
    errors still raise Python exceptions with their messages."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import(module: str, why: str) -> Any:
    """``need(module)`` without ExecuTorch's import-time chatter (log lines; its pybindings warn that
    they are experimental on every import)."""
    loggers = [logging.getLogger(n) for n in _IMPORT_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return need(module, _PACKAGE, why)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_executorch(model: nn.Module, example: torch.Tensor, path: str, batch: int | str) -> None:
    """``model`` exported at ``example``'s shape, lowered to XNNPACK, written as a ``.pte`` program."""
    if batch == "dynamic":
        raise ValueError("executorch exports have a static batch (ExecuTorch plans memory for fixed shapes); "
                         "give --batch N")
    why = "exporting to ExecuTorch (.pte)"
    exir = _import("executorch.exir", why)
    xnnpack = _import("executorch.backends.xnnpack.partition.xnnpack_partitioner", why)
    with quiet():
        lowered = exir.to_edge_transform_and_lower(export_program(model, example, batch),
                                                   partitioner=[xnnpack.XnnpackPartitioner()])
        program = lowered.to_executorch()
        with open(path, "wb") as f:
            program.write_to_file(f)


def _runtime_lib() -> Any:
    """ExecuTorch's runtime extension module, which the public ``portable_lib`` and
    ``executorch.runtime`` re-export name for name. Imported directly: through them, opening a file
    first imports the exporter (``executorch.exir``, about 7 s on 2 cores) for a warning helper."""
    try:
        from executorch.extension.pybindings import _C  # type: ignore[import-not-found]
    except ImportError:  # not installed (a one-line error naming the package), or laid out otherwise
        return _import("executorch.extension.pybindings.portable_lib", "running ExecuTorch (.pte) files")
    if not all(hasattr(_C, name) for name in ("_load_program", "Verification", "_threadpool_get_thread_count",
                                               "_unsafe_reset_threadpool")):
        return _import("executorch.extension.pybindings.portable_lib", "running ExecuTorch (.pte) files")
    return _C


def _set_threads(threads: int | None) -> None:
    """ExecuTorch's XNNPACK threadpool is process-wide: size it as the other runtimes are sized
    (``threads``, default one per CPU this process may use), resetting it only when it differs."""
    portable = _runtime_lib()
    want = threads or usable_cores()
    with _native_stderr_silenced():  # (the first call creates the pool, which logs its CPU probing)
        if portable._threadpool_get_thread_count() != want:
            portable._unsafe_reset_threadpool(want)


def open_executorch(path: str, *, threads: int | None = None, precision: str = "fp32",
                    device: str = "cpu") -> Runner:
    """The ``forward`` method of a ``.pte`` file in the ExecuTorch runtime (XNNPACK, CPU)."""
    if device != "cpu":
        raise ValueError(f"ExecuTorch files run on the CPU here, not {device}")
    lib = _runtime_lib()
    version = getattr(_import("executorch.version", "running ExecuTorch (.pte) files"), "__version__", "")
    _set_threads(threads)
    # what executorch.runtime.Runtime.load_program(path) and Program.load_method do
    program = lib._load_program(path, enable_etdump=False, debug_buffer_size=0,
                                program_verification=lib.Verification.InternalConsistency)
    with _native_stderr_silenced():
        method = program.load_method("forward")
    sizes = tuple(int(d) for d in method.method_meta().input_tensor_meta(0).sizes())
    loaded = (program, method)  # the method runs out of its program's buffers: both stay alive with the runner

    def run(x: np.ndarray) -> np.ndarray:
        out = loaded[1]([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0]
        return np.array(out.numpy(), copy=True)  # the method's planned memory is reused by the next call
    return Runner(f"executorch {version} (XNNPACK)".replace("  ", " "), run, sizes[0] if sizes else None)


def embed_executorch(path: str, text: str) -> None:
    """Store ``text`` as the program's named-data entry METADATA_KEY (the file is re-serialized with
    it, atomically; an entry already there is replaced)."""
    why = "writing ExecuTorch (.pte) metadata"
    program_io = _import("executorch.exir._serialize._program", why)
    store_io = _import("executorch.exir._serialize._named_data_store", why)
    with open(path, "rb") as f:
        pte = program_io.deserialize_pte_binary(f.read())
    store = store_io.NamedDataStore()
    if pte.named_data is not None:
        for key, entry in pte.named_data.pte_data.items():
            if key != METADATA_KEY:
                store.add_named_data(key, pte.named_data.buffers[entry.buffer_index], alignment=entry.alignment,
                                     tensor_layout=entry.tensor_layout)
    store.add_named_data(METADATA_KEY, text.encode(), alignment=1)
    # ExecutorchBackendConfig's defaults (segment_alignment 128 also re-aligns the XNNPACK weights,
    # whose alignment deserialization does not keep: theirs divides 128)
    data = program_io.serialize_pte_binary(dataclasses.replace(pte, named_data=store.get_named_data_store_output()),
                                           extract_delegate_segments=True, segment_alignment=128)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            data.write_to_file(f)
    atomic_write(path, write)


# ----------------------------------------------------------------------------- reading (no ExecuTorch needed)

_EXTENDED_HEADER = b"eh00"  # at byte 8: magic, u32 length, u64 program size, u64 segment base offset, ...
_PROGRAM_SEGMENTS, _PROGRAM_NAMED_DATA = 4, 7  # Program's field numbers (schema/program.fbs)


class _Table:
    """A flatbuffer table in ``buf`` at ``pos`` (just enough to read Program's named data)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + offset if offset else None

    def _target(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def scalar(self, index: int, fmt: str) -> int:
        at = self._field(index)
        return struct.unpack_from(fmt, self.buf, at)[0] if at is not None else 0

    def string(self, index: int) -> bytes | None:
        at = self._field(index)
        if at is None:
            return None
        start = self._target(at)
        n = struct.unpack_from("<I", self.buf, start)[0]
        return self.buf[start + 4:start + 4 + n]

    def tables(self, index: int) -> list[_Table]:
        at = self._field(index)
        if at is None:
            return []
        start = self._target(at)
        n = struct.unpack_from("<I", self.buf, start)[0]
        return [_Table(self.buf, self._target(start + 4 + 4 * i)) for i in range(n)]


def read_pte_metadata(path: str) -> str | None:
    """The named-data entry METADATA_KEY of a ``.pte`` file, or None (none there, or not a .pte)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if len(head) < 32 or head[4:6] != b"ET" or head[8:12] != _EXTENDED_HEADER:
                return None  # no extended header: no segments, so no named data
            program_size, base = struct.unpack_from("<QQ", head, 16)
            f.seek(0)
            buf = f.read(program_size)
            program = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
            segments = program.tables(_PROGRAM_SEGMENTS)
            for entry in program.tables(_PROGRAM_NAMED_DATA):
                if entry.string(0) == METADATA_KEY.encode():
                    segment = segments[entry.scalar(1, "<I")]
                    f.seek(base + segment.scalar(0, "<Q"))
                    return f.read(segment.scalar(1, "<Q")).decode()
    except (OSError, struct.error, IndexError, UnicodeDecodeError):
        return None
    return None


FORMAT = Format(
    name="executorch", suffixes=(".pte",), runtime="executorch", runtime_module="executorch.runtime",
    runtime_package=_PACKAGE, write=write_executorch, open=open_executorch,
    toolchain="torch.export + ExecuTorch to_edge_transform_and_lower (XNNPACK delegate), BN folded, static batch",
    embed=embed_executorch, read_metadata=read_pte_metadata,
)
