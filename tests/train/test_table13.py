"""``mobilenets experiment table13``: the paper's Table 13 rows at CPU scale on COCO128 (reports,
a tiny real run, the CLI's errors)."""

from __future__ import annotations

import csv

import pytest
from conftest import need_data

from mobilenets.cli import main
from mobilenets.train.experiment import run_experiment
from mobilenets.train.table13 import TABLE13_ROWS, run_table13, write_table13_reports

SSD = ("tflite", "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite")
BODY = ("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")


def _row(name, paper_map, **kw):
    row = {"table": "table13", "name": name, "model": name, "tag": name, "arch": "ssd", "resolution": 300,
           "width": 1.0, "source": "imagenet", "paper_model": "SSD300 MobileNet" if paper_map else "", "epochs": 2,
           "train_images": 8, "val_images": 8, "val_map": 1.5, "val_map50": 4.0, "mult_adds": 1.237e9,
           "params": 6.82e6, "paper_map": paper_map, "paper_mult_adds_b": 1.2 if paper_map else None,
           "paper_params_m": 6.8 if paper_map else None, "wall_seconds": 1.0, "run_dir": "x"}
    row.update(kw)
    return row


def test_reports_have_ours_beside_the_papers_rows(tmp_path):
    rows = [_row("ssd300", 19.3), _row("ssdlite300", None, mult_adds=0.8e9)]
    files = write_table13_reports(rows, tmp_path)
    assert [f.rsplit(".", 1)[1] for f in files] == ["md", "csv", "png"]
    md = (tmp_path / "table13.md").read_text()
    assert "| ssd300 | 1 | 300 | 2 × 8 | 1.50 | 4.00 | 1.24 B | 6.82 M | SSD300 MobileNet | 19.3 | 1.2 B | 6.8 M |" in md
    assert "— (not in the paper)" in md
    assert [r["name"] for r in csv.DictReader((tmp_path / "table13.csv").open())] == ["ssd300", "ssdlite300"]
    assert (tmp_path / "table13.png").read_bytes()[:4] == b"\x89PNG"
    assert {r.paper_model for r in TABLE13_ROWS} >= {"SSD300 MobileNet", "Faster-RCNN 300 MobileNet",
                                                     "Faster-RCNN 600 MobileNet"}
    with pytest.raises(ValueError, match="unknown Table 13 row"):
        run_table13(tmp_path, tmp_path / "out", rows=["yolo"])


def test_table13_on_4_coco128_images_writes_the_table_and_reuses_its_runs(tmp_path, monkeypatch, capsys):
    """Google's COCO SSD evaluated, SSD300 trained 1 epoch from Google's ImageNet body (frozen, maps
    cached), on 4 images; a second call reuses both (no retraining) and the CLI prints the rows."""
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")
    ssd, body = need_data(*SSD), need_data(*BODY)
    opts = {"rows": ["ssd300-coco", "ssd300"], "epochs": 1, "subset": 4, "val_subset": 4, "batch_size": 4,
            "ssd_weights": ssd, "body_weights": body, "workers": 0, "threads": 1, "progress": False,
            "tensorboard": False, "verbose": False, "device": "cpu"}
    result = run_table13(data, tmp_path / "t13", **opts)
    assert result["status"] == "finished" and len(result["files"]) == 3
    google, trained = result["rows"]
    assert google["val_images"] == 4 and google["epochs"] == 0 and google["width"] == 0.75
    assert 10 < google["val_map"] <= 100  # COCO-trained: real detections on these val images
    assert google["paper_map"] == 19.3 and abs(google["mult_adds"] / 1e9 - 0.8) < 0.2  # α 0.75: ~0.78 B
    assert trained["epochs"] == 1 and trained["train_images"] == 4 and trained["width"] == 1.0
    assert abs(trained["mult_adds"] / 1.237e9 - 1) < 1e-3 and abs(trained["params"] / 6.82e6 - 1) < 1e-3
    mtime = (tmp_path / "t13" / "ssd300" / "summary.json").stat().st_mtime
    again = run_experiment("table13", data, tmp_path / "t13", recipe="cifar",
                           **{k: v for k, v in opts.items() if k != "progress"}, progress=False)
    assert [r["val_map"] for r in again["rows"]] == [google["val_map"], trained["val_map"]]
    assert (tmp_path / "t13" / "ssd300" / "summary.json").stat().st_mtime == mtime  # reused, not retrained
    assert main(["experiment", "table13", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
