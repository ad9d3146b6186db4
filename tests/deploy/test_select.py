"""`mobilenets select`: budget filtering, the Pareto front, accuracy sources, impossible budgets."""

from __future__ import annotations

import itertools
import json

import pytest

from mobilenets.cli import main
from mobilenets.deploy import (
    BenchResult,
    Candidate,
    accuracy_table,
    pareto_front,
    select,
    write_results,
)
from mobilenets.models import OFFICIAL_MODELS

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
    s = select(1e4, runtime="torch", threads=1, widths=[0.25], resolutions=[128, 160], iters=2, warmup=0,
               progress=False)
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
