"""The paper's Table 13 (COCO object detection with a MobileNet V1 body) at the scale of a small CPU.

The paper trained SSD300 and Faster R-CNN (300 and 600 px) with a 1.0 MobileNet body on COCO
trainval for days on GPUs and reports COCO mAP: 19.3, 16.4 and 19.8. What runs here, on COCO128
(the first 128 images of COCO train2017 and of val2017, ``../shared/data/coco128.tar.gz``):

- ``ssd300-coco``: Google's official SSD MobileNet V1 COCO file (the TFLite starter model, a
  COCO-trained SSD300 whose body is α = 0.75) ported to PyTorch and evaluated as it is: the one
  row with COCO training behind it, and so the one comparable to the paper's number (though COCO128
  val is 128 images of val2017, not test-dev, and Google's training set may include them).
- ``ssd300``, ``ssdlite300``: SSD300 (1×1 predictors, the paper's) and SSDLite (3×3 depthwise +
  1×1 predictors, not in the paper) with Google's ImageNet-trained 1.0-224 body (the official
  quantized embedding extractor), the body frozen and its maps cached, the extra layers and
  predictors trained from scratch on COCO128 train for a few epochs (recipe ``ssd_tf``).
- ``frcnn300``: Faster R-CNN 300 with the same body, trained end to end (TF's 300 proposals,
  64 RoIs per image). ``frcnn600`` (4× the pixels) only with ``rows=...`` naming it: at the default
  scale it costs more than the rest of the table together.

The rows trained here see a few hundred images instead of COCO's 118k: their mAP measures that the
pipeline learns, not what the architecture reaches. Beside each: its exact Mult-Adds and
parameters (:func:`mobilenets.cost`, at α = 1 and the row's input as in the paper; Google's file at
its α = 0.75) and the paper's printed numbers (:data:`mobilenets.analysis.paper.PAPER_ROWS`).

At the default scale (:data:`DEFAULT_SCALE`) the four default rows took 4, 10, 11 and 7 minutes
(32 in all) on a 2-core AMD EPYC that other jobs kept busy.

Every trained row is a normal run in ``out/<name>/`` (an interrupted experiment resumes; a rerun
skips finished runs); ``out/table13.md``, ``.csv`` and ``.png`` (mAP against Mult-Adds) are written
like the other experiments' reports. The weights files are looked for beside the data (its folder's
``tflite/``) or in ``$MOBILENETS_DATA/tflite/``, or given as ``ssd_weights`` / ``body_weights``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._utils import atomic_write
from ..analysis import PAPER_ROWS
from .experiment import write_table_files
from .settings import TrainConfig
from .trainer import train

__all__ = ["TABLE13_ROWS", "Table13Row", "run_table13", "write_table13_reports"]

SSD_FILE = "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
BODY_FILE = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
TITLE = "MobileNet V1 object detection (COCO)"


@dataclass(frozen=True)
class Table13Row:
    """One model of the table: what is built, how it gets its weights, and the paper's row."""

    name: str
    arch: str  # ssd | ssdlite | faster_rcnn
    resolution: int
    source: str  # "coco": Google's COCO SSD, evaluated; "imagenet": Google's ImageNet body, trained here
    paper_model: str | None  # the row name in PAPER_ROWS (table 13), None: not in the paper
    label: str
    default: bool = True  # run unless rows= names the ones to run


TABLE13_ROWS: tuple[Table13Row, ...] = (
    Table13Row("ssd300-coco", "ssd", 300, "coco", "SSD300 MobileNet",
               "SSD300 MobileNet, Google's COCO weights (α 0.75)"),
    Table13Row("ssd300", "ssd", 300, "imagenet", "SSD300 MobileNet", "SSD300 MobileNet, ImageNet body, trained here"),
    Table13Row("ssdlite300", "ssdlite", 300, "imagenet", None, "SSDLite300 MobileNet, ImageNet body, trained here"),
    Table13Row("frcnn300", "faster_rcnn", 300, "imagenet", "Faster-RCNN 300 MobileNet",
               "Faster-RCNN 300 MobileNet, ImageNet body, trained here"),
    Table13Row("frcnn600", "faster_rcnn", 600, "imagenet", "Faster-RCNN 600 MobileNet",
               "Faster-RCNN 600 MobileNet, ImageNet body, trained here", default=False),
)

# The scale a 2-core CPU runs in minutes per row: (epochs, training images, evaluation images), and
# the batch (8: more optimizer steps from few images; the recipe's lr is scaled to it).
DEFAULT_SCALE = {"ssd": (10, 128, 128), "ssdlite": (10, 128, 128), "faster_rcnn": (2, 32, 32)}
DEFAULT_BATCH = 8


def _find(name: str, data: Path, given: str | os.PathLike | None) -> Path | None:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ValueError(f"{path}: no such weights file")
        return path
    places = [data.parent / "tflite", data / "tflite"]
    if os.environ.get("MOBILENETS_DATA"):
        places.append(Path(os.environ["MOBILENETS_DATA"]) / "tflite")
    return next((p / name for p in places if (p / name).is_file()), None)


def _paper_row(model: str | None) -> Any:
    if model is None:
        return None
    return next(r for r in PAPER_ROWS if r.table == 13 and r.model == model)


def _cost(arch: str, resolution: int, width: float) -> tuple[int, int]:
    import torch

    from ..analysis import cost
    from ..models.detection import faster_rcnn_mobilenet_v1, ssd_mobilenet_v1

    with torch.device("meta"):
        model = (faster_rcnn_mobilenet_v1(width, min_size=resolution) if arch == "faster_rcnn"
                 else ssd_mobilenet_v1(width, resolution=resolution, head=arch))
    report = cost(model, resolution)
    return int(report.mult_adds), int(report.params)


def run_table13(data: str | os.PathLike, out: str | os.PathLike, *, rows: list[str] | tuple[str, ...] | None = None,
                epochs: int | None = None, subset: int | None = None, val_subset: int | None = None,
                device: str | None = None, batch_size: int | None = None, seed: int = 0, recipe: str | None = None,
                progress: bool = True, ssd_weights: str | os.PathLike | None = None,
                body_weights: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate / train the rows of Table 13 (``rows``: names from :data:`TABLE13_ROWS`, default
    all but ``frcnn600``) on a COCO or YOLO detection set (COCO128) and write the reports.

    ``epochs``, ``subset`` (training images) and ``val_subset`` (evaluation images) default per
    architecture to :data:`DEFAULT_SCALE`, ``batch_size`` to :data:`DEFAULT_BATCH`, ``recipe`` to
    ``ssd_tf`` (the TF OD API's RMSprop, its lr scaled to the batch). Extra keyword options go to
    every run's :class:`TrainConfig` (amp, workers, threads, ...). Returns ``{"status", "rows",
    "files"}``; ``"interrupted"`` when a run was stopped by a signal (rerun to continue)."""
    from ..inference.detect import evaluate_detector
    from ..weights import load_detector

    data, out = Path(data), Path(out)
    chosen = [r for r in TABLE13_ROWS if (r.name in rows if rows is not None else r.default)]
    unknown = set(rows or ()) - {r.name for r in TABLE13_ROWS}
    if unknown:
        raise ValueError(f"unknown Table 13 row(s) {', '.join(sorted(unknown))}; choose from: "
                         f"{', '.join(r.name for r in TABLE13_ROWS)}")
    results: list[dict[str, Any]] = []
    for row in chosen:
        run_dir = out / row.name
        n_epochs, n_train, n_val = DEFAULT_SCALE[row.arch]
        n_val = val_subset or n_val
        if row.source == "coco":
            weights = _find(SSD_FILE, data, ssd_weights)
            if weights is None:
                raise ValueError(f"row {row.name} needs Google's {SSD_FILE} (beside the data in tflite/, "
                                 "$MOBILENETS_DATA/tflite/, or ssd_weights=)")
            done = run_dir / "summary.json"
            if done.is_file() and json.loads(done.read_text()).get("val_images") == n_val:
                summary = json.loads(done.read_text())
            else:
                t0 = time.perf_counter()
                model = load_detector(weights)
                m = evaluate_detector(model, data, split="val", subset=n_val, progress=progress)
                summary = {"status": "finished", "val_map": m["map"], "val_map50": m["map50"],
                           "val_images": m["images"], "train_images": 0, "epochs": 0,
                           "width": model.config.width_multiplier, "wall_seconds": time.perf_counter() - t0,
                           "weights": str(weights)}
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(done, lambda tmp, s=summary: Path(tmp).write_text(json.dumps(s, indent=1)))
        else:
            body = _find(BODY_FILE, data, body_weights)
            if body is None:
                raise ValueError(f"row {row.name} needs Google's {BODY_FILE} (beside the data in tflite/, "
                                 "$MOBILENETS_DATA/tflite/, or body_weights=)")
            config = TrainConfig(task="detection", arch=row.arch, data=data, out=run_dir, init=body,
                                 resolution=row.resolution, epochs=epochs or n_epochs, subset=subset or n_train,
                                 val_subset=n_val, batch_size=batch_size or DEFAULT_BATCH, device=device, seed=seed,
                                 recipe=recipe or "ssd_tf", freeze_backbone=row.arch != "faster_rcnn", resume=True,
                                 progress=progress, **options)
            s = train(config)
            if s.get("status") != "finished":
                return {"status": "interrupted", "rows": results, "files": [], "stopped_at": str(run_dir)}
            summary = {"status": "finished", "val_map": s["val_map"], "val_map50": s["val_map50"],
                       "val_images": s["settings"].get("val_images"), "train_images": s["settings"].get("train_images"),
                       "epochs": s["epochs"], "width": s["config"]["width_multiplier"],
                       "wall_seconds": s["wall_seconds"], "weights": str(body)}
        results.append(_row(row, summary, run_dir))
    files = write_table13_reports(results, out) if results else []
    return {"status": "finished", "rows": results, "files": files}


def _row(row: Table13Row, summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    paper = _paper_row(row.paper_model)
    mult_adds, params = _cost(row.arch, row.resolution, float(summary["width"]))
    return {
        "table": "table13", "name": row.name, "model": row.label, "tag": row.name, "arch": row.arch,
        "resolution": row.resolution, "width": summary["width"], "source": row.source,
        "paper_model": row.paper_model or "", "epochs": summary["epochs"], "train_images": summary["train_images"],
        "val_images": summary["val_images"], "val_map": 100 * float(summary["val_map"]),
        "val_map50": 100 * float(summary["val_map50"]), "mult_adds": mult_adds, "params": params,
        "paper_map": paper.top1 if paper else None,
        "paper_mult_adds_b": float(paper.mult_adds) if paper else None,
        "paper_params_m": float(paper.params) if paper else None,
        "wall_seconds": summary["wall_seconds"], "run_dir": str(run_dir),
    }


def write_table13_reports(rows: list[dict[str, Any]], out: str | os.PathLike) -> list[str]:
    """``table13.md``, ``table13.csv`` and ``table13.png`` in ``out``; returns their paths."""
    return write_table_files(out, "table13", rows, _markdown(rows), lambda tmp: _plot(rows, tmp))


def _num(v: float | None, fmt: str, unit: str = "") -> str:
    return "—" if v is None else format(v, fmt) + unit


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Table 13 on COCO128: {TITLE}",
        "",
        ("Ours: COCO mAP@[.5:.95] (and AP50) on COCO128 val2017 images; the trained rows start from Google's "
         "ImageNet-trained 1.0 MobileNet body and see only the COCO128 training images for the epochs shown, so "
         "their mAP shows that the pipeline learns, not what the architecture reaches with COCO's 118k images. "
         "Exact Mult-Adds and parameters of the model used, at its input size. Paper: COCO mAP, Mult-Adds and "
         "parameters as printed in Howard et al. (2017), Table 13 (trained on COCO trainval for days on GPUs)."),
        "",
        ("| Model | α | input | epochs × images | mAP (ours) | AP50 (ours) | Mult-Adds (ours) | Params (ours) "
         "| Paper row | mAP (paper) | Mult-Adds (paper) | Params (paper) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        trained = f"{r['epochs']} × {r['train_images']}" if r["epochs"] else "— (COCO-trained)"
        lines.append(
            f"| {r['model']} | {r['width']:g} | {r['resolution']} | {trained} | {r['val_map']:.2f} "
            f"| {r['val_map50']:.2f} | {r['mult_adds'] / 1e9:.2f} B | {r['params'] / 1e6:.2f} M "
            f"| {r['paper_model'] or '— (not in the paper)'} | {_num(r['paper_map'], '.1f')} "
            f"| {_num(r['paper_mult_adds_b'], 'g', ' B')} | {_num(r['paper_params_m'], 'g', ' M')} |")
    n = {r["val_images"] for r in rows}
    lines += ["", f"Evaluated on {', '.join(str(v) for v in sorted(n))} COCO128 val2017 image(s).", ""]
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    panels = (("ours: COCO128 val", [(r["mult_adds"] / 1e9, r["val_map"], r["name"]) for r in rows]),
              ("paper: COCO", [(r["paper_mult_adds_b"], r["paper_map"], r["paper_model"]) for r in rows
                               if r["paper_map"] is not None]))
    for k, (name, points) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        seen = set()
        for i, (x, y, label) in enumerate(points):
            if (x, y, label) in seen:
                continue
            seen.add((x, y, label))
            ax.plot([x], [y], "o", color=f"C{k}")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4 if i % 2 == 0 else -10), fontsize=7)
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.2)
        ax.set_xlabel("Billion Mult-Adds (log scale)")
        ax.set_ylabel("COCO mAP@[.5:.95] (%)")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Table 13: {TITLE} — mAP vs Mult-Adds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
