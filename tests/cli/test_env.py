"""``mobilenets env`` and ``mobilenets bench --probe``: the machine, measured, not assumed."""

from __future__ import annotations

import json

import pytest

from mobilenets.cli import main
from mobilenets.deploy import cpu


def test_env_reports_cpu_runtimes_and_precisions(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    f = cpu.cpu_features()
    assert env["cpu"]["vendor"] == f.vendor and env["cpu"]["avx2"] == f.avx2 and env["machine"] == f.signature()
    assert env["packages"]["torch"] and env["torch_threads"] >= 1
    assert set(env["precisions"]) >= {"fp32", "bf16", "int8"} and env["probe"] is None
    if f.bf16:  # selected by the detected features, not skipped
        assert env["precisions"]["bf16"]["runtime"] == "openvino"
    else:
        assert env["precisions"]["bf16"]["runtime"] is None and "not accelerated" in env["precisions"]["bf16"]["why"]
    assert "fallback order" in env["precisions"]["fp32"]["why"]
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("CPU ") and "avx2 " in text and "int8" in text


def test_a_cpu_without_bf16_says_so(monkeypatch, tmp_path, capsys):
    import dataclasses

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    plain = dataclasses.replace(cpu.cpu_features(), avx512_bf16=False, amx=False)
    monkeypatch.setattr(cpu, "cpu_features", lambda: plain)
    assert main(["env"]) == 0
    assert "bf16       -            not accelerated on this CPU" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_probe_caches_per_machine_and_env_uses_it(monkeypatch, tmp_path, capsys):
    """The probe's caching and its use by `env`. Two runtimes, not every installed one: OpenVINO's
    and ExecuTorch's exports take ~40 s of the probe and are exercised by the bench tests."""
    from mobilenets.deploy import probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    monkeypatch.setattr(probe, "RUNTIMES", ("onnxruntime", "litert"))
    assert main(["bench", "--probe"]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "saved" in out
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["probe"] and "probe" in env["precisions"]["fp32"]["why"]
    assert env["precisions"]["fastest"] in ("fp32", "int8")
