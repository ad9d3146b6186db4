"""`mobilenets bench`: timing loop, CSV / markdown / PNG outputs, runtime choice, bad input."""

from __future__ import annotations

import csv
import importlib.util

import pytest
from cpu_kinds import AVX2_EPYC, XEON_AMX

import mobilenets.deploy.cpu as cpu_mod
from mobilenets.cli import main
from mobilenets.config import MobileNetConfig
from mobilenets.deploy import (
    BenchResult,
    benchmark,
    default_runtime,
    format_markdown,
    make_runner,
    read_results,
    time_calls,
    write_results,
)

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnxscript") is not None
HAS_OV = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnxscript") is not None
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
TINY = {"widths": [0.25], "resolutions": [64], "warmup": 1, "iters": 3, "threads": 1, "progress": False}


def test_time_calls_counts_and_warms_up():
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup=2, iters=5)
    assert len(samples) == 5 and len(calls) == 7 and all(s >= 0 for s in samples)


def test_settle_calls_untimed_for_its_time_at_least_once():
    import time

    from mobilenets.deploy.timing import settle

    calls = []
    t0 = time.perf_counter()
    settle(lambda: calls.append(1), 0.05)
    assert time.perf_counter() - t0 >= 0.05 and len(calls) >= 1
    calls.clear()
    settle(lambda: (calls.append(1), time.sleep(0.02)), 0.0)
    assert len(calls) == 1


def test_every_timed_turn_starts_after_settling(monkeypatch):
    """The models of a bench run are timed in turns; each turn settles first, so no model pays for
    the previous one's spinning threads (ONNX Runtime's: up to 2.3× its median at 10 calls a turn)."""
    from mobilenets.deploy import bench, timing

    order = []
    monkeypatch.setattr(timing, "settle", lambda fn, seconds: order.append(("settle", fn)))
    a, b = (lambda: order.append(("a",))), (lambda: order.append(("b",)))
    times = bench._interleaved_blocks([a, b], warmup=0, iters=4, min_time=0.0, desc="", progress=False, block=2)
    assert [len(t) for t in times] == [4, 4]
    assert [o[0] for o in order] == ["settle", "a", "a", "settle", "b", "b"] * 2
    assert [o[1] for o in order if o[0] == "settle"] == [a, b, a, b]


def test_interleaved_counts_its_calls_and_drops_a_failing_function():
    from mobilenets.deploy.timing import interleaved

    calls = {"a": 0, "b": 0, "c": 0}

    def fn(name):
        def call():
            calls[name] += 1
            if name == "c" and calls[name] > 4:
                raise RuntimeError("broke while timed")
        return call
    dropped = []
    times = interleaved({k: fn(k) for k in calls}, calls=5, block=2, warmup=1, skip=1, settle_seconds=0.0,
                        on_error=lambda key, e: dropped.append((key, str(e))))
    assert {k: len(v) for k, v in times.items()} == {"a": 5, "b": 5}  # timed: 2 + 2 + 1
    assert calls["a"] == calls["b"] == 1 + 3 * 1 + 5  # warm-up, one untimed call per turn, the timed ones
    assert dropped == [("c", "broke while timed")]


def test_torch_bench_writes_csv_md_png(tmp_path):
    results = benchmark(**{**TINY, "widths": [0.25, 0.5]}, runtime="torch", out=tmp_path)
    assert [(r.width, r.resolution) for r in results] == [(0.25, 64), (0.5, 64)]
    r = results[0]
    assert r.median_ms > 0 and r.p90_ms >= r.median_ms * 0.5 and r.throughput > 0 and r.iters == 3
    assert r.mult_adds > 0 and r.params > 0 and r.runtime == "torch" and r.precision == "fp32"
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("| α | ρ |") and "| 0.25 | 64 |" in md
    with open(tmp_path / "bench.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[0]["median_ms"]) == pytest.approx(r.median_ms)
    back = read_results(tmp_path / "bench.csv")
    assert back[1].width == 0.5 and back[1].median_ms == pytest.approx(results[1].median_ms)


@pytest.mark.parametrize("runtime, precision", [
    pytest.param("onnxruntime", "fp32", marks=pytest.mark.skipif(not HAS_ORT, reason="onnxruntime missing")),
    pytest.param("openvino", "fp32", marks=pytest.mark.skipif(not HAS_OV, reason="openvino missing")),
    pytest.param("openvino", "bf16", marks=pytest.mark.skipif(not HAS_OV, reason="openvino missing")),
    pytest.param("onnxruntime", "int8", marks=pytest.mark.skipif(not HAS_ORT, reason="onnxruntime missing")),
    pytest.param("litert", "fp32", marks=pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert missing")),
    pytest.param("litert", "int8", marks=pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert missing")),
])
def test_exported_runtimes(runtime, precision, monkeypatch):
    if precision == "bf16" and not cpu_mod.cpu_features().bf16:
        # Flags that claim bf16 on a CPU without it. Where OpenVINO has no bf16 path (AVX2 only) it
        # compiles f32, and that is refused, not timed; on AVX-512 without BF16 it emulates bf16.
        import openvino as ov

        monkeypatch.setattr(cpu_mod, "cpu_features", lambda: XEON_AMX)
        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            with pytest.raises(ValueError, match="OpenVINO compiled it as f32, not bf16, on this CPU"):
                benchmark(**TINY, runtime=runtime, precision=precision)
            return
    (r,) = benchmark(**TINY, runtime=runtime, precision=precision)
    assert r.runtime == runtime and r.precision == precision and r.median_ms > 0 and r.threads == 1


@pytest.mark.parametrize("runtime", ["torch", pytest.param("openvino", marks=pytest.mark.skipif(
    not HAS_OV, reason="openvino missing"))])
def test_bf16_without_hardware_support_is_refused(monkeypatch, runtime):
    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: AVX2_EPYC)
    with pytest.raises(ValueError, match=r"bf16 is not accelerated on this CPU \(AMD EPYC: no AVX512_BF16 or AMX\)") as e:
        benchmark(**TINY, runtime=runtime, precision="bf16")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="bf16 is not accelerated"):
        make_runner(MobileNetConfig(width_multiplier=0.25, resolution=64), runtime, precision="bf16")
    (r,) = benchmark(**TINY, runtime=runtime, precision="fp32")  # fp32 and int8 are still timed
    assert r.precision == "fp32" and r.avx512_bf16 is False and r.cpu == "AMD EPYC"


def test_bf16_with_hardware_support_is_timed_and_recorded(monkeypatch, capsys):
    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: XEON_AMX)
    (r,) = benchmark(**{**TINY, "progress": True}, runtime="torch", precision="bf16")
    assert r.precision == "bf16" and r.avx512_bf16 is True and r.amx is True
    assert r.machine == XEON_AMX.signature()
    err = capsys.readouterr().err
    assert XEON_AMX.summary() in err  # the features, printed before timing


def test_csv_records_the_cpu(tmp_path):
    features = cpu_mod.cpu_features()
    benchmark(**TINY, runtime="torch", out=tmp_path)
    with open(tmp_path / "bench.csv") as f:
        (row,) = list(csv.DictReader(f))
    for col in ("cpu_vendor", "cpu", "cpu_cores", "avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx",
                "machine"):
        assert col in row
    assert row["cpu"] == features.brand and row["avx2"] == str(features.avx2) and row["machine"] == features.signature()
    (back,) = read_results(tmp_path / "bench.csv")
    assert back.avx2 is features.avx2 and back.amx is features.amx and back.cpu_cores == features.cores


def test_read_results_of_a_csv_without_cpu_columns(tmp_path):
    old = ("width,resolution,runtime,precision,device,batch,threads,mult_adds,params,median_ms,p90_ms,throughput,"
           "iters\n0.25,128,openvino,fp32,cpu,1,2,14000000,470000,0.2,0.25,5000.0,50\n")
    (tmp_path / "old.csv").write_text(old)
    (r,) = read_results(tmp_path / "old.csv")
    assert r.width == 0.25 and r.median_ms == 0.2 and r.iters == 50
    assert r.cpu == "" and r.machine == "" and r.cpu_cores == 0 and r.avx2 is None and r.amx is None  # unknown


def test_make_runner_returns_logits():
    fn = make_runner(MobileNetConfig(width_multiplier=0.25, resolution=64, num_classes=7), "torch", threads=1)
    assert tuple(fn().shape) == (1, 7)


def test_default_runtime_is_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))  # no probe of this machine: the fallback order
    assert default_runtime("cpu") in ("openvino", "onnxruntime", "torch")
    assert default_runtime("cuda") == "torch"
    if HAS_OV:
        assert default_runtime("cpu") == default_runtime("cpu", "bf16") == "openvino"
    if HAS_LITERT:
        assert default_runtime("cpu", "int8") == "litert"


@pytest.mark.parametrize("kwargs, match", [
    ({"runtime": "tensorrt"}, "unknown runtime 'tensorrt'"),
    ({"runtime": "torch", "precision": "fp8"}, "unknown precision"),
    ({"runtime": "onnxruntime", "precision": "bf16"}, "no bf16 CPU path"),
    ({"runtime": "torch", "batch": 0}, "batch must be an integer"),
    ({"runtime": "torch", "threads": 0}, "threads must be an integer"),
    ({"runtime": "torch", "iters": 0}, "iters"),
    ({"runtime": "torch", "widths": []}, "nothing to benchmark"),
    ({"runtime": "torch", "device": "tpu"}, "unknown device"),
])
def test_bad_options(kwargs, match):
    opts = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=match):
        benchmark(**opts)


def test_read_results_rejects_other_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a bench CSV"):
        read_results(path)
    with pytest.raises(ValueError, match="no such bench CSV"):
        read_results(tmp_path / "missing.csv")


def test_markdown_and_png_from_rows(tmp_path):
    rows = [BenchResult(a, r, "openvino", "int8", "cpu", 1, 2, int(a * a * r * r * 10), 1000, a * r / 100,
                        a * r / 90, 100 / (a * r), 100) for a in (1.0, 0.5) for r in (224, 128)]
    paths = write_results(rows, tmp_path / "out", name="x")
    assert paths["png"].stat().st_size > 1000
    assert format_markdown(rows).count("\n") == 1 + len(rows)
    with pytest.raises(ValueError, match="not a directory"):
        write_results(rows, paths["png"])


def test_cli_bench(tmp_path, capsys):
    rc = main(["bench", "--widths", "0.25", "--resolutions", "64", "--runtime", "torch", "--iters", "2",
               "--warmup", "0", "--threads", "1", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "| 0.25 | 64 |" in out
    assert {p.name for p in tmp_path.iterdir()} == {"bench.csv", "bench.md", "bench.png"}


@pytest.mark.parametrize("argv, match", [
    (["bench", "--widths", "0,1"], "width multiplier α must be a number > 0"),
    (["bench", "--resolutions", "16"], "resolution must be at least 32"),
    (["bench", "--runtime", "tensorrt"], "invalid choice: 'tensorrt'"),
    (["bench", "--threads", "0"], "--threads must be an integer ≥ 1"),
    (["bench", "--int8", "--bf16"], "--int8 and --bf16 exclude each other"),
    (["bench", "--runtime", "onnxruntime", "--bf16", "--widths", "0.25", "--resolutions", "64"], "no bf16 CPU path"),
])
def test_cli_bench_errors(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.count("\n") == 1


def test_probe_decides_the_default_runtime_per_machine(monkeypatch, tmp_path):
    """A probe cached for this machine's signature picks the default; another machine's is ignored."""
    import json

    from mobilenets.deploy import cpu, probe
    from mobilenets.deploy.probe import load_probe, probe_path

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    fallback = default_runtime("cpu", "fp32")
    data = {"version": probe._VERSION, "machine": cpu.machine_signature(), "config": "0.5 MobileNet-128", "threads": 2,
            "toolchain": probe._toolchain_versions(), "pairs": [list(p) for p in probe._pairs()],
            "results": [{"runtime": "onnxruntime", "precision": "fp32", "median_ms": 1.0},
                        {"runtime": "openvino", "precision": "fp32", "median_ms": 2.0},
                        {"runtime": "onnxruntime", "precision": "int8", "median_ms": 3.0}]}
    probe_path().parent.mkdir(parents=True, exist_ok=True)
    probe_path().write_text(json.dumps(data))
    assert load_probe() is not None
    if HAS_ORT:
        assert default_runtime("cpu", "fp32") == "onnxruntime" and default_runtime("cpu", "int8") == "onnxruntime"
    probe_path().write_text(json.dumps({**data, "machine": "some other CPU"}))
    assert load_probe() is None and default_runtime("cpu", "fp32") == fallback
    probe_path().write_text(json.dumps({**data, "version": 1}))  # timed without settling: made again
    assert load_probe() is None


def test_out_is_checked_before_measuring(tmp_path, capsys, monkeypatch):
    """`bench` refuses an --out it cannot write before building or timing anything (one line, exit 2)."""
    import importlib

    from mobilenets.deploy import check_out_dir

    afile = tmp_path / "bench.txt"
    afile.write_text("keep me")
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    for out, match in ((afile, "bench.txt: is a file; give a folder"),
                       (afile / "sub", "sub: cannot be written: .*bench.txt is a file, not a folder")):
        with pytest.raises(ValueError, match=match):
            check_out_dir(out)

    def must_not_run(*a, **k):
        raise AssertionError("measured before checking --out")

    bench_mod = importlib.import_module("mobilenets.deploy.bench")
    cli_mod = importlib.import_module("mobilenets.cli.deploy")
    monkeypatch.setattr(bench_mod, "make_runner", must_not_run)
    monkeypatch.setattr(cli_mod, "benchmark", must_not_run)
    with pytest.raises(ValueError, match="is a file; give a folder"):
        benchmark(**TINY, runtime="torch", out=afile)
    for out in (afile, afile / "sub"):
        rc = main(["bench", "--widths", "0.25", "--resolutions", "64", "--runtime", "torch", "--out", str(out),
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and str(out) in err and err.count("\n") == 1 and "Traceback" not in err
    assert afile.read_text() == "keep me"


@pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert missing")
def test_default_threads_are_the_cores_this_process_may_use(monkeypatch):
    """Without --threads a runtime gets one thread per CPU the process may run on (taskset, a
    container's cpuset), not per CPU of the host, and the result records that count."""
    monkeypatch.setattr(cpu_mod.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cpu_mod.usable_cores() == 1
    seen = {}
    import ai_edge_litert.interpreter as lite

    real = lite.Interpreter

    def spy(*args, **kwargs):
        seen["num_threads"] = kwargs.get("num_threads")
        return real(*args, **kwargs)

    monkeypatch.setattr(lite, "Interpreter", spy)
    (r,) = benchmark(**{**TINY, "threads": None}, runtime="litert", precision="fp32")
    assert seen["num_threads"] == 1 and r.threads == 1
