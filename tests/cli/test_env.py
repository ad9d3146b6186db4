"""``mobilenets env`` and ``mobilenets bench --probe``: the machine, measured, not assumed."""

from __future__ import annotations

import contextlib
import json
import sys

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
    assert main(["bench", "--probe", "--no-progress"]) == 0  # the real files, kept and opened again
    assert "reused every file" in capsys.readouterr().out
    assert probe.load_probe()["exported"] == []


def _fake_exporter(calls):
    """A make_runner that records whether it exported or reused, writing a stand-in file."""
    def make_runner(config, runtime, *, precision, workdir, reuse, **kwargs):
        path = workdir / f"{runtime}-{precision}.file"
        if reuse and path.exists():
            calls.append(("reused", runtime, precision))
        else:
            if runtime == "boom":
                raise KeyboardInterrupt  # interrupted mid-export
            path.write_text("file")
            calls.append(("exported", runtime, precision))
        return lambda: None
    return make_runner


def test_probe_keeps_its_files_and_a_reprobe_reuses_them(monkeypatch, tmp_path):
    """A re-probe re-measures the kept files instead of exporting again (seconds, not a minute);
    new toolchain versions export afresh and drop the old files; an interrupted probe keeps nothing
    half-written."""
    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(bench, "make_runner", _fake_exporter(calls))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32"), ("litert", "int8")])

    first = probe.run_probe(rounds=1, block=1)
    assert [c[0] for c in calls] == ["exported", "exported"] and first["exported"] == ["onnxruntime fp32", "litert int8"]
    files = probe.probe_files_dir()
    assert sorted(p.name for p in files.iterdir()) == ["litert-int8", "onnxruntime-fp32"]
    calls.clear()
    again = probe.run_probe(rounds=1, block=1)
    assert [c[0] for c in calls] == ["reused", "reused"] and again["exported"] == []
    assert {r["runtime"] for r in again["results"]} == {"onnxruntime", "litert"} and again["files"] == str(files)

    versions = probe._toolchain_versions()
    monkeypatch.setattr(probe, "_toolchain_versions", lambda: {**versions, "onnxruntime": "99.0"})
    assert probe.probe_files_dir() != files
    calls.clear()
    probe.run_probe(rounds=1, block=1)
    assert [c[0] for c in calls] == ["exported", "exported"] and not files.exists()  # the old toolchain's files: gone

    monkeypatch.setattr(probe, "_pairs", lambda: [("executorch", "fp32"), ("boom", "fp32")])
    with pytest.raises(KeyboardInterrupt):
        probe.run_probe(rounds=1, block=1)
    root = probe.probe_files_dir().parent
    assert not any(p.name.startswith(".partial-") for p in root.iterdir())  # the staging folder went with it
    assert sorted(p.name for p in probe.probe_files_dir().iterdir()) == ["litert-int8", "onnxruntime-fp32"]


def test_the_first_bench_or_select_probes_a_machine_that_has_none(monkeypatch, tmp_path, capsys):
    """The fixed order is only the fallback: a machine with no probe is probed once, first (unless
    MOBILENETS_AUTO_PROBE=0, as in this suite, or when the runtime is given)."""
    from mobilenets.deploy import bench, probe
    from mobilenets.deploy import selection as select_mod
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    calls: list[tuple[str, str, str]] = []
    real_make_runner = bench.make_runner
    monkeypatch.setattr(bench, "make_runner", _fake_exporter(calls))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    assert probe.ensure_probe() is None and calls == []  # turned off (the suite's setting)
    monkeypatch.setenv(probe.AUTO_PROBE_ENV, "1")
    made = probe.ensure_probe(progress=True)
    assert made is not None and calls == [("exported", "onnxruntime", "fp32")]
    assert "this machine has not been probed" in capsys.readouterr().err
    assert probe.ensure_probe() == probe.load_probe() and len(calls) == 1  # cached: not measured again

    asked = []
    monkeypatch.setattr(bench, "make_runner", real_make_runner)
    monkeypatch.setattr(bench, "ensure_probe", lambda **kw: asked.append("bench"))
    monkeypatch.setattr(select_mod, "ensure_probe", lambda **kw: asked.append("select"))
    monkeypatch.setattr(bench, "default_runtime", lambda device="cpu", precision="fp32": "torch")
    bench.benchmark([0.25], [32], iters=1, warmup=0, progress=False)
    bench.benchmark([0.25], [32], runtime="torch", iters=1, warmup=0, progress=False)
    assert asked == ["bench"]
    with pytest.raises(ValueError, match="batch must be"):  # bad settings are refused before any probing
        bench.benchmark([0.25], [32], batch=0, progress=False)
    assert asked == ["bench"]
    monkeypatch.setattr(select_mod, "benchmark", lambda *a, **kw: [])
    with contextlib.suppress(ValueError):
        select_mod.select(1.0, precision="fp32", widths=[0.25], resolutions=[128], progress=False)
    assert asked == ["bench", "select"]


def test_an_unwritable_cache_falls_back_to_the_fixed_order(monkeypatch, tmp_path, capsys):
    from mobilenets.deploy import bench, probe

    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    monkeypatch.setenv("MOBILENETS_CACHE", str(afile))
    monkeypatch.setenv(probe.AUTO_PROBE_ENV, "1")
    monkeypatch.setattr(bench, "make_runner", _fake_exporter([]))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    assert probe.ensure_probe(progress=True) is None
    assert "probe not saved" in capsys.readouterr().err


def test_a_failing_runtime_is_left_out_of_the_probe_not_its_end(monkeypatch, tmp_path, capsys):
    """One broken runtime (it raises on export, or when run: ONNX Runtime's errors are not
    RuntimeErrors) is left out with its reason; the others are timed and the probe is saved."""
    from mobilenets.deploy import bench, probe

    class VendorError(Exception):
        pass

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    calls: list[tuple[str, str, str]] = []
    fake = _fake_exporter(calls)

    def make_runner(config, runtime, *, precision, workdir, reuse, **kwargs):
        if runtime == "openvino":
            raise VendorError("no plugin for this CPU")
        fn = fake(config, runtime, precision=precision, workdir=workdir, reuse=reuse)
        if runtime == "executorch":
            def broken():
                raise VendorError("kernel missing\nsecond line")
            return broken
        return fn

    monkeypatch.setattr(bench, "make_runner", make_runner)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32"), ("openvino", "fp32"), ("executorch", "fp32")])
    data = probe.run_probe(rounds=1, block=1)
    assert [r["runtime"] for r in data["results"]] == ["onnxruntime"]
    assert {f["runtime"]: f["error"] for f in data["failed"]} == {
        "openvino": "VendorError: no plugin for this CPU", "executorch": "VendorError: kernel missing"}
    assert data["exported"] == ["onnxruntime fp32"]
    assert sorted(p.name for p in probe.probe_files_dir().iterdir()) == ["onnxruntime-fp32"]  # only what ran
    assert probe.probed_runtime("fp32") == ("onnxruntime", data["results"][0]["median_ms"])

    def boom(**kwargs):
        raise VendorError("the probe itself broke")
    monkeypatch.setattr(probe, "run_probe", boom)
    monkeypatch.setenv(probe.AUTO_PROBE_ENV, "1")
    monkeypatch.setattr(probe, "load_probe", lambda: None)
    assert probe.ensure_probe() is None  # bench and select go on, on the fixed order
    assert "probe failed (VendorError: the probe itself broke): using the fixed runtime order" in capsys.readouterr().err


def test_a_kept_file_that_no_longer_opens_is_exported_again(monkeypatch, tmp_path):
    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    calls: list[tuple[str, str, str]] = []
    fake = _fake_exporter(calls)
    monkeypatch.setattr(bench, "make_runner", fake)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    probe.run_probe(rounds=1, block=1)
    kept = probe.probe_files_dir() / "onnxruntime-fp32" / "onnxruntime-fp32.file"
    kept.write_text("damaged")

    def make_runner(config, runtime, *, precision, workdir, reuse, **kwargs):
        if reuse and (workdir / f"{runtime}-{precision}.file").read_text() == "damaged":
            raise ValueError("not an ONNX file")
        return fake(config, runtime, precision=precision, workdir=workdir, reuse=reuse)

    monkeypatch.setattr(bench, "make_runner", make_runner)
    calls.clear()
    data = probe.run_probe(rounds=1, block=1)
    assert calls == [("exported", "onnxruntime", "fp32")] and data["exported"] == ["onnxruntime fp32"]
    assert data["failed"] == [] and kept.read_text() == "file"  # replaced by a whole fresh export


def test_a_probe_of_other_runtimes_is_no_probe(monkeypatch, tmp_path):
    """A runtime installed, removed or upgraded since the probe: its timing no longer describes the
    machine, so the probe is made again rather than trusted."""
    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "make_runner", _fake_exporter([]))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    probe.run_probe(rounds=1, block=1)
    assert probe.load_probe() is not None
    versions = probe._toolchain_versions()
    monkeypatch.setattr(probe, "_toolchain_versions", lambda: {**versions, "openvino": "99.0"})
    assert probe.load_probe() is None
    monkeypatch.setattr(probe, "_toolchain_versions", lambda: versions)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32"), ("litert", "fp32")])
    assert probe.load_probe() is None  # a runtime installed since


def test_probes_take_turns_and_clear_what_interrupted_ones_left(monkeypatch, tmp_path):
    """A probe holds the cache's lock while it exports and times, so pruning can never remove
    another probe's folders; what a killed probe left (a staging folder) is removed by the next."""
    import fcntl

    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    fake = _fake_exporter([])
    held = []

    def make_runner(config, runtime, *, precision, workdir, reuse, **kwargs):
        with open(probe.probe_files_dir().parent / ".lock") as other:  # another process's view of the lock
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return fake(config, runtime, precision=precision, workdir=workdir, reuse=reuse)

    monkeypatch.setattr(bench, "make_runner", make_runner)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    root = probe.probe_files_dir().parent
    killed = root / ".partial-killed" / "onnxruntime-fp32"
    killed.mkdir(parents=True)
    probe.run_probe(rounds=1, block=1)
    assert held == [True] and not killed.parent.exists()
    assert sorted(p.name for p in probe.probe_files_dir().iterdir()) == ["onnxruntime-fp32"]


def test_a_runtime_that_fails_while_timed_is_dropped_and_its_kept_file_removed(monkeypatch, tmp_path):
    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    calls: list[tuple[str, str, str]] = []
    fake = _fake_exporter(calls)
    monkeypatch.setattr(bench, "make_runner", fake)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32"), ("litert", "fp32")])
    probe.run_probe(rounds=1, block=1)
    kept = probe.probe_files_dir() / "litert-fp32"
    assert kept.is_dir()

    def make_runner(config, runtime, *, precision, workdir, reuse, **kwargs):
        fn = fake(config, runtime, precision=precision, workdir=workdir, reuse=reuse)
        if runtime != "litert":
            return fn
        count = [0]

        def flaky():  # opens, runs its first calls, then fails
            count[0] += 1
            if count[0] > 6:
                raise OSError("the delegate lost its threads")
        return flaky

    monkeypatch.setattr(bench, "make_runner", make_runner)
    data = probe.run_probe(rounds=2, block=2)
    assert [r["runtime"] for r in data["results"]] == ["onnxruntime"]
    assert data["failed"] == [{"runtime": "litert", "precision": "fp32", "error": "OSError: the delegate lost its threads"}]
    assert not kept.exists()  # exported afresh next time, not reused broken forever


def test_select_refuses_bad_settings_before_probing(monkeypatch):
    from mobilenets.deploy import selection

    asked = []
    monkeypatch.setattr(selection, "ensure_probe", lambda **kw: asked.append(kw))
    with pytest.raises(ValueError, match="batch must be"):
        selection.select(1.0, batch=0, widths=[0.25], resolutions=[128], progress=False)
    with pytest.raises(ValueError, match="threads must be"):
        selection.select(1.0, threads=0, widths=[0.25], resolutions=[128], progress=False)
    if not cpu.cpu_features().bf16:
        with pytest.raises(ValueError, match="bf16 is not accelerated"):
            selection.select(1.0, precision="bf16", widths=[0.25], resolutions=[128], progress=False)
    assert asked == []


def test_a_probe_on_a_busy_machine_says_so(monkeypatch, tmp_path, capsys):
    """Sub-millisecond timings on a loaded machine rank runtimes by how they cope with contention:
    the probe records the load average and `bench --probe` and `env` say to probe again when idle."""
    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "make_runner", _fake_exporter([]))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    cores = cpu.schedulable_cores()
    monkeypatch.setattr(probe, "_other_load", lambda start, end: 0.0)
    monkeypatch.setattr(probe, "_load_average", lambda: 4.0 * cores)  # a job that just ended: not contention
    assert main(["bench", "--probe", "--no-progress"]) == 0
    assert "busy" not in capsys.readouterr().err and probe.load_probe()["other_load"] == 0.0
    # the load is judged against the CPUs it was counted on, and the probe records them
    assert probe.load_probe()["load_cores"] == cpu.schedulable_cores() == cores
    monkeypatch.setattr(probe, "_other_load", lambda start, end: 1.5 * cores)
    assert main(["bench", "--probe", "--no-progress"]) == 0
    assert (f"probed on a busy machine (other processes kept {1.5 * cores:.1f} of its {cores} cores busy while it "
            "timed)") in capsys.readouterr().err
    assert main(["env", "--json"]) == 0
    assert "run `mobilenets bench --probe` again when it is idle" in json.loads(capsys.readouterr().out)["probe_warning"]
    monkeypatch.setattr(probe, "_other_load", lambda start, end: None)  # not measurable here: the load average
    assert main(["bench", "--probe", "--no-progress"]) == 0
    assert f"probed on a busy machine (load average {4.0 * cores:.1f} on {cores} cores)" in capsys.readouterr().err


def test_the_probe_measures_the_load_of_other_processes_beside_its_timing(monkeypatch, tmp_path):
    """Real processes, no patching of the measurement: the probe's own work (calls that keep a core
    busy) does not count as load; two busy loops beside it do. Judged against the load already
    there (another job on a CI machine), not as absolute idleness."""
    import subprocess
    import sys
    import time

    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    mode = {"work": "spin"}

    def call():
        end = time.perf_counter() + 0.02
        if mode["work"] == "spin":  # this process's own CPU time
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(0.02)
    monkeypatch.setattr(bench, "make_runner", lambda config, runtime, **kwargs: call)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32"), ("litert", "fp32")])
    if probe._cpu_clock() is None:
        pytest.skip("psutil cannot read CPU times here")
    baseline = probe._others_now(0.5)
    if cpu.schedulable_cores() - baseline < 1:
        pytest.skip(f"this machine's cores are already busy ({baseline:.1f} of {cpu.schedulable_cores()}): nothing to measure")
    own = probe.run_probe(rounds=2, block=10)["other_load"]
    assert own < baseline + 0.5, (own, baseline)  # the probe's own spinning is not other processes' load

    mode["work"] = "sleep"
    n = min(2, cpu.schedulable_cores())
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)  # running
        busy = probe.run_probe(rounds=2, block=10)["other_load"]
    finally:
        for b in burners:
            b.kill()
            b.wait()
    headroom = min(n, cpu.schedulable_cores() - baseline)  # the cores the burners can take from what already runs
    assert busy > baseline + 0.6 * headroom, (busy, baseline, n)


def test_other_load_is_others_cpu_time_per_second():
    from mobilenets.deploy import probe

    assert probe._other_load((0.0, 10.0, 2.0), (2.0, 14.0, 3.0)) == 1.5  # (4 - 1) CPU-s over 2 s
    assert probe._other_load((0.0, 10.0, 2.0), (1.0, 10.5, 3.0)) == 0.0  # our own time is not others'
    assert probe._other_load((1.0, 0.0, 0.0), (1.0, 5.0, 0.0)) is None  # no time passed
    assert probe._other_load(None, (1.0, 5.0, 0.0)) is None


def test_without_psutil_the_load_average_stands_in(monkeypatch, tmp_path):
    import sys

    from mobilenets.deploy import bench, probe

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    assert probe._cpu_clock() is None
    monkeypatch.setattr(probe, "_load_average", lambda: 0.25)
    assert probe._others_now(0.0) == 0.25
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "make_runner", _fake_exporter([]))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    made = probe.run_probe(rounds=1, block=1)
    assert made["other_load"] is None and made["load_average"] == 0.25 and made["results"]


def test_every_timed_turn_of_the_probe_starts_after_settling(monkeypatch, tmp_path):
    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    order = []

    def make_runner(config, runtime, **kwargs):
        return lambda: order.append(runtime)
    monkeypatch.setattr(bench, "make_runner", make_runner)
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32"), ("litert", "fp32")])
    from mobilenets.deploy import timing

    monkeypatch.setattr(timing, "settle", lambda fn, seconds: order.append("settle"))
    probe.run_probe(rounds=2, block=2)
    timing = order[10:]  # after each runtime's 5 warm-up calls
    assert timing == ["settle", "onnxruntime", "onnxruntime", "settle", "litert", "litert"] * 2


def test_a_busy_probe_is_taken_again_once_the_machine_is_idle(monkeypatch, tmp_path, capsys):
    """A probe taken under load ranked contention, not speed: bench and select measure again by
    themselves when the machine is idle (the kept files make it seconds), not while it is still
    busy, and keep the busy probe if the new one fails."""
    import time

    from mobilenets.deploy import bench, probe

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    monkeypatch.setenv(probe.AUTO_PROBE_ENV, "1")
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(bench, "make_runner", _fake_exporter(calls))
    monkeypatch.setattr(probe, "_pairs", lambda: [("onnxruntime", "fp32")])
    cores = cpu.schedulable_cores()
    load = {"other": 1.5 * cores}
    monkeypatch.setattr(probe, "_other_load", lambda start, end: load["other"])
    monkeypatch.setattr(probe, "_others_now", lambda: load["other"])
    busy = probe.run_probe(rounds=1, block=1)
    assert probe.probed_under_load(busy) and calls == [("exported", "onnxruntime", "fp32")]
    assert probe.ensure_probe() == busy and len(calls) == 1  # still busy: kept, not measured again

    load["other"] = 0.0
    assert probe.ensure_probe() == busy and len(calls) == 1  # idle now, but the busy probe is fresh: kept
    clock = {"now": time.time() + probe.REPROBE_AFTER_S + 1}  # ten minutes later
    monkeypatch.setattr(probe, "_now", lambda: clock["now"])
    load["other"] = 0.4 * cores  # not busy, but not clearly idle either: kept
    assert probe.ensure_probe() == busy and len(calls) == 1
    load["other"] = 0.0
    again = probe.ensure_probe()
    assert "taken on a busy machine and it is idle now" in capsys.readouterr().err
    assert again["other_load"] == 0.0 and not probe.probed_under_load(again)
    assert calls[1:] == [("reused", "onnxruntime", "fp32")] and probe.load_probe() == again
    assert probe.ensure_probe() == again and len(calls) == 2  # an idle probe is kept

    load["other"] = 1.5 * cores  # a busy probe again, then a re-probe that fails
    busy = probe.run_probe(rounds=1, block=1)
    clock["now"] += probe.REPROBE_AFTER_S + 1
    load["other"] = 0.0

    def boom(**kwargs):
        raise RuntimeError("the exporter broke")
    monkeypatch.setattr(probe, "run_probe", boom)
    assert probe.ensure_probe() == busy
    assert "probe failed (RuntimeError: the exporter broke): keeping the earlier probe" in capsys.readouterr().err


def test_only_the_code_that_makes_the_probe_files_keys_them(tmp_path):
    """An edit to training or the CLI keeps the probe's exported files; one to the model, the
    quantizer or an exporter makes them again."""
    from mobilenets.deploy import probe

    for part in ("_utils", "layers", "models", "quant", "deploy/formats", "train", "cli"):
        (tmp_path / part).mkdir(parents=True)
        (tmp_path / part / "x.py").write_text("a = 1\n")
    (tmp_path / "config.py").write_text("b = 1\n")
    first = probe._code_digest(tmp_path)
    for part in ("train", "cli"):
        (tmp_path / part / "x.py").write_text("a = 2\n")
    assert probe._code_digest(tmp_path) == first
    for path in ("models/x.py", "deploy/formats/x.py", "quant/x.py", "config.py"):
        before = probe._code_digest(tmp_path)
        (tmp_path / path).write_text("changed = True\n")
        assert probe._code_digest(tmp_path) != before, path


def test_usable_cores_follow_affinity_and_a_container_cpu_quota(monkeypatch):
    """The cores a process may use: the CPUs it may run on and, in a container, its CPU quota
    (``docker --cpus 1`` on a bigger host); loky reads the cgroup files, we take the minimum."""
    from joblib.externals.loky.backend import context

    monkeypatch.delenv("LOKY_MAX_CPU_COUNT", raising=False)
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(context.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(context, "_cpu_count_cgroup", lambda os_count: os_count)  # no quota
    assert cpu.usable_cores() == 8
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)  # taskset -c 0-2
    assert cpu.usable_cores() == 3
    monkeypatch.setattr(context, "_cpu_count_cgroup", lambda os_count: 1)  # a 1-CPU quota
    assert cpu.usable_cores() == 1
    assert cpu.schedulable_cores() == 3  # the CPUs load is counted on: a quota does not shrink them
    monkeypatch.setitem(sys.modules, "joblib.externals.loky", None)  # no joblib: affinity alone
    assert cpu.usable_cores() == 3


def test_a_cpu_quota_does_not_make_other_tenants_load_look_like_contention():
    """The probe counts other processes' load over every CPU it may be scheduled on, so it judges
    that load against those CPUs, not against a container's smaller CPU quota."""
    from mobilenets.deploy import probe

    shared_host = {"other_load": 2.0, "usable_cores": 1, "load_cores": 8}  # --cpus 1 on 8 CPUs, 2 busy
    assert probe.probed_under_load(shared_host) is None
    assert probe.probed_under_load({**shared_host, "other_load": 5.0})
    assert probe.probed_under_load({"other_load": 2.0, "usable_cores": 2})  # a probe from before load_cores
