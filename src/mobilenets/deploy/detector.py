"""Exporting a detector: the graph a runtime runs is the part before decoding and NMS, a
normalized ``(N, 3, R, R)`` batch → box encodings ``(N, A, 4)`` and class scores ``(N, A, C)``
(sigmoid applied), exactly what Google's TFLite file feeds its ``TFLite_Detection_PostProcess``.
Decoding (torchvision's box coder) and NMS (``batched_nms``) then run on those tensors, as for the
PyTorch model. Every file is verified in its runtime against PyTorch on real images (fp32: max
|Δ|; int8: the 20 best anchors' classes) and renamed into place only then.

``postprocess`` (``--nms``) puts decoding + NMS into the file, batch 1, where the runtime has it:

- ONNX / OpenVINO: :class:`DetectorPostprocess` exported with the graph (ONNX ``TopK``,
  ``NonMaxSuppression``; OpenVINO converts the ONNX file): outputs ``boxes`` ``(K, 4)`` as
  ``(x1, y1, x2, y2)`` pixels of the R×R input, ``scores`` ``(K,)``, ``labels`` ``(K,)`` (COCO
  category ids), K ≤ ``detections_per_img``, best first. ``"multiclass"``: the best
  ``pre_nms_top_n`` (anchor, class) pairs, the per-class cap, per-class NMS (one
  ``NonMaxSuppression`` over class-shifted boxes) — the first round of the PyTorch model's
  ``nms_mode="multiclass"``; ``"fast"``: each anchor's best class, one class-agnostic NMS.
- TFLite: LiteRT's ``TFLite_Detection_PostProcess`` custom operator (written by our writer,
  :mod:`.formats.tflite_detector`), Google's four outputs (normalized ``(ymin, xmin, ymax, xmax)``
  boxes, 0-based classes, scores, count); ``"multiclass"`` is its ``use_regular_nms=true``
  (per-class NMS, at most 100 kept per class), ``"fast"`` its default fast path (what Google's file
  runs).

:func:`runtime_detections` turns either kind of output into ``{"boxes", "scores", "labels"}``.
"""

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
from .cpu import usable_cores
from .export import ExportReport
from .formats import REGISTRY
from .formats.onnx import ort_session_options, write_onnx_int8
from .formats.openvino import openvino_config
from .support import need, quiet

__all__ = ["DETECTOR_FORMATS", "POSTPROCESS_MODES", "DetectorGraph", "DetectorPostprocess", "export_detector",
           "open_detector_runtime", "runtime_detections"]

DETECTOR_FORMATS = ("onnx", "openvino", "tflite")
POSTPROCESS_MODES = ("multiclass", "fast")


class DetectorGraph(nn.Module):
    """The exportable part of an SSD: ``forward_raw`` with sigmoid scores."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, logits = self.detector.forward_raw(x)
        return boxes, torch.sigmoid(logits)


class DetectorPostprocess(nn.Module):
    """Decoding + NMS as an exportable graph: ``(box encodings (1, A, 4), sigmoid scores (1, A, C))``
    → ``boxes (K, 4)`` (``(x1, y1, x2, y2)`` pixels of the input), ``scores (K,)``, ``labels (K,)``
    (category ids), K ≤ ``detections_per_img``, best first; see the module doc for ``mode``.

    Shapes stay static up to the NMS: candidates beyond the per-class cap or below the detector's
    ``score_thresh`` get score 0 (NMS ranks them last, so they suppress nothing that counts) and
    are dropped after it. ``clip_first=False`` clips the boxes to the input after NMS instead of
    before, as ``TFLite_Detection_PostProcess`` does (the reference its files are checked against)."""

    def __init__(self, detector: nn.Module, mode: str = "multiclass", *, clip_first: bool = True) -> None:
        super().__init__()
        if mode not in POSTPROCESS_MODES:
            raise ValueError(f"unknown postprocess mode {mode!r}; choose one of: {', '.join(POSTPROCESS_MODES)}")
        self.mode = mode
        self.clip_first = clip_first
        self.box_coder = detector.box_coder
        self.resolution = int(detector.resolution)
        self.register_buffer("anchors", detector.anchors_xyxy().detach().cpu())
        self.pool = int(detector.pre_nms_top_n)
        self.cap = int(detector.topk_candidates)
        self.score_thresh = float(detector.score_thresh)
        self.nms_thresh = float(detector.nms_thresh)
        self.detections = int(detector.detections_per_img)

    def forward(self, codes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from torchvision.ops import nms

        fg = scores[0, :, 1:]
        n, c = fg.shape
        if self.mode == "fast":
            best, best_label = fg.max(1)
            cand, anchor_idx = best.topk(min(self.pool, n))
            labels = best_label[anchor_idx]
        else:
            cand, flat = fg.reshape(-1).topk(min(self.pool, n * c))
            anchor_idx, labels = flat // c, flat % c
            earlier = torch.ones(cand.shape[0], cand.shape[0], dtype=torch.bool, device=cand.device).tril(-1)
            rank = ((labels[:, None] == labels[None, :]) & earlier).sum(1)  # among higher-scored of its class
            cand = torch.where(rank < self.cap, cand, torch.zeros_like(cand))
        cand = torch.where(cand > self.score_thresh, cand, torch.zeros_like(cand))
        r = self.resolution
        boxes = self.box_coder.decode_single(codes[0, anchor_idx], self.anchors[anchor_idx])
        if self.clip_first:
            boxes = boxes.clamp(0, r)
        span = r + 1 if self.clip_first else boxes.max() - boxes.min() + 1  # class offsets: beyond any box
        shifted = boxes if self.mode == "fast" else boxes + (labels.to(boxes.dtype) * span)[:, None]
        keep = nms(shifted, cand, self.nms_thresh)[: self.detections]
        keep = keep[cand[keep] > 0]
        return boxes[keep].clamp(0, r), cand[keep], labels[keep] + 1


class _WithPostprocess(nn.Module):
    def __init__(self, graph: nn.Module, post: nn.Module) -> None:
        super().__init__()
        self.net, self.post = graph, post  # (not ``graph``: torch.export's modules have one)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.post(*self.net(x))


def runtime_detections(outputs: tuple[np.ndarray, ...], format: str, resolution: int) -> dict[str, torch.Tensor]:
    """One image's ``{"boxes" (x1, y1, x2, y2 pixels of the input), "scores", "labels"}`` from a
    ``postprocess`` file's outputs (TFLite's four of ``TFLite_Detection_PostProcess``, or the
    ONNX / OpenVINO graph's three)."""
    if format == "tflite":
        boxes, classes, scores, count = outputs
        k = int(np.asarray(count).reshape(-1)[0])
        b = torch.from_numpy(np.ascontiguousarray(boxes[0, :k][:, [1, 0, 3, 2]] * resolution, dtype=np.float32))
        b = b.clamp(0, resolution)  # the operator does not clip; ours and the PyTorch model's boxes are clipped
        return {"boxes": b, "scores": torch.from_numpy(np.asarray(scores[0, :k], np.float32)),
                "labels": torch.from_numpy(np.asarray(classes[0, :k]).round().astype(np.int64) + 1)}
    boxes, scores, labels = outputs
    return {"boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "scores": torch.from_numpy(np.asarray(scores, np.float32).reshape(-1)),
            "labels": torch.from_numpy(np.asarray(labels).astype(np.int64).reshape(-1))}


def open_detector_runtime(path: str | os.PathLike, format: str, *, threads: int | None = None,
                          precision: str = "fp32") -> Any:
    """A function ``(N, 3, R, R) float32 → (boxes (N, A, 4), scores (N, A, C))`` running the file
    (a ``postprocess`` file: batch 1, its detection outputs, see :func:`runtime_detections`)."""
    if format == "tflite":
        litert = need("ai_edge_litert.interpreter", "ai-edge-litert", "running TFLite files")
        interp = litert.Interpreter(model_path=str(path), num_threads=threads or usable_cores())
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]["index"]
        outs = [d["index"] for d in interp.get_output_details()]

        def run_tflite(x: np.ndarray) -> tuple[np.ndarray, ...]:
            interp.set_tensor(inp, np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1)))
            interp.invoke()
            return tuple(interp.get_tensor(i).copy() for i in outs)
        return run_tflite
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


def _match(ref: list[dict[str, torch.Tensor]], got: list[dict[str, torch.Tensor]], *, top: int = 10,
           iou: float = 0.9) -> tuple[float, float]:
    """(the fraction of each image's ``top`` reference detections that the file reports too, with
    the same label and IoU ≥ ``iou``; the largest score difference among those)."""
    from torchvision.ops import box_iou

    found = total = 0
    worst = 0.0
    for r, g in zip(ref, got):
        k = min(top, len(r["scores"]))
        total += k
        if not k or not len(g["scores"]):
            continue
        overlap = box_iou(r["boxes"][:k], g["boxes"])
        same = (r["labels"][:k, None] == g["labels"][None, :]) & (overlap >= iou)
        for i in range(k):
            j = torch.nonzero(same[i]).flatten()
            if len(j):
                found += 1
                worst = max(worst, float((g["scores"][j] - r["scores"][i]).abs().min()))
    return (found / total if total else 1.0), worst


def export_detector(detector: nn.Module, format: str, out: str | os.PathLike, *, int8: bool = False,
                    calibration: Any = None, calibration_images: int = 16, threads: int | None = None,
                    postprocess: bool | str = False) -> ExportReport:
    """Write ``detector``'s raw graph as ``format`` (``onnx``, ``openvino`` or ``tflite``) at ``out``,
    verified in its runtime. ``postprocess``: include decoding + NMS (``True`` or ``"multiclass"``:
    per-class NMS; ``"fast"``: each anchor's best class, class-agnostic NMS; see the module doc),
    with the detector's ``score_thresh``, ``nms_thresh``, ``detections_per_img`` and ``pre_nms_top_n``."""
    if format not in DETECTOR_FORMATS:
        raise ValueError(f"a detector exports to {', '.join(DETECTOR_FORMATS)}, not {format!r}")
    mode = None if postprocess is False or postprocess is None else "multiclass" if postprocess is True else postprocess
    if mode is not None and mode not in POSTPROCESS_MODES:
        raise ValueError(f"unknown postprocess mode {mode!r}; choose one of: {', '.join(POSTPROCESS_MODES)}")
    if mode is not None and not hasattr(detector, "anchor_generator"):
        raise ValueError("in-graph decoding + NMS (--nms) is for SSD detectors")
    if int8 and format == "openvino":
        raise ValueError("int8 detector export is ONNX (QDQ, ONNX Runtime's quantizer) or TFLite (LiteRT's); "
                         "use --format onnx or tflite")
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
    post = DetectorPostprocess(detector, mode).eval() if mode is not None else None
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.is_dir() else None))
    try:
        tmp = tmpdir / out.name
        with tempfile.TemporaryDirectory() as work:
            _write(graph, post, format, tmp, example, x if int8 else None, Path(work))
        run = open_detector_runtime(tmp, format, threads=threads, precision="int8" if int8 else "fp32")
        with torch.no_grad():
            ref_boxes, ref_scores = graph(torch.from_numpy(x))
        if post is None:
            diff, agreement = _check_raw(run, x, ref_boxes.numpy(), ref_scores.numpy(), format, int8)
        else:
            check = post if format != "tflite" else DetectorPostprocess(detector, mode, clip_first=False).eval()
            with torch.no_grad():
                ref = [dict(zip(("boxes", "scores", "labels"), check(ref_boxes[i:i + 1], ref_scores[i:i + 1])))
                       for i in range(x.shape[0])]
            got = [runtime_detections(run(np.ascontiguousarray(x[i:i + 1])), format, r) for i in range(x.shape[0])]
            agreement, diff = _match(ref, got, iou=0.5 if int8 else 0.9)
            if not int8 and (agreement < 0.9 or diff > 1e-3):
                raise ValueError(f"the {format} file's detections differ from PyTorch's (top-10 found "
                                 f"{100 * agreement:.0f}%, scores within {diff:.2g}); nothing written")
            if int8 and agreement < 0.5:
                raise ValueError(f"the int8 {format} file finds only {100 * agreement:.0f}% of PyTorch's 10 best "
                                 "detections (< 50%); nothing written")
        files = []
        for f in sorted(tmpdir.iterdir()):
            dest = out.with_suffix(f.suffix) if f.suffix != out.suffix else out
            os.replace(f, dest)
            files.append(str(dest))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    toolchain = fmt.describe(int8) if format != "tflite" or int8 else \
        "mobilenets' TFLite writer (deploy.formats.tflite_detector), BN folded, NHWC input"
    if format == "onnx" and int8:  # detectors calibrate with MinMax whatever the CPU's default (see _write)
        toolchain = toolchain.replace("Percentile calibration", "MinMax calibration")
    if mode is None:
        toolchain += " (detector: raw boxes + sigmoid scores; decode + NMS outside)"
    elif format == "tflite":
        toolchain += (f" (detector: + TFLite_Detection_PostProcess, "
                      f"use_regular_nms={'true' if mode == 'multiclass' else 'false'})")
    else:
        toolchain += f" (detector: + decoding and NonMaxSuppression in the graph, {mode})"
    return ExportReport(path=str(out), format=format, files=files, size_bytes=sum(os.path.getsize(f) for f in files),
                        resolution=r, batch=1, int8=int8, toolchain=toolchain, runtime=fmt.runtime,
                        verify_inputs=int(x.shape[0]), max_abs_diff=diff,
                        tolerance=None if int8 else 1e-3, top1_agreement=agreement, cosine=1.0,
                        calibration_images=int(images.shape[0]) if calibration is not None else 0,
                        calibration_source=str(calibration) if calibration is not None else None,
                        verify_source="real" if calibration is not None else "random",
                        seconds=time.perf_counter() - t0)


def _write(graph: DetectorGraph, post: DetectorPostprocess | None, format: str, path: Path, example: torch.Tensor,
           calibration: np.ndarray | None, work: Path) -> None:
    """The file at ``path``: the raw graph (int8 when ``calibration`` is given), with ``post`` in it;
    intermediate files go to ``work``."""
    if format == "tflite":
        from .formats.tflite_detector import append_postprocess, detector_to_tflite, postprocess_options
        from .formats.tflite_writer import nchw_to_nhwc, quantize_tflite

        det = graph.detector
        buf = detector_to_tflite(det, tf_box_order=post is not None)
        if calibration is not None:
            buf = quantize_tflite(buf, (nchw_to_nhwc(calibration[i:i + 1]) for i in range(calibration.shape[0])))
        if post is not None:
            buf = append_postprocess(buf, det, postprocess_options(
                max_detections=post.detections, score_threshold=post.score_thresh, iou_threshold=post.nms_thresh,
                num_classes=det.num_classes - 1, regular_nms=post.mode == "multiclass",
                detections_per_class=post.cap))
        path.write_bytes(buf)
        return
    if post is None:
        if calibration is not None:
            write_onnx_int8(graph, example, str(path), 1, calibration, calibrate_method="MinMax")
        else:
            REGISTRY[format].write(graph, example, str(path), 1)
        return
    onnx_path = path if format == "onnx" else work / "with_nms.onnx"
    if calibration is not None:  # onnx int8: quantize the raw graph, then join the float post-processing to it
        raw = work / "raw_int8.onnx"
        write_onnx_int8(graph, example, str(raw), 1, calibration, calibrate_method="MinMax")
        _join_onnx(raw, post, onnx_path, work)
    else:
        _export_onnx(_WithPostprocess(graph, post).eval(), (example,), onnx_path, ["input"], list(_POST_OUTPUTS))
    if format == "openvino":
        ov = need("openvino", "openvino", "OpenVINO export")
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)


_POST_OUTPUTS = ("boxes", "scores", "labels")


def _export_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
                 outputs: list[str]) -> None:
    need("onnxscript", "onnxscript", "ONNX export")
    with quiet():
        program = torch.onnx.export(module, args, dynamo=True, external_data=False, verbose=False,
                                    input_names=inputs, output_names=outputs)
        program.save(str(path), external_data=False)


def _join_onnx(raw: Path, post: DetectorPostprocess, path: Path, work: Path) -> None:
    """``raw``'s two outputs fed to ``post`` exported as ONNX: one file at ``path``."""
    onnx = need("onnx", "onnx", "ONNX export")
    graph = onnx.load(str(raw))
    classes = int(graph.graph.output[1].type.tensor_type.shape.dim[2].dim_value)
    codes, scores = torch.zeros(1, post.anchors.shape[0], 4), torch.full((1, post.anchors.shape[0], classes), 0.5)
    post_path = work / "post.onnx"
    _export_onnx(post, (codes, scores), post_path, ["post_boxes", "post_scores"], list(_POST_OUTPUTS))
    tail = onnx.load(str(post_path))
    if graph.opset_import[0].version != tail.opset_import[0].version:
        tail = onnx.version_converter.convert_version(tail, graph.opset_import[0].version)
    names = [o.name for o in graph.graph.output]
    joined = onnx.compose.merge_models(graph, tail, io_map=[(names[0], "post_boxes"), (names[1], "post_scores")],
                                       prefix2="post_")
    rename = {o.name: o.name.removeprefix("post_") for o in joined.graph.output}  # merge_models prefixed them
    taken = {n for node in joined.graph.node for n in node.output} - set(rename)
    if taken & set(rename.values()):
        raise ValueError("onnx detector export: an output name of the post-processing is taken")
    for node in joined.graph.node:
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.input[:] = [rename.get(n, n) for n in node.input]
    for output in joined.graph.output:
        output.name = rename[output.name]
    onnx.save(joined, str(path))


def _check_raw(run: Any, x: np.ndarray, ref_boxes: np.ndarray, ref_scores: np.ndarray, format: str,
               int8: bool) -> tuple[float, float]:
    got_boxes, got_scores = [], []
    for i in range(x.shape[0]):
        b, sc = run(np.ascontiguousarray(x[i:i + 1]))
        got_boxes.append(b)
        got_scores.append(sc)
    gb, gs = np.concatenate(got_boxes), np.concatenate(got_scores)
    diff = float(max(np.abs(gb - ref_boxes).max(), np.abs(gs - ref_scores).max()))
    top = np.argsort(-ref_scores[..., 1:].max(-1), axis=1)[:, :20]
    ref_cls = np.take_along_axis(ref_scores[..., 1:].argmax(-1), top, 1)
    got_cls = np.take_along_axis(gs[..., 1:].argmax(-1), top, 1)
    agreement = float((ref_cls == got_cls).mean())
    if not int8 and diff > 1e-3:
        raise ValueError(f"the {format} file differs from PyTorch by {diff:.2g} (> 1e-3); nothing written")
    if int8 and agreement < 0.8:
        raise ValueError(f"the int8 file keeps the class of only {100 * agreement:.0f}% of the 20 best anchors "
                         "(< 80%); nothing written")
    return diff, agreement
