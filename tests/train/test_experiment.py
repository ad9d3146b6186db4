"""The paper's ablation tables retrained on CIFAR-10: specification, reports, an end-to-end run."""

import csv
import json
import math

import pytest
from conftest import need_data

from mobilenets.analysis import PAPER_ROWS
from mobilenets.cli import main as cli_main
from mobilenets.train import TABLES, ExperimentRun, run_experiment, write_reports


def test_every_run_stands_for_a_row_of_the_paper():
    for table, (title, runs) in TABLES.items():
        number = int(table.removeprefix("table"))
        names = {r.model for r in PAPER_ROWS if r.table == number}
        assert {run.paper_model for run in runs} <= names, table
        assert len({run.name for run in runs}) == len(runs) and title
    # Table 7 applies the paper's resolution multipliers to 32 px
    for run in TABLES["table7"][1]:
        rho = int(run.paper_model.rsplit("-", 1)[1]) / 224
        assert run.input_size == round(32 * rho)
    # runs with equal settings share a folder across tables
    assert TABLES["table6"][1][0].name == TABLES["table7"][1][0].name == TABLES["table4"][1][1].name


def _fake_rows():
    rows = []
    for i, (run, top1) in enumerate(zip(TABLES["table6"][1], (90.1, 88.0, 85.5, 80.2))):
        rows.append({"table": "table6", "name": run.name, "model": run.label, "tag": run.tag("table6"),
                     "paper_model": run.paper_model,
                     "width": run.width, "variant": run.variant, "input_size": run.input_size, "epochs": 30,
                     "train_images": 50000, "val_images": 10000, "val_top1": top1, "val_top5": 99.0,
                     "best_val_top1": top1, "mult_adds": int(175e6 * run.width ** 2),
                     "params": int(3.2e6 * run.width ** 2),
                     "wall_seconds": 60.0, "paper_top1": 70.6 - i, "paper_mult_adds_m": 569.0 / (i + 1),
                     "paper_params_m": 4.2 / (i + 1), "run_dir": f"/x/{run.name}"})
    return rows


def test_reports_are_markdown_csv_and_png(tmp_path):
    files = write_reports("table6", "MobileNet width multiplier", _fake_rows(), tmp_path)
    assert [f.rsplit(".", 1)[1] for f in files] == ["md", "csv", "png"]
    md = (tmp_path / "table6.md").read_text()
    assert "| 0.25 MobileNet (32 px) | 80.20% | 10.9 M | 0.20 M | 0.25 MobileNet-224 |" in md
    assert md.count("\n| ") == 5  # header and four rows
    rows = list(csv.DictReader((tmp_path / "table6.csv").open()))
    assert len(rows) == 4 and float(rows[0]["val_top1"]) == 90.1 and rows[0]["paper_model"] == "1.0 MobileNet-224"
    png = (tmp_path / "table6.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob(".*.tmp"))


def test_unknown_table(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        run_experiment("table9", tmp_path, tmp_path)


@pytest.mark.slow
@pytest.mark.data
def test_table6_end_to_end_on_a_cifar_subset(tmp_path, capsys):
    archive = need_data("cifar10-jpeg.tar.gz")
    out = tmp_path / "exp"
    def args(epochs="1"):
        return ["experiment", "table6", "--data", str(archive), "--out", str(out), "--epochs", epochs, "--subset",
                "100", "--val-subset", "50", "--batch-size", "50", "--device", "cpu", "--no-progress", "--json",
                "--threads", "1"]

    assert cli_main(args()) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "finished" and len(result["rows"]) == 4
    for suffix in ("md", "csv", "png"):
        assert (out / f"table6.{suffix}").is_file()
    rows = result["rows"]
    assert [r["width"] for r in rows] == [1.0, 0.75, 0.5, 0.25]
    assert all(0 <= r["val_top1"] <= 100 and r["epochs"] == 1 for r in rows)
    adds = [r["mult_adds"] for r in rows]
    assert adds == sorted(adds, reverse=True) and adds[0] == 175_556_608  # α = 1.0, 10 classes, 32 px, stride 8
    assert math.isclose(rows[0]["paper_top1"], 70.6)
    for r in rows:
        summary = json.loads((out / r["name"] / "summary.json").read_text())
        assert summary["val_top1"] == r["val_top1"] and (out / r["name"] / "checkpoint.pt").is_file()
    # a rerun reuses the finished runs
    stamps = {r["name"]: (out / r["name"] / "checkpoint.pt").stat().st_mtime_ns for r in rows}
    assert cli_main(args()) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["val_top1"] for r in again["rows"]] == [r["val_top1"] for r in rows]
    assert stamps == {r["name"]: (out / r["name"] / "checkpoint.pt").stat().st_mtime_ns for r in rows}
    # ... but not with other settings
    assert cli_main(args("2")) == 2
    assert "trained with epochs=1, not 2" in capsys.readouterr().err


def test_run_names():
    assert ExperimentRun("x", width=0.5, variant="shallow", input_size=23).name == "shallow-a0.5-r23"
