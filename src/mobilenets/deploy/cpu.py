"""What this CPU can accelerate: the instruction sets that decide int8 and bf16 speed and accuracy.

:func:`cpu_features` reads them once per process with `py-cpuinfo` (``pip install
py-cpuinfo``), falling back to PyTorch's own dispatch level
(``torch.backends.cpu.get_cpu_capability()``: AVX2 / AVX-512 only; VNNI, BF16 and AMX then
read as absent). Call sites use ``cpu.cpu_features()`` through the module, so a test can
monkeypatch one function to stand in for another machine.

Why it matters here:

* bf16 is only fast with AVX512_BF16 or AMX; without them a runtime emulates it or quietly
  runs fp32, so :func:`mobilenets.deploy.benchmark` refuses to time "bf16" there.
* ONNX Runtime's U8S8 int8 kernels can saturate on x86 CPUs without VNNI (AVX-512 VNNI or
  AVX-VNNI); the ONNX int8 writer picks its settings from these features
  (:func:`mobilenets.deploy.formats.onnx.ort_int8_settings`).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["FEATURE_NAMES", "CpuFeatures", "cpu_features", "machine_signature", "schedulable_cores", "usable_cores",
           "usable_cpus"]

FEATURE_NAMES = ("avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's vendor, brand, logical core count and the instruction sets that matter here."""

    vendor: str
    brand: str
    cores: int
    avx2: bool
    avx512: bool  # AVX-512 Foundation
    avx512_vnni: bool
    avx_vnni: bool  # the VEX-encoded VNNI of CPUs without AVX-512 (Alder Lake, Zen 5 client)
    avx512_bf16: bool
    amx: bool  # AMX tiles (bf16 / int8 matrix units)
    source: str = "py-cpuinfo"

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (either encoding): ONNX Runtime's U8S8 fast, exact path."""
        return self.avx512_vnni or self.avx_vnni

    @property
    def bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX512_BF16 or AMX)."""
        return self.avx512_bf16 or self.amx

    def flags(self) -> list[str]:
        """The features present, in :data:`FEATURE_NAMES` order."""
        return [name for name in FEATURE_NAMES if getattr(self, name)]

    def signature(self) -> str:
        """One line naming the machine: brand, vendor, cores and features (``+``-joined)."""
        return f"{self.brand} ({self.vendor}), {self.cores} cores, {'+'.join(self.flags()) or 'no avx2'}"

    def summary(self) -> str:
        """The features as a human-readable line (what ``bench`` prints before timing)."""
        marks = ", ".join(f"{name} {'yes' if getattr(self, name) else 'no'}" for name in FEATURE_NAMES)
        notes = [] if self.bf16 else ["bf16 not accelerated"]
        if not self.vnni:
            notes.append("int8 without VNNI")
        tail = f" ({'; '.join(notes)})" if notes else ""
        return f"CPU: {self.brand} ({self.vendor}), {self.cores} cores: {marks}{tail} [{self.source}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_flags(cls, vendor: str, brand: str, cores: int, flags: set[str], source: str) -> CpuFeatures:
        """From a CPU flag list, spelled either way (/proc/cpuinfo's ``avx512_vnni``, cpuid's ``avx512vnni``)."""
        flat = {f.lower().replace("_", "") for f in flags}
        return cls(vendor=vendor, brand=brand, cores=cores, avx2="avx2" in flat, avx512="avx512f" in flat,
                   avx512_vnni="avx512vnni" in flat, avx_vnni="avxvnni" in flat, avx512_bf16="avx512bf16" in flat,
                   amx=any(f.startswith("amx") for f in flat), source=source)


# torch's own cpuid readers (private, so each is optional): the fallback sees VNNI, BF16 and AMX too
_TORCH_CPUID = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported", "avx512_vnni": "_is_vnni_supported",
                "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}


def _torch_features() -> CpuFeatures:
    """The fallback without py-cpuinfo: torch's cpuid readers where this torch has them, else its
    kernel dispatch level (which names AVX2 and AVX-512 only)."""
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()  # "DEFAULT", "AVX2", "AVX512", ...
    flags = {"avx2"} if capability in ("AVX2", "AVX512") else set()
    if capability == "AVX512":
        flags.add("avx512f")
    for flag, name in _TORCH_CPUID.items():
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                flags.add(flag)
        except Exception:  # noqa: BLE001 - a private reader that changed: keep what the dispatch level says
            pass
    brand = platform.processor() or platform.machine() or "unknown CPU"
    return CpuFeatures.from_flags("unknown", brand, os.cpu_count() or 1, flags, "torch.backends.cpu")


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once per process: py-cpuinfo takes ~1 s)."""
    try:
        import cpuinfo
    except ImportError:
        return _torch_features()
    try:
        info = cpuinfo.get_cpu_info()
    except Exception:  # noqa: BLE001 - an unusual /proc or cpuid failure: fall back, never fail a bench
        return _torch_features()
    return CpuFeatures.from_flags(str(info.get("vendor_id_raw") or "unknown"), str(info.get("brand_raw") or "unknown CPU"),
                       int(info.get("count") or os.cpu_count() or 1), set(info.get("flags") or ()), "py-cpuinfo")


def machine_signature() -> str:
    """A one-line description of this CPU, to tell apart results measured on different machines."""
    return cpu_features().signature()


def usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (``taskset``, a container's cpuset), where the OS says."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on this platform
        return None


def schedulable_cores() -> int:
    """How many CPUs this process may be scheduled on (affinity alone, no CPU quota): the CPUs whose
    load other processes' work is counted on, so the count to judge that load against."""
    cpus = usable_cpus()
    return len(cpus) if cpus else os.cpu_count() or 1


def usable_cores() -> int:
    """How many cores this process may use: the CPUs it may run on (``taskset``, a cpuset) and, in a
    container, its CPU quota (``docker --cpus``, cgroup v1 or v2), as joblib's loky reads them. The
    default thread count of every runtime, and what the probe's timings compete for: a 2-CPU quota
    on a 64-core host must not start 64 threads."""
    try:
        from joblib.externals.loky import cpu_count
    except ImportError:  # joblib is declared; without it, affinity alone
        return schedulable_cores()
    return max(1, cpu_count(only_physical_cores=False))
