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
the code that makes them (the model and its layers, quantization, the deploy package): a re-probe re-measures the same files in
seconds, and any change of CPU, runtime, exporter or export code exports afresh. Each file is moved into place only when written
whole, so an interrupted probe leaves nothing half-written to reuse; probes take turns (a lock
file), so pruning never touches the files of one in progress."""

from __future__ import annotations

import contextlib
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
from typing import Any, Iterator

import torch
from tqdm import tqdm

from .._utils import atomic_write, error_line
from ..config import MobileNetConfig
from ..data import cache_dir
from ..models import MobileNetV1
from . import cpu
from .formats import EAGER_RUNTIME, RUNTIMES, format_of_runtime
from .timing import interleaved

__all__ = ["AUTO_PROBE_ENV", "PROBE_CONFIG", "REPROBE_AFTER_S", "ensure_probe", "load_probe", "precisions_to_probe", "probe_files_dir", "probe_path", "probed_runtime", "probed_under_load",
           "run_probe"]

PROBE_CONFIG = MobileNetConfig(width_multiplier=0.5, resolution=128)
AUTO_PROBE_ENV = "MOBILENETS_AUTO_PROBE"  # "0": never probe unasked (the fixed order stays the fallback)
REPROBE_AFTER_S = 600  # a busy probe is taken again by itself at most this often (once the machine is idle)
_VERSION = 2  # 2: each turn settles first (timings of version 1 favoured the runtime after ONNX Runtime's)
_FILES_VERSION = 1  # of the kept files' layout: a new probe format alone does not re-export them
# What the probe's files depend on besides the CPU and mobilenets' code: the exporters and runtimes.
_TOOLCHAIN = ("torch", "numpy", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "openvino", "nncf", "ai-edge-litert",
              "executorch", "torchao")


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


# The parts of mobilenets a probe file is made by (the model, its layers and config, quantization,
# the exporters and runtimes, the shared helpers): an edit elsewhere (training, the CLI, data) leaves
# the kept files valid, so it costs no re-export.
_EXPORT_CODE = ("_utils", "config.py", "layers", "models", "quant", "deploy")


def _code_digest(root: Path | None = None) -> str:
    """A digest of the source the probe's files are made by (``_EXPORT_CODE``): they are exported
    again when that code changes, and only then."""
    root = root if root is not None else Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for part in _EXPORT_CODE:
        paths = [root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py"))
        for path in paths:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def probe_files_dir() -> Path:
    """Where this machine's probe keeps its exported files, for these toolchain versions and this code."""
    key = json.dumps({"version": _FILES_VERSION, "machine": cpu.machine_signature(), "config": PROBE_CONFIG.label,
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


@contextlib.contextmanager
def _probe_lock(root: Path) -> Iterator[None]:
    """One probe at a time per cache (another waits: a probe takes seconds to a minute), so that
    pruning never removes a folder another probe is writing or timing. POSIX file lock; where
    there is none (Windows), probes are not serialized."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prune(files: Path) -> None:
    """Remove the files of earlier toolchains / code and interrupted probes' staging folders (run
    under the probe lock: nothing else is probing in this cache)."""
    for entry in files.parent.iterdir():
        if entry != files and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _time_interleaved(runners: dict[tuple[str, str], Any], rounds: int, block: int,
                      failed: list[dict[str, str]]) -> dict[tuple[str, str], list[float]]:
    """Seconds per call, per runtime, timed in interleaved turns that settle first
    (:func:`~.timing.interleaved`; without settling, the runtime timed after ONNX Runtime's read
    slow); a runtime that raises at any point is dropped from the timing (recorded in ``failed``),
    the others go on."""
    def dropped(key: tuple[str, str], e: Exception) -> None:
        failed.append({"runtime": key[0], "precision": key[1], "error": _why(e)})

    return interleaved(runners, calls=rounds * block, block=block, warmup=5, on_error=dropped)


def _open(runtime: str, precision: str, threads: int, workdir: Path, reuse: bool) -> Any:
    from .bench import make_runner  # bench's default_runtime reads this module

    return make_runner(PROBE_CONFIG, runtime, precision=precision, threads=threads, workdir=workdir,
                       model=_probe_model(), reuse=reuse)


def _why(e: BaseException) -> str:
    return error_line(e, 200, with_type=True)


def _now() -> float:
    """Wall-clock seconds (the probe's age; a function, so tests can move the clock)."""
    return time.time()


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on this platform
        return None


# CPU time that is work (not idle, not waiting on disk); "steal" is a neighbour VM's, which slows
# the timing as much as another process does; "interrupt"/"dpc" are Windows' names.
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal", "interrupt", "dpc")


def _cpu_clock() -> tuple[float, float, float] | None:
    """(wall seconds, CPU-seconds used on this process's usable CPUs by every process, CPU-seconds
    this process and its waited-for children have used), read with psutil; None where it cannot."""
    try:
        import psutil

        cpus, per_cpu = cpu.usable_cpus(), psutil.cpu_times(percpu=True)
        chosen = [per_cpu[i] for i in cpus if i < len(per_cpu)] if cpus else per_cpu
        busy = sum(getattr(t, field, 0.0) for t in chosen for field in _BUSY_FIELDS)
        own = psutil.Process().cpu_times()
        return time.perf_counter(), busy, own.user + own.system + own.children_user + own.children_system
    except Exception:  # noqa: BLE001 - no reading here (no psutil, a platform it cannot read): the load average stands in
        return None


def _other_load(start: tuple[float, float, float] | None, end: tuple[float, float, float] | None) -> float | None:
    """How many cores other processes kept busy between two readings of :func:`_cpu_clock`, on
    average: the contention the probe's timings actually ran beside. Unlike the 1-minute load
    average it does not count this process, nor a job that ended just before (the previous command)."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return round(max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0])), 2)


def _others_now(seconds: float = 0.5) -> float | None:
    """Cores other processes keep busy now (this one waits meanwhile), else the load average (None:
    not known here)."""
    start = _cpu_clock()
    time.sleep(seconds)
    other = _other_load(start, _cpu_clock())
    return other if other is not None else _load_average()


def _busy(load: float | None, cores: int) -> bool:
    """Other processes' load (in cores: :func:`_other_load`, or the load average where that is not
    known) above half the cores: another job shares the cores being timed."""
    return load is not None and load > cores / 2


def _idle(load: float | None, cores: int) -> bool:
    """Clearly idle: at most a quarter of the cores busy (not merely "not busy", so that a machine
    whose load hovers near half its cores does not re-probe on every command)."""
    return load is not None and load <= cores / 4


def _cores(probe: dict[str, Any]) -> int:
    """The CPUs the probe's load was counted on (affinity; a container's CPU quota does not shrink
    them: other tenants' load is read over all of them)."""
    return (probe.get("load_cores") or probe.get("usable_cores") or probe.get("cpu", {}).get("cores")
            or cpu.schedulable_cores())


def probed_under_load(probe: dict[str, Any]) -> str | None:
    """A warning when the probe ran on a busy machine (other processes kept more than half the cores
    busy while it timed; where that was not measured, a 1-minute load average above half the cores):
    its sub-millisecond timings then rank the runtimes by who copes with contention, not by speed."""
    other, cores = probe.get("other_load"), _cores(probe)
    load = other if other is not None else probe.get("load_average")
    if not _busy(load, cores):
        return None
    how = (f"other processes kept {other:.1f} of its {cores} cores busy while it timed" if other is not None
           else f"load average {load:.1f} on {cores} cores")
    auto = os.environ.get(AUTO_PROBE_ENV, "1") != "0"
    return (f"probed on a busy machine ({how}): the defaults may not be this "
            "machine's fastest; run `mobilenets bench --probe` again when it is idle"
            + (" (bench and select re-probe by themselves once it is)" if auto else ""))


def run_probe(*, threads: int = 2, rounds: int = 4, block: int = 40, progress: bool = False) -> dict[str, Any]:
    """Time each installed runtime × precision and cache the medians (and the files: see the module).

    A runtime that fails here (to export, to open, or to run) is left out of the probe and its reason
    recorded under ``"failed"``: one broken runtime must not stop ``bench`` and ``select`` picking
    among the others. A kept file that fails is removed, so the next probe exports it afresh."""
    start, load = time.perf_counter(), _load_average()  # before our own work raises it
    files = probe_files_dir()
    files.parent.mkdir(parents=True, exist_ok=True)
    with _probe_lock(files.parent):
        _prune(files)  # (under the lock) what earlier toolchains or interrupted probes left
        files.mkdir(exist_ok=True)
        runners: dict[tuple[str, str], Any] = {}
        fresh: list[tuple[str, str]] = []
        failed: list[dict[str, str]] = []
        exported: list[str] = []
        with tempfile.TemporaryDirectory(prefix=".partial-", dir=files.parent, ignore_cleanup_errors=True) as staging:
            bar = tqdm(_pairs(), desc="probe", unit="runtime", disable=not progress, leave=False)
            for runtime, precision in bar:
                key, kept = (runtime, precision), files / f"{runtime}-{precision}"
                reuse = kept.is_dir()
                bar.set_postfix_str(f"{runtime} {precision}" + ("" if reuse else ": exporting"))
                if reuse:
                    try:
                        runners[key] = _open(runtime, precision, threads, kept, reuse=True)
                    except Exception:  # a kept file that no longer opens (damaged, or a change the key missed)
                        shutil.rmtree(kept, ignore_errors=True)
                        reuse = False
                if not reuse:
                    try:
                        workdir = Path(staging) / kept.name
                        workdir.mkdir(exist_ok=True)
                        runners[key] = _open(runtime, precision, threads, workdir, reuse=False)
                    except Exception as e:  # cannot export or open this precision here: leave it out, say why
                        failed.append({"runtime": runtime, "precision": precision, "error": _why(e)})
                        continue
                    fresh.append(key)
            bar.close()
            clock = _cpu_clock()
            samples = _time_interleaved(runners, rounds, block, failed)
            other = _other_load(clock, _cpu_clock())  # what ran beside the timing
            runners.clear()
            gc.collect()  # close the sessions before their files move
            for f in failed:  # a kept file that opened but failed to run: exported afresh next time
                if (f["runtime"], f["precision"]) not in fresh:
                    shutil.rmtree(files / f"{f['runtime']}-{f['precision']}", ignore_errors=True)
            for key in fresh:  # whole files only: a folder moves into place in one step
                if key not in samples:
                    continue
                name = f"{key[0]}-{key[1]}"
                try:
                    os.replace(Path(staging) / name, files / name)
                    exported.append(f"{key[0]} {key[1]}")
                except OSError:  # a filesystem that refuses: exported again next time
                    pass
    results = [{"runtime": r, "precision": p, "median_ms": 1000 * statistics.median(samples[(r, p)])}
               for r, p in samples if samples[(r, p)]]
    data = {"version": _VERSION, "machine": cpu.machine_signature(), "cpu": cpu.cpu_features().to_dict(),
            "config": PROBE_CONFIG.label, "threads": threads, "results": results, "exported": exported,
            "failed": failed, "toolchain": _toolchain_versions(), "pairs": [list(p) for p in _pairs()],
            "files": str(files), "seconds": round(time.perf_counter() - start, 1), "load_average": load,
            "other_load": other, "usable_cores": cpu.usable_cores(),
            "load_cores": cpu.schedulable_cores(), "made_at": round(_now())}
    atomic_write(probe_path(), lambda t: Path(t).write_text(json.dumps(data, indent=2) + "\n"))
    return data


def ensure_probe(*, threads: int = 2, progress: bool = False) -> dict[str, Any] | None:
    """This machine's probe: the cached one, else a fresh one (about a minute the first time, as the
    files are exported; seconds once they are kept), also when the cached one was taken on a busy
    machine and this one is idle now. None where probing is impossible or turned off."""
    probe = load_probe()
    if os.environ.get(AUTO_PROBE_ENV, "1") == "0" or not _pairs():
        return probe
    if probe is not None:
        # A probe taken on a busy machine ranked contention, not speed: measure again once the
        # machine is clearly idle (seconds: the files are kept), at most every REPROBE_AFTER_S;
        # else keep it (bench --probe and env warn).
        if (not probed_under_load(probe) or _now() - probe.get("made_at", 0) < REPROBE_AFTER_S
                or not _idle(_others_now(), _cores(probe))):
            return probe
        why = "this machine's probe was taken on a busy machine and it is idle now"
    elif probe_path().exists():
        why = ("this machine's probe is out of date (runtimes installed, removed or upgraded since, or made by "
               "an earlier mobilenets)")
    else:
        why = "this machine has not been probed"
    fallback = "keeping the earlier probe" if probe is not None else "using the fixed runtime order"
    # A minute's wait the first time: always said (on stderr, so --json output stays JSON).
    print(f"{why}: timing each installed runtime once to pick the defaults "
          f"(cached in {probe_path().parent}; `mobilenets bench --probe` measures again)", file=sys.stderr)
    try:
        made = run_probe(threads=threads, progress=progress)
        busy = probed_under_load(made)
        if busy:
            print(busy, file=sys.stderr)
        return made
    except OSError as e:  # an unwritable cache: the earlier probe or the fixed order, and say why
        print(f"probe not saved ({e.strerror or e}): {fallback}", file=sys.stderr)
        return probe
    except Exception as e:  # the probe itself broke: bench and select still work
        print(f"probe failed ({_why(e)}): {fallback}; `mobilenets bench --probe` retries", file=sys.stderr)
        return probe


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
