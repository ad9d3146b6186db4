"""Export a MobileNet for deployment, and prove the file works before keeping it.

:func:`export` writes one of the formats of :data:`mobilenets.deploy.formats.REGISTRY`
(onnx, openvino, torchscript, pt2, tflite, executorch; the table is in that module) from a model or a
weights file.

Every export is made from the BN-folded model (:func:`mobilenets.quant.fuse`) with static
spatial shapes, written under a temporary name, loaded back in its own runtime and run on a
few inputs against the PyTorch model; only then is it renamed into place. fp32 outputs must
agree to 1e-4 (relative to the logits' magnitude when that exceeds 1). int8 exports report
their top-1 agreement with fp32; they fail when their logits no longer resemble fp32's (mean
cosine < 0.9) or when top-1 agreement on held-out real images falls below 90%. A failed
check raises ``ValueError`` and leaves no file behind.

int8 is post-training static quantization with per-channel weight scales (a single scale
per tensor collapses the depthwise layers, whose channels span orders of magnitude), with
activation ranges calibrated on real images.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import check_writable, make_dirs, os_error_message
from ..inference import Classifier
from ..models import MobileNetV1
from ..quant import fuse
from ..weights import is_detector_file, load_detector, load_pretrained
from .calibration import in_chans, load_calibration
from .formats import FORMATS, INT8_FORMATS, Format, format_for_path, get_format
from .runner import Runner
from .runtime import open_runtime

__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "FORMATS",
    "INT8_FORMATS",
    "ExportReport",
    "Runner",
    "export",
    "file_metadata",
    "format_for_path",
    "load_calibration",
    "open_runtime",
    "verify_export",
]

DEFAULT_CALIBRATION_IMAGES = 100


@dataclass
class ExportReport:
    """What was written, how it was made, and how well it matched the PyTorch model."""

    path: str
    format: str
    files: list[str]
    size_bytes: int
    resolution: int
    batch: int | str
    int8: bool
    toolchain: str
    runtime: str  # the runtime that verified the file
    verify_inputs: int  # samples compared
    max_abs_diff: float
    tolerance: float | None  # fp32 bound on max_abs_diff (None for int8)
    top1_agreement: float  # fraction of verification samples whose top-1 matches fp32
    cosine: float  # mean cosine similarity of logits vs fp32
    calibration_images: int = 0
    calibration_source: str | None = None
    verify_source: str = "random"
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        size = f"{self.size_bytes / 1e6:.2f} MB"
        head = (f"wrote {self.path} ({self.format}{' int8' if self.int8 else ''}, {size}, "
                f"{self.resolution}×{self.resolution}, batch {self.batch}) in {self.seconds:.1f} s")
        if self.int8:
            check = (f"verified with {self.runtime} on {self.verify_inputs} {self.verify_source} inputs: "
                     f"top-1 agreement with fp32 {100 * self.top1_agreement:.1f}%, logit cosine "
                     f"{self.cosine:.4f}; calibrated on {self.calibration_images} images ({self.calibration_source})")
        else:
            check = (f"verified with {self.runtime} on {self.verify_inputs} {self.verify_source} inputs: "
                     f"max |Δ| {self.max_abs_diff:.2e} (bound {self.tolerance:.1e}), top-1 agreement "
                     f"{100 * self.top1_agreement:.1f}%")
        return f"{head}\n  {check}\n  toolchain: {self.toolchain}"


# ----------------------------------------------------------------------------- inputs

def _check_options(format: str, out: Path, batch: int | str, resolution: int | None, int8: bool,
                   calibration: Any, calibration_images: int) -> Format:
    fmt = get_format(format)
    if batch != "dynamic" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be an integer ≥ 1 or 'dynamic', got {batch!r}")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < 32):
        raise ValueError(f"resolution must be an integer of at least 32 pixels, got {resolution!r}")
    if int8 and not fmt.int8:
        raise ValueError(f"int8 export is not available for {format}; use one of: {', '.join(INT8_FORMATS)}")
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, int) or calibration_images < 1:
        raise ValueError(f"calibration_images must be an integer ≥ 1, got {calibration_images!r}")
    if int8 and calibration is None:
        raise ValueError("int8 export needs calibration data: a folder of real images (--calibration DIR)")
    if out.is_dir():
        raise ValueError(f"{out}: is a directory; give the output file name")
    if fmt.path_rule and out.suffix.lower() not in fmt.suffixes:
        raise ValueError(f"{out}: {fmt.path_rule}")
    named = format_for_path(out)
    if named is not None and named != fmt.name:  # e.g. ONNX written as m.xml: every reader would misread it
        raise ValueError(f"{out}: {out.suffix} is for {named} files, but this export is {fmt.name}; "
                         f"give a {fmt.suffix} path (or --format {named})")
    check_writable(out)
    return fmt


def _resolve_model(model_or_weights: nn.Module | str | os.PathLike, resolution: int | None) -> nn.Module:
    """A model in eval mode at the export resolution (weights files are loaded)."""
    if isinstance(model_or_weights, (str, os.PathLike)):
        model_or_weights = load_pretrained(model_or_weights)  # a run's config carries its small-input stem
    if not isinstance(model_or_weights, nn.Module):
        raise ValueError(f"export() needs a model or a weights file path, got {type(model_or_weights).__name__}")  # noqa: TRY004 (one-line ValueError: the CLI exits 2)
    model = model_or_weights
    if isinstance(model, MobileNetV1) and resolution is not None and resolution != model.resolution:
        # The architecture does not depend on ρ; a copy with the new nominal size keeps any
        # in-place changes (e.g. the trainer's small-input stem) and the weights' info.
        resized = copy.deepcopy(model)
        resized.config = model.config.replace(resolution=resolution)
        model = resized
    model.eval()  # (not `return model.eval()`: PT2E graph modules' eval() returns None)
    return model


def _is_quantized(model: nn.Module) -> bool:
    """True for a PT2E-quantized graph (it holds quantize/dequantize ops)."""
    graph = getattr(model, "graph", None)
    return graph is not None and any("quantize_per_" in str(getattr(n, "target", "")) for n in graph.nodes)


def _model_resolution(model: nn.Module, resolution: int | None) -> int:
    if resolution is not None:
        return resolution
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "resolution"):
        return int(config.resolution)
    return 224


def _verify_inputs(int8: bool, calib: np.ndarray | None, held: np.ndarray | None, batch: int | str,
                   verify_samples: int, shape: tuple[int, int, int], gen: torch.Generator
                   ) -> tuple[np.ndarray, str]:
    """What the file is checked on: held-out real images for int8; random (+ real) for fp32."""
    if int8:
        assert calib is not None
        return (held, "held-out real") if held is not None else (calib, "calibration (real)")
    n = max(1, verify_samples) * (batch if isinstance(batch, int) else 1)
    parts = [torch.randn(n, *shape, generator=gen).numpy()]
    if calib is not None:
        parts.append(calib[:8])
    if batch == "dynamic":  # odd batch sizes too, to prove the batch really is dynamic
        parts.append(torch.randn(3, *shape, generator=gen).numpy())
    return np.concatenate(parts).astype(np.float32), "random + real" if calib is not None else "random"


def _remove_dirs(made: list[Path]) -> None:
    """Remove the (still empty) folders an export created for a file it did not keep."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            break


def file_metadata(model: nn.Module, resolution: int, int8: bool) -> str | None:
    """What a reader of the exported file needs to run it as the PyTorch model runs (JSON text,
    stored under :data:`~mobilenets.deploy.formats.base.METADATA_KEY`): the config, the
    preprocessing and input rounding the weights expect, the class names, the input size.
    None for a model that is not a :class:`MobileNetV1` (its preprocessing is unknown)."""
    if not isinstance(model, MobileNetV1):
        return None
    classifier = Classifier(model)
    info = getattr(model, "pretrained_cfg", None)
    quantization = classifier.input_quantization
    return json.dumps({
        "kind": "mobilenets-classifier", "version": 1, "config": model.config.to_dict(),
        "input_size": int(resolution), "preprocess": dict(classifier.spec),
        "class_names": list(info.class_names) if info is not None and info.class_names else None,
        "has_background_class": bool(info.has_background_class) if info is not None else model.num_classes == 1001,
        "input_quantization": list(quantization) if quantization is not None else None,
        "int8": bool(int8), "source": info.path if info is not None else None,
    }, sort_keys=True)


# ----------------------------------------------------------------------------- verification

def _compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(max |Δ|, top-1 agreement, mean cosine) between reference and exported logits."""
    if got.shape != ref.shape:
        raise ValueError(f"exported model returns shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
    if not np.isfinite(got).all():
        raise ValueError("exported model returns NaN or infinite values")
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    ref2, got2 = ref.reshape(ref.shape[0], -1), got.reshape(got.shape[0], -1).astype(np.float64)
    agree = float((ref2.argmax(1) == got2.argmax(1)).mean())
    norms = np.linalg.norm(ref2, axis=1) * np.linalg.norm(got2, axis=1)
    cos = float(np.mean(np.where(norms > 0, (ref2 * got2).sum(1) / np.maximum(norms, 1e-30), 1.0)))
    return diff, agree, cos


def verify_export(path: str | os.PathLike, format: str, reference: nn.Module, inputs: np.ndarray,
                  *, int8: bool = False) -> tuple[str, float, float, float, float | None]:
    """Run the file in its runtime against ``reference`` (fp32 PyTorch) on ``inputs``.

    Returns ``(runtime, max_abs_diff, top1_agreement, cosine, tolerance)``; raises
    ``ValueError`` when an fp32 export differs by more than the format's tolerance, or an int8
    export's logits no longer resemble fp32's (mean cosine below the format's bound) or are
    not finite.
    """
    settings = get_format(format).verify
    runner = open_runtime(path, format, precision="int8" if int8 else "fp32")
    with torch.inference_mode():
        ref = reference(torch.from_numpy(inputs)).double().numpy()
    got = runner.run_all(inputs)
    diff, agree, cos = _compare(ref, got)
    if int8:
        if cos < settings.min_cosine:
            raise ValueError(f"int8 {format} export failed verification with {runner.name}: logits' cosine "
                             f"similarity with fp32 is {cos:.3f} (< {settings.min_cosine}), top-1 agreement "
                             f"{100 * agree:.0f}%")
        return runner.name, diff, agree, cos, None
    tol = settings.tolerance * max(1.0, float(np.abs(ref).max()))
    if not diff <= tol:
        raise ValueError(f"{format} export failed verification with {runner.name}: max |Δ| = {diff:.3g} "
                         f"vs PyTorch (bound {tol:.1e})")
    return runner.name, diff, agree, cos, tol


EMBEDDING_MIN_COSINE = 0.98  # an int8 embedding model: its outputs' mean cosine with fp32's


def _outputs_embedding(model: nn.Module) -> bool:
    """A model whose output is an embedding, not class logits (no classifier, or a distilled embedding
    student): the argmax of its output means nothing, so its int8 file is judged by cosine."""
    info = getattr(model, "pretrained_cfg", None)
    return int(getattr(model, "num_classes", 1)) == 0 or (info is not None and
                                                        (getattr(info, "extra", None) or {}).get("output") == "embedding")


def _check_embedding(fmt: Format, cos: float, n: int, source: str) -> None:
    if cos < EMBEDDING_MIN_COSINE:
        raise ValueError(f"int8 {fmt.name} export rejected: its embeddings' mean cosine similarity with fp32 is "
                         f"{cos:.4f} on {n} {source} inputs (< {EMBEDDING_MIN_COSINE}); nothing was written (more or "
                         "more representative calibration images may help)")


def _check_agreement(fmt: Format, agree: float, n: int, source: str, min_agreement: float | None) -> None:
    """An int8 file whose top-1 no longer follows fp32's on real images is an error, not a result."""
    bound = fmt.verify.min_agreement if min_agreement is None else min_agreement
    if agree < bound:
        raise ValueError(f"int8 {fmt.name} export rejected: top-1 agreement with fp32 is {100 * agree:.1f}% on "
                         f"{n} {source} inputs (< {100 * bound:.0f}%); nothing was written (more or more "
                         "representative calibration images may help)")


# ----------------------------------------------------------------------------- export

def export(model_or_weights: nn.Module | str | os.PathLike, format: str, out: str | os.PathLike, *,
           resolution: int | None = None, batch: int | str = 1, int8: bool = False,
           calibration: Any = None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
           verify_samples: int = 4, seed: int = 0, min_agreement: float | None = None,
           postprocess: bool | str = False) -> ExportReport:
    """Export a model (or a weights file) to ``format`` at ``out``, verified in its runtime.

    Args:
        model_or_weights: a model (ours or any ``nn.Module`` taking NCHW images) or any weights
            file :func:`mobilenets.load_pretrained` reads.
        format: one of :data:`FORMATS` (``"onnx"``, ``"openvino"`` (``out`` ends in ``.xml``;
            the ``.bin`` goes beside it), ``"torchscript"``, ``"pt2"``, ``"tflite"``, ``"executorch"`` (``.pte``, static batch)).
        resolution: input size in pixels (default: the model's ρ). Spatial shapes are static.
        batch: a fixed batch size, or ``"dynamic"``.
        int8: post-training static quantization (:data:`INT8_FORMATS`); needs ``calibration``.
        calibration: a folder of images, image files, or preprocessed inputs ``(N, C, R, R)``.
        calibration_images: how many calibration images to use (a seeded random sample).
        verify_samples: random inputs compared for fp32 exports (real images are added when
            ``calibration`` is given; int8 exports are compared on real images only).
        min_agreement: int8 only: the least top-1 agreement with fp32 on the verification
            images (default: the format's, 0.9).

    A detector (Google's TFLite SSD file, a detection run, an :class:`SSDMobileNetV1`) exports its
    raw graph (box encodings + sigmoid scores) to ONNX, OpenVINO or TFLite, int8 through ONNX Runtime
    or LiteRT (:func:`mobilenets.deploy.detector.export_detector`); ``postprocess`` (``True``,
    ``"multiclass"`` or ``"fast"``; CLI ``--nms``) puts decoding + NMS into the file.

    Returns:
        An :class:`ExportReport`. Raises ``ValueError`` (one line) for bad options or a failed
        verification; then nothing is left at ``out``.
    """
    if isinstance(model_or_weights, (str, os.PathLike)) and is_detector_file(model_or_weights):
        model_or_weights = load_detector(model_or_weights)
    if hasattr(model_or_weights, "forward_raw"):  # a detector: its raw graph (see deploy.detector)
        from .detector import export_detector  # (it builds on this module's ExportReport)

        return export_detector(model_or_weights, format, out, int8=int8, calibration=calibration,
                               calibration_images=min(calibration_images, 16),  # histograms of 1917×91 scores: slow
                               postprocess=postprocess)
    if postprocess:
        raise ValueError("--nms (decoding + NMS in the file) is for detectors")
    start = time.perf_counter()
    out = Path(out)
    fmt = _check_options(format, out, batch, resolution, int8, calibration, calibration_images)
    model = _resolve_model(model_or_weights, resolution)
    prequantized = _is_quantized(model)  # e.g. from fuse.convert_qat (quantization-aware training)
    if prequantized and int8:
        raise ValueError("the model is already quantized (QAT); export it without --int8")
    r, c = _model_resolution(model, resolution), in_chans(model)
    static_batch = batch if isinstance(batch, int) else 2
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(static_batch, c, r, r, generator=gen)
    fused = fuse(model)

    calib = held = None
    calib_source = None
    if calibration is not None:
        calib_t, held_t, calib_source = load_calibration(calibration, model, r, calibration_images, seed=seed)
        calib = calib_t.numpy()
        held = held_t.numpy() if held_t is not None else None
    verify_inputs, verify_source = _verify_inputs(int8, calib, held, batch, verify_samples, (c, r, r), gen)

    made = make_dirs(out.parent)  # removed again if the export fails
    try:
        workdir = tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)
    except OSError as e:
        message = os_error_message(e, out, writing=True)
        _remove_dirs(made)
        raise type(e)(message) from None
    kept = False
    try:
        tmp = os.path.join(workdir, out.name)
        if int8:
            assert fmt.write_int8 is not None and calib is not None
            fmt.write_int8(fused, example, tmp, batch, calib)
        else:
            fmt.write(fused, example, tmp, batch)
        metadata = file_metadata(model, r, int8 or prequantized)
        if metadata is not None and fmt.embed is not None:
            fmt.embed(tmp, metadata)
        # A QAT model's reference is fp32-emulated int8; runtimes computing in real int8 round
        # differently at quantization boundaries, so it is checked like an int8 export.
        as_int8 = int8 or (prequantized and not fmt.verify.qat_exact)
        runtime, diff, agree, cos, tol = verify_export(tmp, format, model, verify_inputs, int8=as_int8)
        if int8 and _outputs_embedding(model):
            _check_embedding(fmt, cos, int(verify_inputs.shape[0]), verify_source)
        elif int8:
            _check_agreement(fmt, agree, int(verify_inputs.shape[0]), verify_source, min_agreement)
        produced = sorted(os.listdir(workdir))
        targets = [out.with_name(name) for name in produced]
        # The main file goes last, so a reader never sees it without its companions (.bin).
        try:
            for name, target in sorted(zip(produced, targets), key=lambda t: t[0] == out.name):
                os.replace(os.path.join(workdir, name), target)
        except OSError as e:
            raise type(e)(os_error_message(e, out, writing=True)) from None
        kept = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not kept:
            _remove_dirs(made)

    return ExportReport(
        path=str(out), format=format, files=[str(t) for t in targets],
        size_bytes=sum(t.stat().st_size for t in targets), resolution=r, batch=batch, int8=int8 or prequantized,
        toolchain=fmt.describe(int8) + (" (of a PT2E quantization-aware-trained model)" if prequantized else ""),
        runtime=runtime, verify_inputs=int(verify_inputs.shape[0]),
        max_abs_diff=diff, tolerance=tol, top1_agreement=agree, cosine=cos,
        calibration_images=0 if calib is None else int(calib.shape[0]), calibration_source=calib_source,
        verify_source=verify_source, seconds=time.perf_counter() - start,
        config=getattr(getattr(model, "config", None), "to_dict", dict)(),
    )
