"""`mobilenets select`: budget filtering, the Pareto front, accuracy sources, impossible budgets;
precision as a choice, one progress bar, early stop, --out checked first.

Nothing here times a model except `test_measures_when_no_csv`: latencies are injected (``measure=``
or a stand-in for ``benchmark``), and the CPU is a stand-in (``cpu_features``) so that which
precisions are candidates is the same on every machine.
"""

from __future__ import annotations

import csv
import importlib
import itertools
import json

import pytest
from cpu_kinds import AVX2_EPYC, XEON_AMX

import mobilenets.deploy.cpu as cpu_mod
from mobilenets.analysis import cost
from mobilenets.cli import main
from mobilenets.config import MobileNetConfig
from mobilenets.deploy import (
    BenchResult,
    Candidate,
    accuracy_table,
    pareto_front,
    select,
    write_results,
)
from mobilenets.models import OFFICIAL_MODELS

select_mod = importlib.import_module("mobilenets.deploy.selection")

# Synthetic latencies: TF-slim's Million MACs / 100 ms (so cost order = speed order), except
# 0.75-224, made slower than 1.0-224 so that it is dominated.
LATENCY = {(m.width_multiplier, m.resolution): m.tfslim_macs_m / 100 for m in OFFICIAL_MODELS.values()}
LATENCY[(0.75, 224)] = 6.0


@pytest.fixture
def bench_csv(tmp_path):
    rows = [BenchResult(a, r, "openvino", "fp32", "cpu", 1, 2, 0, 0, ms, ms * 1.1, 1000 / ms, 50)
            for (a, r), ms in LATENCY.items()]
    rows.append(BenchResult(0.35, 224, "openvino", "fp32", "cpu", 1, 2, 0, 0, 0.01, 0.01, 1e5, 50))  # no accuracy known
    rows += [BenchResult(a, r, "onnxruntime", "fp32", "cpu", 1, 2, 0, 0, ms * 2, ms * 2, 500 / ms, 50)
             for (a, r), ms in LATENCY.items()]
    return write_results(rows, tmp_path)["csv"]


def _brute_force_front(cands):
    unique = {(c.latency_ms, c.top1): c for c in reversed(cands)}  # equal points count once
    cands = list(unique.values())
    return sorted((c for c in cands if not any(
        (o.latency_ms <= c.latency_ms and o.top1 >= c.top1) and (o.latency_ms < c.latency_ms or o.top1 > c.top1)
        for o in cands)), key=lambda c: c.latency_ms)


def test_pareto_front_matches_definition():
    import random

    rng = random.Random(0)
    for _ in range(50):
        cands = [Candidate(1.0, 224 + i, rng.choice([1.0, 2.0, 3.0, rng.random() * 5]),
                           0, rng.choice([60.0, 65.0, rng.random() * 80]), "x", 0, 0) for i in range(12)]
        front = pareto_front(cands)
        assert [(c.latency_ms, c.top1) for c in front] == [(c.latency_ms, c.top1) for c in _brute_force_front(cands)]
        assert all(a.latency_ms < b.latency_ms and a.top1 < b.top1 for a, b in itertools.pairwise(front))


def test_selects_most_accurate_within_budget(bench_csv):
    s = select(3.0, bench_csv=bench_csv, runtime="openvino", progress=False)
    assert (s.chosen.width, s.chosen.resolution) == (1.0, 160)  # 68.0 at 2.91 ms
    assert s.chosen.top1 == 68.0 and s.chosen.latency_ms == pytest.approx(2.91)
    assert "1.0 MobileNet-192" in s.reason  # the next step up, and why it was not taken
    labels = [c.label for c in s.pareto]
    assert "0.75 MobileNet-224" not in labels  # dominated by 1.0-224: slower and less accurate
    assert labels[0] == "0.25 MobileNet-128" and labels[-1] == "1.0 MobileNet-224"
    assert any("0.35" in n for n in s.notes)  # bench rows without an accuracy are reported, not used
    assert [(c.latency_ms, c.top1) for c in s.pareto] == \
        [(c.latency_ms, c.top1) for c in _brute_force_front(s.candidates)]


def test_bench_csv_picks_fastest_runtime_without_filter(bench_csv):
    s = select(3.0, bench_csv=bench_csv, progress=False)
    assert s.chosen.latency_ms == pytest.approx(2.91)  # openvino rows are faster than onnxruntime's
    s2 = select(3.0, bench_csv=bench_csv, runtime="onnxruntime", progress=False)
    assert (s2.chosen.width, s2.chosen.resolution) == (0.5, 224)  # 63.3 at 1.50 × 2 ms; 0.75-160 takes 3.24
    with pytest.raises(ValueError, match="no rows for runtime litert"):
        select(3.0, bench_csv=bench_csv, runtime="litert", progress=False)


def test_params_and_mult_adds_limits(bench_csv):
    s = select(10.0, max_params=2e6, bench_csv=bench_csv, runtime="openvino", progress=False)
    assert (s.chosen.width, s.chosen.resolution) == (0.5, 224)
    assert all(c.params <= 2e6 for c in s.pareto)
    s = select(10.0, max_mult_adds=200e6, bench_csv=bench_csv, runtime="openvino", progress=False)
    # 0.75-160 (65.3 at 162 M) beats 1.0-128 (65.2 at 186 M): more accurate and faster
    assert (s.chosen.width, s.chosen.resolution) == (0.75, 160)
    assert all(c.mult_adds <= 200e6 for c in s.pareto)


def test_impossible_budget_names_fastest(bench_csv):
    s = select(0.05, bench_csv=bench_csv, runtime="openvino", progress=False)
    assert s.chosen is None
    assert "no MobileNet fits" in s.reason and "0.25 MobileNet-128" in s.reason and "0.140 ms" in s.reason
    assert s.to_json()["fits"] is False and s.to_json()["width"] is None


def test_accuracy_sources():
    tfslim, notes = accuracy_table("tfslim")
    assert len(tfslim) == 16 and tfslim[(1.0, 224)] == (70.9, "tfslim") and notes == []
    quant, _ = accuracy_table("quant")
    assert quant[(0.5, 160)] == (57.7, "quant")
    paper, notes = accuracy_table("paper")
    assert paper[(1.0, 224)][0] == 70.6 and paper[(0.5, 160)] == (60.2, "paper Table 9")
    assert paper[(0.75, 192)] == (67.2, "tfslim")  # not in the paper: TF-slim's, and said so
    assert len(notes) == 1 and "0.75-192" in notes[0] and "TF-slim" in notes[0]


def test_accuracy_from_csv(tmp_path, bench_csv):
    acc = tmp_path / "acc.csv"
    acc.write_text("width,resolution,top1\n0.25,128,90\n1.0,224,50\n")
    s = select(100.0, accuracy=acc, bench_csv=bench_csv, runtime="openvino", progress=False)
    assert (s.chosen.width, s.chosen.resolution, s.chosen.top1) == (0.25, 128, 90.0)
    assert [c.label for c in s.pareto] == ["0.25 MobileNet-128"]
    bad = tmp_path / "bad.csv"
    bad.write_text("alpha,rho\n1,224\n")
    with pytest.raises(ValueError, match="needs columns width,resolution,top1"):
        accuracy_table(bad)
    with pytest.raises(ValueError, match="paper, tfslim, quant"):
        accuracy_table("imagenet")


def test_measures_when_no_csv():
    s = select(1e4, runtime="torch", precision="fp32", threads=1, widths=[0.25], resolutions=[128, 160], iters=2,
               warmup=0, progress=False)
    assert {(c.width, c.resolution) for c in s.candidates} == {(0.25, 128), (0.25, 160)}
    assert (s.chosen.width, s.chosen.resolution) == (0.25, 160)  # the more accurate of two, both within 10 s
    assert "measured now" in s.runtime


def test_cli_json(bench_csv, capsys):
    rc = main(["select", "--max-latency-ms", "3", "--bench-csv", str(bench_csv), "--runtime", "openvino", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert (out["width"], out["resolution"], out["top1"]) == (1.0, 160, 68.0)
    assert out["latency_ms"] == pytest.approx(2.91)
    assert [p["label"] for p in out["pareto"]][-1] == "1.0 MobileNet-224"


def test_cli_text_and_quantities(bench_csv, capsys):
    rc = main(["select", "--max-latency-ms", "10", "--max-params", "2M", "--max-mult-adds", "100M",
               "--accuracy", "paper", "--bench-csv", str(bench_csv)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("0.5 MobileNet-160")  # 60.2 (paper Table 9) at 77 M Mult-Adds
    assert "Pareto front" in out and "note:" in out


def test_cli_impossible_budget_exit_1(bench_csv, capsys):
    rc = main(["select", "--max-latency-ms", "0.01", "--bench-csv", str(bench_csv), "--runtime", "openvino"])
    out = capsys.readouterr().out
    assert rc == 1 and "no MobileNet fits" in out and "0.25 MobileNet-128" in out


@pytest.mark.parametrize("argv, match", [
    (["select"], "the following arguments are required: --max-latency-ms"),
    (["select", "--max-latency-ms", "0"], "--max-latency-ms must be a number > 0"),
    (["select", "--max-latency-ms", "abc"], "--max-latency-ms must be a number > 0"),
    (["select", "--max-latency-ms", "5", "--max-params", "0M"], "--max-params must be a number > 0"),
    (["select", "--max-latency-ms", "5", "--accuracy", "imagenet"], "paper, tfslim, quant"),
    (["select", "--max-latency-ms", "5", "--bench-csv", "missing.csv"], "no such bench CSV"),
    (["select", "--max-latency-ms", "5", "--runtime", "tvm"], "invalid choice: 'tvm'"),
])
def test_cli_errors_exit_2(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.count("\n") == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- precision as a choice

FASTEST = {"fp32": "onnxruntime", "int8": "litert", "bf16": "openvino"}  # a stand-in for this machine's probe
MADDS = {k: cost(MobileNetConfig(width_multiplier=k[0], resolution=k[1])).mult_adds for k in LATENCY}


class FakeMeasure:
    """Latency = (0.1 ms + Mult-Adds / 100 M per ms) × a factor per precision; records every call."""

    def __init__(self, factors):
        self.factors, self.calls = factors, []

    def latency(self, width, resolution, precision):
        return (0.1 + MADDS[(width, resolution)] / 1e8) * self.factors[precision]

    def __call__(self, width, resolution, runtime, precision):
        self.calls.append((width, resolution, runtime, precision))
        ms = self.latency(width, resolution, precision)
        return ms, 1.1 * ms


@pytest.fixture
def machine(monkeypatch):
    """``machine(features)``: pretend to be that CPU, with FASTEST as its fastest runtime per precision."""
    monkeypatch.setattr(select_mod, "default_runtime", lambda device="cpu", precision="fp32": FASTEST[precision])

    def use(features):
        monkeypatch.setattr(cpu_mod, "cpu_features", lambda: features)
    use(AVX2_EPYC)
    return use


def _brute_force(fake, budget, precisions):
    quant = {(m.width_multiplier, m.resolution): m.quant_top1 for m in OFFICIAL_MODELS.values()}
    top1 = {p: (quant if p == "int8" else {(m.width_multiplier, m.resolution): m.top1
                                          for m in OFFICIAL_MODELS.values()}) for p in precisions}
    fits = [(top1[p][k], -fake.latency(*k, p), k, p) for k in LATENCY for p in precisions
            if fake.latency(*k, p) <= budget]
    return max(fits)[2:] if fits else None


@pytest.mark.parametrize("features, int8_factor, expected", [
    (XEON_AMX, 0.4, "int8"),  # VNNI/AMX: int8 much faster than fp32 → a larger int8 model fits
    (AVX2_EPYC, 2.5, "fp32"),  # AVX2 only: int8 slower than fp32 → fp32 is the answer
])
def test_picks_the_faster_precision_for_the_budget(machine, features, int8_factor, expected):
    machine(features)
    fake = FakeMeasure({"fp32": 1.0, "int8": int8_factor, "bf16": 0.7})
    s = select(2.5, measure=fake, progress=False, prune_margin=None)
    precisions = ["fp32", "int8"] + (["bf16"] if features.bf16 else [])
    assert {c[3] for c in fake.calls} == set(precisions)  # every precision this CPU accelerates is a candidate
    assert all(c[2] == FASTEST[c[3]] for c in fake.calls)  # each in its fastest runtime
    best = _brute_force(fake, 2.5, precisions)
    assert ((s.chosen.width, s.chosen.resolution), s.chosen.precision) == best
    if expected == "int8":
        assert s.chosen.precision == "int8" and s.chosen.runtime == "litert"
    else:
        assert s.chosen.precision in ("fp32", "bf16") and "bf16" not in {c[3] for c in fake.calls}
        assert s.chosen.precision == "fp32" and s.chosen.runtime == "onnxruntime"
    # why: each precision's latency and accuracy for the chosen (α, ρ), and the best per precision
    line = s.comparison_line()
    assert line.startswith(f"{s.chosen.label} on this machine: ")
    assert "int8 in LiteRT" in line and "fp32 in ONNX Runtime" in line and " ms" in line and "top-1" in line
    assert s.why_precision.endswith(f"→ {s.chosen.precision}")
    text = s.format()
    assert line in text and s.why_precision in text and f"{s.chosen.precision} in " in text.splitlines()[0]
    if not features.bf16:
        assert "bf16 not accelerated on this CPU" in line  # reported, never timed as fp32
    out = s.to_json()
    assert out["precision"] == s.chosen.precision and out["runtime"] == s.chosen.runtime
    assert {e["precision"] for e in out["comparison"]} == {"fp32", "int8", "bf16"}


def test_int8_accuracy_is_the_8bit_table_and_says_so(machine):
    s = select(100.0, measure=FakeMeasure({"fp32": 1.0, "int8": 0.5}), progress=False)
    int8 = [c for c in s.candidates if c.precision == "int8"]
    fp32 = [c for c in s.candidates if c.precision == "fp32"]
    assert int8 and fp32 and all(c.top1_source == "quant" for c in int8) and all(c.top1_source == "tfslim" for c in fp32)
    assert (s.chosen.label, s.chosen.precision, s.chosen.top1) == ("1.0 MobileNet-224", "fp32", 70.9)
    assert any("int8 top-1 is TF-slim's published top-1 of Google's 8-bit checkpoints, assumed" in n for n in s.notes)


def test_bf16_only_where_the_cpu_accelerates_it(machine):
    machine(AVX2_EPYC)
    fake = FakeMeasure({"fp32": 1.0, "int8": 1.0, "bf16": 0.5})
    s = select(3.0, measure=fake, progress=False)
    assert "bf16" not in {c[3] for c in fake.calls}
    (bf16,) = [e for e in s.comparison if e["precision"] == "bf16"]
    assert bf16["latency_ms"] is None and "not accelerated on this CPU" in bf16["status"]
    with pytest.raises(ValueError, match="bf16 is not accelerated on this CPU"):
        select(3.0, precision="bf16", measure=fake, progress=False)
    machine(XEON_AMX)
    fake.calls.clear()
    s = select(3.0, measure=fake, progress=False)
    assert {c[2] for c in fake.calls if c[3] == "bf16"} == {"openvino"}
    assert s.chosen.precision == "bf16"  # fp32's accuracy (stated in the notes) at half fp32's latency
    assert any("bf16 top-1 is taken as fp32's" in n for n in s.notes)


def test_one_precision_only(machine):
    fake = FakeMeasure({"fp32": 1.0, "int8": 0.5})
    s = select(3.0, precision="int8", measure=fake, progress=False)
    assert {c[3] for c in fake.calls} == {"int8"} and s.chosen.precision == "int8"
    assert s.why_precision == ""  # nothing to compare
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        select(3.0, precision="fp16", measure=fake, progress=False)
    with pytest.raises(ValueError, match="onnxruntime has no bf16 CPU path"):
        machine(XEON_AMX)
        select(3.0, precision="bf16", runtime="onnxruntime", measure=fake, progress=False)


# ----------------------------------------------------------------------------- early stop

def test_impossible_budget_stops_after_the_cheapest_model(machine):
    fake = FakeMeasure({"fp32": 1.0, "int8": 1.2})
    s = select(0.001, measure=fake, progress=False)
    assert s.chosen is None and "no MobileNet fits" in s.reason
    assert fake.calls == [(0.25, 128, "onnxruntime", "fp32"), (0.25, 128, "litert", "int8")]  # 2 of 32
    assert s.timed == 2 and len(s.not_measured) == 30
    assert any("15 model(s) not timed, assumed over budget" in n and "0.25 MobileNet-128" in n for n in s.notes)
    everything = select(0.001, measure=FakeMeasure({"fp32": 1.0, "int8": 1.2}), progress=False, prune_margin=None)
    assert everything.timed == 32 and everything.fastest.label == s.fastest.label


@pytest.mark.parametrize("budget", [0.2, 0.45, 0.5, 0.8, 1.3, 2.0, 5.0])
def test_early_stop_keeps_the_answer_where_mult_adds_mislead(machine, budget):
    """README's LiteRT int8 latencies on the EPYC: 0.25-224 (41 M Mult-Adds) is 2× slower than 0.5-128 (49 M),
    so latency does not grow with Mult-Adds; pruning only by "at least as wide and as large" keeps the answer."""
    table = {(1.0, 224): 2.03, (1.0, 192): 1.61, (1.0, 160): 1.25, (1.0, 128): 0.77, (0.75, 224): 1.60,
             (0.75, 192): 1.29, (0.75, 160): 1.01, (0.75, 128): 0.61, (0.5, 224): 1.27, (0.5, 192): 0.90,
             (0.5, 160): 0.67, (0.5, 128): 0.43, (0.25, 224): 0.86, (0.25, 192): 0.68, (0.25, 160): 0.49,
             (0.25, 128): 0.30}
    calls = []

    def measure(width, resolution, runtime, precision):
        calls.append((width, resolution))
        return table[(width, resolution)], table[(width, resolution)]

    pruned = select(budget, precision="int8", measure=measure, progress=False)
    n = len(calls)
    full = select(budget, precision="int8", measure=measure, progress=False, prune_margin=None)
    assert len(calls) - n == 16 and n <= 16
    assert (pruned.chosen and (pruned.chosen.label, pruned.chosen.precision)) == \
        (full.chosen and (full.chosen.label, full.chosen.precision))
    if budget == 0.45:
        assert pruned.chosen.label == "0.5 MobileNet-128" and n < 16  # found although 0.25-224 was over 1.5 × budget


def test_one_progress_bar_with_an_overall_count(machine, monkeypatch):
    """The default measurement path (``benchmark`` per model) draws no bars of its own: one bar counts the models."""
    from tqdm import tqdm

    bars = []

    class Counting(tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    seen = []

    def fake_benchmark(widths, resolutions, **kw):
        assert kw["progress"] is False and kw["show_cpu"] is False
        seen.append((widths[0], resolutions[0], kw["precision"]))
        ms = 0.1 + MADDS[(widths[0], resolutions[0])] / 1e8
        return [BenchResult(widths[0], resolutions[0], kw["runtime"], kw["precision"], "cpu", 1, 2, 0, 0, ms, ms,
                            1e3 / ms, 3)]

    bench_mod = importlib.import_module("mobilenets.deploy.bench")
    monkeypatch.setattr(select_mod, "tqdm", Counting)
    monkeypatch.setattr(bench_mod, "tqdm", Counting)
    monkeypatch.setattr(select_mod, "benchmark", fake_benchmark)
    s = select(2.0, progress=True)
    assert len(bars) == 1 and bars[0].n == len(seen) == s.timed == bars[0].total
    assert bars[0].desc.startswith("select")


# ----------------------------------------------------------------------------- --out

def test_out_is_checked_before_measuring(machine, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "results.txt"
    afile.write_text("keep me")
    fake = FakeMeasure({"fp32": 1.0, "int8": 1.0})
    for out, match in ((afile, "results.txt: is a file; give a folder"),
                       (afile / "sub", "sub: cannot be written: .*results.txt is a file, not a folder")):
        with pytest.raises(ValueError, match=match):
            select(3.0, measure=fake, progress=False, out=out)
    assert fake.calls == []

    def must_not_run(*a, **k):
        raise AssertionError("measured before checking --out")

    monkeypatch.setattr(select_mod, "benchmark", must_not_run)
    rc = main(["select", "--max-latency-ms", "3", "--out", str(afile / "sub"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be written" in err and err.count("\n") == 1 and "Traceback" not in err
    assert afile.read_text() == "keep me"


def test_out_writes_json_and_csv_with_precision(machine, tmp_path):
    s = select(2.5, measure=FakeMeasure({"fp32": 1.0, "int8": 0.5}), progress=False, out=tmp_path / "sel")
    data = json.loads((tmp_path / "sel" / "select.json").read_text())
    assert data["precision"] == s.chosen.precision and data["width"] == s.chosen.width
    with open(tmp_path / "sel" / "select.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == s.timed and {r["precision"] for r in rows} == {"fp32", "int8"}
    assert {r["runtime"] for r in rows} == {"onnxruntime", "litert"}
    again = select(2.5, bench_csv=tmp_path / "sel" / "select.csv", progress=False)  # the same answer from the CSV
    assert (again.chosen.label, again.chosen.precision) == (s.chosen.label, s.chosen.precision)


def test_bench_csv_with_both_precisions(tmp_path):
    rows = [BenchResult(a, r, rt, p, "cpu", 1, 2, 0, 0, ms * f, ms * f, 1, 50)
            for (a, r), ms in LATENCY.items() for rt, p, f in (("onnxruntime", "fp32", 1.0), ("litert", "int8", 0.5))]
    path = write_results(rows, tmp_path)["csv"]
    s = select(3.0, bench_csv=path, progress=False)
    assert {c.precision for c in s.candidates} == {"fp32", "int8"}
    assert s.chosen.precision == "int8" and s.chosen.top1_source == "quant"  # 1.0-224 int8 at 2.85 ms: 69.7
    assert (s.chosen.width, s.chosen.resolution) == (1.0, 224)
    only = select(3.0, bench_csv=path, precision="fp32", progress=False)
    assert {c.precision for c in only.candidates} == {"fp32"} and only.chosen.label == "1.0 MobileNet-160"


def test_cli_precision_options(machine, monkeypatch, capsys):
    seen = []

    def fake_benchmark(widths, resolutions, **kw):
        seen.append(kw["precision"])
        return [BenchResult(widths[0], resolutions[0], kw["runtime"], kw["precision"], "cpu", 1, 2, 0, 0, 1.0, 1.0,
                            1e3, 3)]

    monkeypatch.setattr(select_mod, "benchmark", fake_benchmark)
    assert main(["select", "--max-latency-ms", "3", "--int8", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(seen) == {"int8"} and out["precision"] == "int8" and out["runtime"] == "litert"
    seen.clear()
    assert main(["select", "--max-latency-ms", "3", "--precision", "fp32", "--no-progress"]) == 0
    assert set(seen) == {"fp32"}
    seen.clear()
    assert main(["select", "--max-latency-ms", "3", "--no-progress"]) == 0  # auto: both, this CPU has no bf16
    assert set(seen) == {"fp32", "int8"}
    text = capsys.readouterr().out
    assert "on this machine: fp32 in ONNX Runtime" in text and "int8 in LiteRT" in text
    rc = main(["select", "--max-latency-ms", "3", "--int8", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert rc == 2 and "--int8 and --precision fp32 exclude each other" in err and err.count("\n") == 1
