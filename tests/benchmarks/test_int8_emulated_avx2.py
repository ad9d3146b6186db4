"""benchmarks/int8_emulated_avx2.py: the AVX2 kind's int8 accuracy, checked on any x86 machine under
QEMU's user-mode emulation of an AVX2 EPYC (the runtimes pick their AVX2 kernels from its cpuid)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_emulated_avx2.py"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=1200)


@pytest.mark.parametrize("args, env, message", [
    (["--formats", "keras"], None, "--formats must be a comma-separated subset of openvino, onnx, tflite"),
    (["--draws", "-1"], None, "--draws must be ≥ 0"),
    ([], {"PATH": "/nonexistent"}, "qemu-x86_64 not found; install QEMU's user-mode emulator"),
])
def test_bad_input_exits_2_with_one_line(args, env, message):
    proc = _run(*args, env=env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-x86_64 not installed (apt install qemu-user)")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU on an x86-64 host")
def test_openvino_int8_holds_on_an_emulated_avx2_cpu():
    """Our OpenVINO int8 file made for a CPU without VNNI, on the test's calibration, run under the
    emulated AVX2 EPYC: OpenVINO sees that CPU (no BF16, no VNNI), and the file keeps top-1 within
    1 point of Google's file and agrees with fp32 on ≥ 95 of the 100 samples. On a CPU without VNNI
    the same file is made and judged natively, with the same bounds, by
    ``tests/deploy/test_export.py::test_int8_accuracy_on_official_weights``; emulating it there
    again (three minutes on an AVX2 EPYC) would prove nothing more."""
    from conftest import need_data

    from mobilenets.deploy import cpu

    if not cpu.cpu_features().vnni:
        pytest.skip("this CPU has no VNNI: test_int8_accuracy_on_official_weights[openvino] checks the AVX2 "
                    "settings natively")

    need_data("tflite", "mobilenet_v1_0.5_160_quant.tflite")
    need_data("imagenet-sample")
    proc = _run("--draws", "0", "--formats", "openvino")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "emulated CPU: AMD EPYC-Milan Processor" in out, out
    assert "pairs in fp32 (this CPU has no VNNI)" in out  # the file was made with the settings for such a CPU
    line = next(x for x in out.splitlines() if x.startswith("ours OpenVINO (NNCF): mean top-1"))
    assert "within 1 point of Google's" in line and "NOT" not in line and "≥ 95 in every draw" in line, out
    assert "verdict: every int8 path holds without VNNI" in out
