"""Exporting a detector: the graph a runtime runs is the part before decoding and NMS, a
normalized ``(N, 3, R, R)`` batch → box encodings ``(N, A, 4)`` and class scores ``(N, A, C)``
(sigmoid applied), exactly what Google's TFLite file feeds its ``TFLite_Detection_PostProcess``.
Decoding (torchvision's box coder) and NMS (``batched_nms``) then run on those tensors, as for the
PyTorch model. Every file is verified in its runtime against PyTorch on real images (fp32: max
|Δ|; int8: the 20 best anchors' classes) and renamed into place only then."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import list_images, load_image
from ..data.detection import open_detection_data
from ..inference.detect import resize_for_detector
from ..quant import fuse
from .export import ExportReport
from .formats import REGISTRY
from .formats.onnx import ort_session_options, write_onnx_int8
from .formats.openvino import openvino_config
from .support import need

__all__ = ["DetectorGraph", "DETECTOR_FORMATS", "export_detector", "open_detector_runtime"]

DETECTOR_FORMATS = ("onnx", "openvino")


class DetectorGraph(nn.Module):
    """The exportable part of an SSD: ``forward_raw`` with sigmoid scores."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, logits = self.detector.forward_raw(x)
        return boxes, torch.sigmoid(logits)


def open_detector_runtime(path: str | os.PathLike, format: str, *, threads: int | None = None,
                          precision: str = "fp32") -> Any:
    """A function ``(N, 3, R, R) float32 → (boxes (N, A, 4), scores (N, A, C))`` running the file."""
    if format == "onnx":
        ort = need("onnxruntime", "onnxruntime", "running ONNX files")
        sess = ort.InferenceSession(str(path), ort_session_options(threads), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: tuple(sess.run(None, {name: x}))

    ov = need("openvino", "openvino", "running OpenVINO files")
    core = ov.Core()
    request = core.compile_model(core.read_model(str(path)), "CPU", openvino_config(threads, precision)) \
        .create_infer_request()

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = request.infer({0: x})
        return tuple(np.array(res[k]) for k in request.model_outputs)
    return run


def _inputs(detector: nn.Module, images: np.ndarray) -> np.ndarray:
    mean = np.asarray(detector.transform.image_mean, np.float32)[None, :, None, None]
    std = np.asarray(detector.transform.image_std, np.float32)[None, :, None, None]
    return ((images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0) - mean) / std


def _calibration_images(detector: nn.Module, source: Any, count: int) -> np.ndarray:
    """(N, R, R, 3) uint8 from a folder of images (or a detection dataset folder / archive)."""
    r = detector.resolution
    path = Path(source)
    files = list_images([path]) if path.is_dir() else []
    if not files:
        files = [s.path for s in open_detection_data(path, "train").samples]
    arrays = []
    for f in files[:count * 2]:
        try:
            arrays.append(resize_for_detector(load_image(f), r))
        except ValueError:  # an unreadable image: skipped, the next one is read instead
            continue
        if len(arrays) == count:
            break
    if not arrays:
        raise ValueError(f"{source}: no readable calibration images")
    return np.stack(arrays)


def export_detector(detector: nn.Module, format: str, out: str | os.PathLike, *, int8: bool = False,
                    calibration: Any = None, calibration_images: int = 16, threads: int | None = None) -> ExportReport:
    """Write ``detector``'s raw graph as ``format`` (``onnx`` or ``openvino``) at ``out``, verified."""
    if format not in DETECTOR_FORMATS:
        raise ValueError(f"a detector exports to {', '.join(DETECTOR_FORMATS)}, not {format!r}")
    if int8 and format != "onnx":
        raise ValueError("int8 detector export is ONNX (QDQ, ONNX Runtime's quantizer); use --format onnx")
    if int8 and calibration is None:
        raise ValueError("--int8 needs --calibration DIR (real images, e.g. coco128's train images)")
    fmt = REGISTRY[format]
    out = Path(out)
    if out.suffix not in fmt.suffixes:
        raise ValueError(f"--out {out}: a {format} file ends in {fmt.suffix}")
    t0 = time.perf_counter()
    graph = DetectorGraph(fuse(detector.eval())).eval()
    r = detector.resolution
    example = torch.zeros(1, 3, r, r)
    if calibration is not None:
        images = _calibration_images(detector, calibration, calibration_images)
    else:
        images = np.random.default_rng(0).integers(0, 256, (4, r, r, 3), dtype=np.uint8)
    x = _inputs(detector, images)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.is_dir() else None))
    try:
        tmp = tmpdir / out.name
        if int8:
            write_onnx_int8(graph, example, str(tmp), 1, x, calibrate_method="MinMax")
        else:
            fmt.write(graph, example, str(tmp), 1)
        run = open_detector_runtime(tmp, format, threads=threads, precision="int8" if int8 else "fp32")
        with torch.no_grad():
            ref_boxes, ref_scores = graph(torch.from_numpy(x))
        got_boxes, got_scores = [], []
        for i in range(x.shape[0]):
            b, sc = run(np.ascontiguousarray(x[i:i + 1]))
            got_boxes.append(b)
            got_scores.append(sc)
        gb, gs = np.concatenate(got_boxes), np.concatenate(got_scores)
        diff = float(max(np.abs(gb - ref_boxes.numpy()).max(), np.abs(gs - ref_scores.numpy()).max()))
        top = np.argsort(-ref_scores.numpy()[..., 1:].max(-1), axis=1)[:, :20]
        ref_cls = np.take_along_axis(ref_scores.numpy()[..., 1:].argmax(-1), top, 1)
        got_cls = np.take_along_axis(gs[..., 1:].argmax(-1), top, 1)
        agreement = float((ref_cls == got_cls).mean())
        if not int8 and diff > 1e-3:
            raise ValueError(f"the {format} file differs from PyTorch by {diff:.2g} (> 1e-3); nothing written")
        if int8 and agreement < 0.8:
            raise ValueError(f"the int8 file keeps the class of only {100 * agreement:.0f}% of the 20 best anchors "
                             "(< 80%); nothing written")
        files = []
        for f in sorted(tmpdir.iterdir()):
            dest = out.with_suffix(f.suffix) if f.suffix != out.suffix else out
            os.replace(f, dest)
            files.append(str(dest))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return ExportReport(path=str(out), format=format, files=files, size_bytes=sum(os.path.getsize(f) for f in files),
                        resolution=r, batch=1, int8=int8, toolchain=fmt.describe(int8) + " (detector: raw boxes + "
                        "sigmoid scores; decode + NMS outside)", runtime=fmt.runtime, verify_inputs=int(x.shape[0]),
                        max_abs_diff=diff, tolerance=None if int8 else 1e-3, top1_agreement=agreement, cosine=1.0,
                        calibration_images=int(images.shape[0]) if calibration is not None else 0,
                        calibration_source=str(calibration) if calibration is not None else None,
                        verify_source="real" if calibration is not None else "random",
                        seconds=time.perf_counter() - t0)
