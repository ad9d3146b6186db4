"""Measure this machine instead of assuming it: a short probe times every installed runtime at
every precision the CPU accelerates on one small model (α=0.5, 128 px, batch 1, interleaved), and
caches the result per machine signature in ``<cache>/probe/`` (``$MOBILENETS_CACHE``, else
``$XDG_CACHE_HOME/mobilenets``). ``default_runtime`` and ``mobilenets env`` read it; ``mobilenets
bench --probe`` measures again. ``benchmark`` and ``select`` probe first (:func:`ensure_probe`) when
they are to pick the runtime of a machine that has none; the fixed order in :mod:`.bench` is only the
fallback where probing is impossible (no exporting runtime installed, an unwritable cache) or turned
off (``MOBILENETS_AUTO_PROBE=0``, which the test suite sets).

Nearly all of a first probe is the exporters' own start-up (ExecuTorch's lowering alone takes about
15 s in a fresh process; the timing itself about 2 s), so the probe keeps the small files it
exported in ``<cache>/probe/files/<key>/``, keyed by the machine, the toolchain versions and
mobilenets' own code: a re-probe re-measures the same files in seconds, and any change of CPU,
runtime, exporter or export code exports afresh. Each file is moved into place only when written
whole, so an interrupted probe leaves nothing half-written to reuse."""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .._utils import atomic_write
from ..config import MobileNetConfig
from ..data import cache_dir
from ..models import MobileNetV1
from . import cpu
from .formats import EAGER_RUNTIME, RUNTIMES, format_of_runtime

__all__ = ["AUTO_PROBE_ENV", "PROBE_CONFIG", "ensure_probe", "load_probe", "precisions_to_probe", "probe_files_dir", "probe_path", "probed_runtime",
           "run_probe"]

PROBE_CONFIG = MobileNetConfig(width_multiplier=0.5, resolution=128)
AUTO_PROBE_ENV = "MOBILENETS_AUTO_PROBE"  # "0": never probe unasked (the fixed order stays the fallback)
_VERSION = 1
# What the probe's files depend on besides the CPU and mobilenets' code: the exporters and runtimes.
_TOOLCHAIN = ("torch", "numpy", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "openvino", "nncf", "ai-edge-litert",
              "executorch", "torchao")
_STALE_STAGING_S = 3600  # a staging folder this old is an interrupted probe's, not one in progress


def probe_path() -> Path:
    sig = cpu.machine_signature()
    return cache_dir() / "probe" / f"{hashlib.sha256(sig.encode()).hexdigest()[:16]}.json"


def _toolchain_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in _TOOLCHAIN:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _code_digest() -> str:
    """A digest of mobilenets' source: the probe's files are re-exported when the export code changes."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def probe_files_dir() -> Path:
    """Where this machine's probe keeps its exported files, for these toolchain versions and this code."""
    key = json.dumps({"version": _VERSION, "machine": cpu.machine_signature(), "config": PROBE_CONFIG.label,
                      "toolchain": _toolchain_versions(), "code": _code_digest()}, sort_keys=True)
    return cache_dir() / "probe" / "files" / hashlib.sha256(key.encode()).hexdigest()[:16]


def load_probe() -> dict[str, Any] | None:
    """The cached probe of this machine, or None (none yet, or made on another machine)."""
    path = probe_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != _VERSION or data.get("machine") != cpu.machine_signature():
        return None
    # A runtime installed, removed or upgraded since: its timing no longer describes this machine.
    if data.get("toolchain") != _toolchain_versions() or data.get("pairs") != [list(p) for p in _pairs()]:
        return None
    return data


def precisions_to_probe() -> list[str]:
    """fp32 and int8 always; bf16 only where the CPU accelerates it (AVX512_BF16 or AMX)."""
    return ["fp32", "int8"] + (["bf16"] if cpu.cpu_features().bf16 else [])


def _pairs() -> list[tuple[str, str]]:
    from .bench import runtime_available  # bench's default_runtime reads this module

    def exports(runtime: str, precision: str) -> bool:  # the runtime's format can be written at this precision
        fmt = format_of_runtime(runtime)
        return fmt is not None and (precision == "fp32" or (precision == "int8" and fmt.int8)
                                    or (precision == "bf16" and fmt.bf16))

    return [(runtime, precision) for precision in precisions_to_probe() for runtime in RUNTIMES
            if runtime != EAGER_RUNTIME and runtime_available(runtime) and exports(runtime, precision)]


def _probe_model() -> MobileNetV1:
    """The probe's model, the same on every call (seeded), so a kept file matches a fresh export."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MobileNetV1(PROBE_CONFIG).eval()


def _prune(files: Path) -> None:
    """Remove the files of earlier toolchains / code (kept: this key's, and probes in progress; an
    interrupted probe's staging folder goes once it is an hour old)."""
    now = time.time()
    for entry in files.parent.iterdir():
        if entry == files:
            continue
        if entry.name.startswith(".partial-"):
            try:
                if now - entry.stat().st_mtime < _STALE_STAGING_S:
                    continue
            except OSError:
                continue
        shutil.rmtree(entry, ignore_errors=True)


def _time_interleaved(runners: list[Any], keys: list[tuple[str, str]], samples: dict[tuple[str, str], list[float]],
                      rounds: int, block: int) -> None:
    for fn in runners:
        for _ in range(5):
            fn()
    for _ in range(rounds):  # interleaved in turns, so a busy spell hits every runtime alike
        for key, fn in zip(keys, runners):
            for _ in range(3):  # untimed: the previous runtime's threads may still be spinning
                fn()
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            samples[key].append((time.perf_counter() - t0) / block)


def _open(runtime: str, precision: str, threads: int, workdir: Path, reuse: bool) -> Any:
    from .bench import make_runner  # bench's default_runtime reads this module

    return make_runner(PROBE_CONFIG, runtime, precision=precision, threads=threads, workdir=workdir,
                       model=_probe_model(), reuse=reuse)


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")[:200]


def run_probe(*, threads: int = 2, rounds: int = 8, block: int = 20, progress: bool = False) -> dict[str, Any]:
    """Time each installed runtime × precision and cache the medians (and the files: see the module).

    A runtime that fails here (to export, to open, or to run) is left out of the probe and its reason
    recorded under ``"failed"``: one broken runtime must not stop ``bench`` and ``select`` picking
    among the others."""
    start = time.perf_counter()
    files = probe_files_dir()
    files.mkdir(parents=True, exist_ok=True)
    runners, keys, fresh, failed = [], [], [], []
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=files.parent, ignore_cleanup_errors=True) as staging:
        bar = tqdm(_pairs(), desc="probe", unit="runtime", disable=not progress, leave=False)
        for runtime, precision in bar:
            kept = files / f"{runtime}-{precision}"
            reuse = kept.is_dir()
            bar.set_postfix_str(f"{runtime} {precision}" + ("" if reuse else ": exporting"))
            fn = None
            if reuse:
                try:
                    fn = _open(runtime, precision, threads, kept, reuse=True)
                except Exception:  # a kept file that no longer opens (damaged, or a runtime's change the key missed)
                    shutil.rmtree(kept, ignore_errors=True)
                    reuse = False
            if fn is None:
                workdir = Path(staging) / kept.name
                workdir.mkdir(exist_ok=True)
                try:
                    fn = _open(runtime, precision, threads, workdir, reuse=False)
                except Exception as e:  # cannot export or open this precision here: leave it out, say why
                    failed.append({"runtime": runtime, "precision": precision, "error": _why(e)})
                    continue
            runners.append(fn)
            keys.append((runtime, precision))
            if not reuse:
                fresh.append((Path(staging) / kept.name, f"{runtime} {precision}"))
        bar.close()
        runners, keys = _warm(runners, keys, failed)
        samples: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        _time_interleaved(runners, keys, samples, rounds, block)
        del runners
        gc.collect()  # close the sessions before their files move
        for workdir, name in fresh:  # whole files only: a folder moves into place in one step
            if tuple(name.split()) not in samples:
                continue
            try:
                os.replace(workdir, files / workdir.name)
            except OSError:  # (kept by a concurrent probe, or a filesystem that refuses): export next time
                pass
    _prune(files)
    results = [{"runtime": r, "precision": p, "median_ms": 1000 * statistics.median(samples[(r, p)])}
               for r, p in keys]
    data = {"version": _VERSION, "machine": cpu.machine_signature(), "cpu": cpu.cpu_features().to_dict(),
            "config": PROBE_CONFIG.label, "threads": threads, "results": results,
            "exported": [name for _, name in fresh if tuple(name.split()) in samples],
            "failed": failed, "toolchain": _toolchain_versions(), "pairs": [list(p) for p in _pairs()],
            "files": str(files), "seconds": round(time.perf_counter() - start, 1)}
    atomic_write(probe_path(), lambda t: Path(t).write_text(json.dumps(data, indent=2) + "\n"))
    return data


def _warm(runners: list[Any], keys: list[tuple[str, str]], failed: list[dict[str, str]]
          ) -> tuple[list[Any], list[tuple[str, str]]]:
    """Run each once; one that raises is left out (recorded in ``failed``), not the probe's end."""
    kept_runners, kept_keys = [], []
    for fn, (runtime, precision) in zip(runners, keys):
        try:
            fn()
        except Exception as e:
            failed.append({"runtime": runtime, "precision": precision, "error": _why(e)})
            continue
        kept_runners.append(fn)
        kept_keys.append((runtime, precision))
    return kept_runners, kept_keys


def ensure_probe(*, threads: int = 2, progress: bool = False) -> dict[str, Any] | None:
    """This machine's probe: the cached one, else a fresh one (about a minute the first time, as the
    files are exported; seconds once they are kept). None where probing is impossible or turned off."""
    probe = load_probe()
    if probe is not None or os.environ.get(AUTO_PROBE_ENV, "1") == "0" or not _pairs():
        return probe
    # A minute's wait the first time: always said (on stderr, so --json output stays JSON).
    print("this machine has not been probed: timing each installed runtime once to pick the defaults "
          f"(cached in {probe_path().parent}; `mobilenets bench --probe` measures again)", file=sys.stderr)
    try:
        return run_probe(threads=threads, progress=progress)
    except OSError as e:  # an unwritable cache: the fixed order, and say why
        print(f"probe not saved ({e.strerror or e}): using the fixed runtime order", file=sys.stderr)
        return None
    except Exception as e:  # the probe itself broke: bench and select still work, on the fixed order
        print(f"probe failed ({_why(e)}): using the fixed runtime order; `mobilenets bench --probe` retries",
              file=sys.stderr)
        return None


def probed_runtime(precision: str, probe: dict[str, Any] | None = None) -> tuple[str, float] | None:
    """The fastest runtime the probe measured at ``precision`` and its latency (ms), or None."""
    probe = probe if probe is not None else load_probe()
    if probe is None:
        return None
    rows = [r for r in probe["results"] if r["precision"] == precision]
    if not rows:
        return None
    best = min(rows, key=lambda r: r["median_ms"])
    return best["runtime"], best["median_ms"]
