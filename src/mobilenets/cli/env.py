"""``env``: what this machine is and what each precision will run as here."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from typing import Any

from ..deploy import cpu, default_runtime
from ..deploy.probe import AUTO_PROBE_ENV, load_probe, probe_path, probed_runtime, probed_under_load
from .base import add_command

__all__ = ["cmd_env", "environment", "register"]

_PACKAGES = (("torch", "torch"), ("torchvision", "torchvision"), ("onnxruntime", "onnxruntime"),
             ("openvino", "openvino"), ("nncf", "nncf"), ("litert", "ai-edge-litert"), ("torchao", "torchao"),
             ("executorch", "executorch"), ("timm", "timm"))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """CPU features, installed runtimes, torch threads, and per precision the runtime it runs in."""
    import torch


    features = cpu.cpu_features()
    probe = load_probe()
    no_probe = ("no probe yet: `bench` and `select` make one first, or run `mobilenets bench --probe`"
                if os.environ.get(AUTO_PROBE_ENV, "1") != "0" else
                f"no probe, and {AUTO_PROBE_ENV}=0 turns off probing unasked: run `mobilenets bench --probe`")
    precisions = {}
    for precision in ("fp32", "bf16", "int8"):
        if precision == "bf16" and not features.bf16:
            precisions[precision] = {"runtime": None, "why": "not accelerated on this CPU (no AVX512_BF16 or AMX): "
                                     "refused rather than timed as fp32"}
            continue
        measured = probed_runtime(precision, probe)
        runtime = default_runtime("cpu", precision)
        failures = [f"{f['runtime']}: {f['error']}" for f in (probe or {}).get("failed", []) if f["precision"] == precision]
        if measured:
            why = f"fastest in this machine's probe ({measured[1]:.2f} ms, {probe['config']})"
        elif failures:
            why = f"fixed fallback order (every runtime failed in this machine's probe: {'; '.join(failures)})"
        else:
            why = f"fixed fallback order ({no_probe if probe is None else 'not in the probe'})"
        precisions[precision] = {"runtime": runtime, "latency_ms": measured[1] if measured else None, "why": why}
    timed = [p for p in ("fp32", "bf16", "int8") if precisions[p].get("latency_ms")]
    if probe is not None and len(timed) > 1:  # bf16 too, where the CPU accelerates it and it was timed
        precisions["fastest"] = min(timed, key=lambda p: precisions[p]["latency_ms"])
    return {"cpu": features.to_dict(), "machine": features.signature(), "torch_threads": torch.get_num_threads(),
            "packages": {name: _version(pkg) for name, pkg in _PACKAGES},
            "probe": str(probe_path()) if probe is not None else None, "precisions": precisions,
            "probe_warning": probed_under_load(probe) if probe is not None else None}


def cmd_env(args: argparse.Namespace) -> int:
    """CPU vendor and features (AVX2, AVX-512, VNNI, BF16, AMX), installed runtimes and their
    versions, torch threads, and for fp32 / bf16 / int8 the runtime it runs in here (from this
    machine's probe, `mobilenets bench --probe`, or the fallback order) or why it cannot run
    accelerated."""
    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    c = env["cpu"]
    print(f"CPU        {c['brand']} ({c['vendor']}), {c['cores']} cores")
    flags = [k for k in ("avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx")]
    print("features   " + "  ".join(f"{k} {'yes' if c.get(k) else 'no'}" for k in flags))
    print(f"torch      {env['packages']['torch']}, {env['torch_threads']} threads")
    print("runtimes   " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v and k not in ("torch",)))
    for precision in ("fp32", "bf16", "int8"):
        p = env["precisions"][precision]
        print(f"{precision:<10} {p['runtime'] or '-':<12} {p['why']}")
    if "fastest" in env["precisions"]:
        print(f"fastest    {env['precisions']['fastest']} on this machine (probe: {env['probe']})")
    if env["probe_warning"]:
        print(f"note       {env['probe_warning']}")
    return 0


def register(sub: Any) -> None:
    """Add ``env`` to the ``mobilenets`` subparsers."""
    p = add_command(sub, "env", cmd_env, "this machine: CPU features, runtimes, what each precision runs as")
    p.add_argument("--json", action="store_true", help="print one JSON object")
