"""Deployment latency and accuracy on CPU: ours vs every peer, fp32 and int8, at α-ρ 1.0-224 and 0.5-160.

    python benchmarks/deploy_cpu.py [--threads 2] [--rounds 300] [--quick] [--configs 1.0-224,0.5-160]
                                    [--precisions fp32,int8] [--runtimes onnxruntime,openvino,litert,torch,executorch]
                                    [--calibration-images 50] [--calibration-draws 5]
                                    [--cifar-checkpoint RUN/best.pt]

It prints the CPU's features (what decides int8 and bf16 here) first, then one table per
precision × config. Within a table every path is timed in one process, interleaved in turns of
50 calls (the first 10 of each turn not recorded, so one runtime's spinning threads do not slow
the next), batch 1, the same number of threads for every runtime; medians (p90 in brackets) and
ratios to the best peer (≤ 1.0: ours is not slower). Each path's outputs on the 100 ImageNet
samples give its quality: top-1 (and agreement with PyTorch fp32) for 0.5-160, whose weights
are Google's uint8 classifier; cosine with PyTorch fp32 for 1.0-224, whose only weights in the
data are Google's uint8 *embedding extractor* (no classifier, so every 1.0-224 path, peers
included, runs without the 1 M-MAC classifier, 0.2% of the work, and has no top-1).

Peers: timm's ``mobilenetv1_100`` (1.0 only: timm has no α=0.5 MobileNet V1; random weights, as
timm's need a download, so latency only) and our model with Google's weights, each exported
plainly (``torch.onnx.export``) and run with ONNX Runtime's and OpenVINO's defaults (threads
fixed); for int8 the tools' default quantization of that plain export (ONNX Runtime
``quantize_static`` QDQ, NNCF) and LiteRT on Google's uint8 file where the data has one (both
configs). There is no Google fp32 file in the data, so no LiteRT fp32 peer. torchvision has no
MobileNet V1. "Ours": BN folded, static shapes, ReLU6 as a clip fused into the conv, our int8
settings for this CPU (printed), run with a latency configuration (one stream, LATENCY hint,
fixed threads, zero-copy I/O); reference rows (not peers: PyTorch eager, timm's file with our
runtime settings, and two fp32 candidates for a faster path: ONNX Runtime with
``session.intra_op.allow_spinning=0``, OpenVINO with ``ENABLE_CPU_PINNING=False``) show where a gain
comes from. bf16 is timed only where the CPU accelerates it
(AVX512_BF16 or AMX); elsewhere it is reported as not accelerated, never timed as fp32.

``--quick``: 3 turns of 20 calls (the last 15 timed) per path, 16 calibration images, no
reference rows; for a smoke run, not for figures to quote.

After each fp32 table a roofline line compares the fastest fp32 path's GFLOP/s with this
machine's fp32 matrix-multiply rate (numpy's or torch's BLAS, 2048², same threads), and says what
the issue's ≤ 0.8× target would need; an FMA-peak line compares both with the cores' own peak (a
register-only FMA loop compiled for this CPU: ``_peak.py``), the ceiling no fp32 kernel passes; a
layers line then splits our OpenVINO file's time (its own per-layer counters) into the 1x1
convolutions, the depthwise ones and the rest, with the 1x1 convs' GFLOP/s and the floor they alone
would set at the sgemm rate and at the FMA peak.

A steadiness line before and after the tables (the FMA loop and a 16 MB read, each in some 300
windows of a few ms: their median length, median rate and 10th percentile, and a verdict) says
whether the machine was steady while it was measured.

``--calibration-draws K`` (default 5): after the 0.5-160 int8 table, each of our int8 paths is
exported again on K calibration draws (seeds 0..K-1) and its mean top-1 and agreement are compared
with Google's file: on 100 images one image is one point, so one draw's verdict is noise.

(optional, --cifar-checkpoint) int8 vs fp32 top-1 of a CIFAR-10 model on the CIFAR-10 test set.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import _peak
from _timing import interleaved_medians, machine, median_ms, p90_ms, sgemm_gflops

import mobilenets
from mobilenets._utils import error_line
from mobilenets.deploy import Runner, cpu, export, load_calibration, open_runtime
from mobilenets.deploy.formats import REGISTRY
from mobilenets.deploy.formats.onnx import ort_session_options
from mobilenets.deploy.formats.openvino import openvino_config
from mobilenets.deploy.support import quiet
from mobilenets.deploy.timing import SETTLE_SECONDS
from mobilenets.quant import fuse

DATA = Path(os.environ.get("MOBILENETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
IMAGENET_SAMPLE = DATA / "imagenet-sample"
# α-ρ → (α, ρ, Google's uint8 file for it in the data)
CONFIGS = {
    "1.0-224": (1.0, 224, DATA / "tflite" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
    "0.5-160": (0.5, 160, DATA / "tflite" / "mobilenet_v1_0.5_160_quant.tflite"),
}
# Calls per turn, and how many at its start are not timed: ONNX Runtime's and OpenVINO's threads
# spin for a while after a call and would slow whichever runtime ran next if turns were single
# calls; XNNPACK's (LiteRT) sleep when idle and need a few calls to be hot again.
BLOCK, SKIP = 50, 10
QUICK_BLOCK, QUICK_SKIP, QUICK_TURNS, QUICK_CALIBRATION = 20, 5, 3, 16
RUNTIMES = ("onnxruntime", "openvino", "litert", "torch", "executorch")


def _peer_ort(path: str, threads: int) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()  # defaults, except the thread count every runtime gets
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _peer_ov(path: str, threads: int, precision: str | None = None) -> Callable[[np.ndarray], Any]:
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    request = ov.Core().compile_model(path, "CPU", config).create_infer_request()
    return lambda x: request.infer({0: x})[0]


def _plain_onnx(model: torch.nn.Module, x: torch.Tensor, path: str) -> str:
    with quiet():
        torch.onnx.export(model, (x,), path, dynamo=True, external_data=False)  # "exported plainly"
    return path


def _litert_google(path: Path, threads: int, scale: float, zero: int
                   ) -> tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], np.ndarray]]:
    """Google's uint8 file in LiteRT: (one call on a uint8 NHWC input, float NCHW batch → dequantized outputs)."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilenets.data import quantize_input

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    o_scale, o_zero = out["quantization"]

    def raw(q: np.ndarray) -> Any:
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        return interp.get_tensor(out["index"])

    def outputs(x: np.ndarray) -> np.ndarray:
        rows = []
        for sample in x:
            q = quantize_input(torch.from_numpy(sample), scale, zero).permute(1, 2, 0)[None].numpy()
            v = raw(q)[0].astype(np.float32).reshape(-1)
            rows.append((v - o_zero) * o_scale if o_scale else v)
        return np.stack(rows)
    return raw, outputs


@dataclass
class Setup:
    """One config's model, data and reference outputs, shared by its fp32 and int8 tables."""

    label: str
    width: float
    resolution: int
    model: torch.nn.Module
    weights: str  # what the weights are, in words
    google: Path | None  # Google's uint8 file for this config, when the data has one
    embedding: bool  # no classifier: outputs are embeddings, quality is cosine with fp32
    x_all: np.ndarray | None  # the 100 ImageNet samples, preprocessed (None without the data)
    y: np.ndarray | None  # their labels in the model's class indexing
    ref: np.ndarray | None  # PyTorch fp32 outputs on x_all
    calib: np.ndarray
    held_mask: np.ndarray | None  # which of x_all were not calibrated on
    how: str  # the calibration set, in words
    x1: np.ndarray  # the one input every path is timed on
    plain_onnx: str  # our model with these weights, exported plainly (the peer file)
    timm_onnx: str | None  # timm's model (random weights), exported plainly; α=1.0 only


def ours_file(tmp: str, s: Setup, suffix: str) -> str:
    """Where our fp32 export of ``s`` in a format lives (the fp32 table writes it, the layers line reads it)."""
    return os.path.join(tmp, f"ours_{s.label}{suffix}")


def make_setup(label: str, n_calib: int, tmp: str) -> Setup:
    from mobilenets.data import list_images
    from mobilenets.inference import Classifier, imagenet_target

    width, res, google = CONFIGS[label]
    if google.is_file():
        model = mobilenets.load_pretrained(google).eval()
        embedding = model.num_classes == 0
        weights = (f"Google's {label} uint8 {'embedding extractor' if embedding else 'classifier'} "
                   f"({google.name}), dequantized")
    else:
        model = mobilenets.create_model(f"mobilenet_v1_{round(width * 100):03d}_{res}", activation="relu6").eval()
        google, embedding, weights = None, False, f"random weights ({google.name} not in the data)"
    x_all = y = ref = held_mask = None
    if google is not None and IMAGENET_SAMPLE.is_dir():
        classifier = Classifier(model)
        paths = list_images([IMAGENET_SAMPLE])
        x_all = torch.stack([classifier.preprocess(p) for p in paths]).numpy()
        offset = 1 if model.pretrained_cfg.has_background_class else 0
        y = None if embedding else np.array([imagenet_target(p) + offset for p in paths])
        with torch.inference_mode():
            ref = model(torch.from_numpy(x_all)).numpy().reshape(len(x_all), -1)
        calib_t, held_t, how = load_calibration(IMAGENET_SAMPLE, model, res, n_calib, seed=0)
        calib = calib_t.numpy()
        held = {a.tobytes() for a in held_t.numpy()} if held_t is not None else set()
        held_mask = np.array([s.tobytes() in held for s in x_all])
    else:
        gen = torch.Generator().manual_seed(0)
        calib = torch.randn(n_calib, 3, res, res, generator=gen).clamp_(-2, 2).numpy()
        how = f"{n_calib} random inputs (no ImageNet samples or no real weights: quality not measured)"
    x1 = np.ascontiguousarray(x_all[:1]) if x_all is not None else calib[:1].copy()
    plain = _plain_onnx(model, torch.from_numpy(x1), os.path.join(tmp, f"plain_{label}.onnx"))
    timm_onnx = None
    if width == 1.0:
        import timm

        peer = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=model.num_classes).eval()
        assert mobilenets.cost(model).params == sum(p.numel() for p in peer.parameters())  # the same network
        timm_onnx = _plain_onnx(peer, torch.from_numpy(x1), os.path.join(tmp, f"timm_{label}.onnx"))
    return Setup(label, width, res, model, weights, google, embedding, x_all, y, ref, calib, held_mask, how, x1,
                 plain, timm_onnx)


def quality(s: Setup, out: np.ndarray | None) -> dict[str, float]:
    """top-1 / held-out top-1 / agreement with fp32 (classifier), or mean cosine with fp32 (embedding)."""
    if out is None or s.ref is None:
        return {}
    out = np.asarray(out, dtype=np.float32).reshape(len(out), -1)
    if s.embedding:
        cos = (out * s.ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(s.ref, axis=1) + 1e-12)
        return {"cosine": float(cos.mean()), "cosine_min": float(cos.min())}
    pred, ref = out.argmax(1), s.ref.argmax(1)
    q = {"top1": 100 * float((pred == s.y).mean()), "agreement": 100 * float((pred == ref).mean())}
    if s.held_mask is not None and s.held_mask.any():
        q["held_top1"] = 100 * float((pred == s.y)[s.held_mask].mean())
    return q


def _quality_text(q: dict[str, float], why: str = "") -> str:
    if "cosine" in q:
        return f"cosine with fp32 {q['cosine']:.4f} (min {q['cosine_min']:.3f})"
    if "top1" in q:
        held = f" (held-out {q['held_top1']:.0f}%)" if "held_top1" in q else ""
        return f"top-1 {q['top1']:.0f}%{held}, agrees with fp32 {q['agreement']:.0f}%"
    return why or "n/a"


@dataclass
class Entry:
    """One way to run the config: timed (``call``) and, with real weights, evaluated (``outputs``)."""

    name: str
    kind: str  # "peer", "ours" or "ref" (shown, not compared)
    precision: str  # fp32, bf16 or int8
    call: Callable[[], Any]
    outputs: Callable[[np.ndarray], np.ndarray] | None
    note: str = ""  # why there is no quality figure


def _from_runner(name: str, kind: str, precision: str, runner: Runner, x1: np.ndarray, note: str = "") -> Entry:
    v = runner.prepare(x1)
    return Entry(name, kind, precision, lambda: runner(v), runner.run_all, note)


# (name, kind, precision, runtime, factory): factories run only for the runtimes asked for
Spec = tuple[str, str, str, str, Callable[[], Entry]]


def fp32_specs(s: Setup, threads: int, tmp: str, quick: bool) -> list[Spec]:
    x1 = s.x1
    ours_onnx, ours_xml, ours_tflite, ours_pte = (ours_file(tmp, s, suffix) for suffix in (".onnx", ".xml", ".tflite",
                                                                                          ".pte"))

    def exported(fmt: str, path: str) -> str:
        if not os.path.exists(path):
            export(s.model, fmt, path)
        return path

    def ours(fmt: str, path: str, precision: str = "fp32") -> Runner:
        return open_runtime(exported(fmt, path), fmt, threads=threads, precision=precision)

    random = "n/a (timm's random weights)"
    specs: list[Spec] = []
    if s.timm_onnx:
        specs += [
            ("peer timm → ONNX Runtime (defaults)", "peer", "fp32", "onnxruntime",
             lambda: _from_runner("", "", "", Runner("ort", _peer_ort(s.timm_onnx, threads), 1), x1, random)),
            ("peer timm → OpenVINO (f32)", "peer", "fp32", "openvino",
             lambda: _from_runner("", "", "", Runner("ov", _peer_ov(s.timm_onnx, threads, "f32"), 1), x1, random)),
        ]
    specs += [
        ("peer plain export → ONNX Runtime (defaults)", "peer", "fp32", "onnxruntime",
         lambda: _from_runner("", "", "", Runner("ort", _peer_ort(s.plain_onnx, threads), 1), x1)),
        ("peer plain export → OpenVINO (f32)", "peer", "fp32", "openvino",
         lambda: _from_runner("", "", "", Runner("ov", _peer_ov(s.plain_onnx, threads, "f32"), 1), x1)),
        ("ours ONNX Runtime", "ours", "fp32", "onnxruntime",
         lambda: _from_runner("", "", "", ours("onnx", ours_onnx), x1)),
        ("ours OpenVINO", "ours", "fp32", "openvino",
         lambda: _from_runner("", "", "", ours("openvino", ours_xml), x1)),
        ("ours LiteRT (our TFLite writer)", "ours", "fp32", "litert",
         lambda: _from_runner("", "", "", ours("tflite", ours_tflite), x1)),
        ("ours ExecuTorch (XNNPACK, fp32 only)", "ours", "fp32", "executorch",  # not installed: "not run"
         lambda: _from_runner("", "", "", ours("executorch", ours_pte), x1)),
    ]
    if cpu.cpu_features().bf16:  # a precision the CPU cannot accelerate is reported, not timed as something else
        specs += [
            ("peer plain export → OpenVINO default precision (bf16 here)", "peer", "bf16", "openvino",
             lambda: _from_runner("", "", "", Runner("ov", _peer_ov(s.plain_onnx, threads), 1), x1)),
            ("ours OpenVINO bf16", "ours", "bf16", "openvino",
             lambda: _from_runner("", "", "", ours("openvino", ours_xml, "bf16"), x1)),
        ]
    if not quick:
        fused = fuse(s.model).to(memory_format=torch.channels_last)
        x_cl = torch.from_numpy(x1).contiguous(memory_format=torch.channels_last)

        def eager() -> Entry:
            def call() -> Any:
                with torch.inference_mode():
                    return fused(x_cl)

            def outputs(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return fused(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
            return Entry("", "", "", call, outputs)
        specs.append(("ref ours PyTorch eager (fused, NHWC)", "ref", "fp32", "torch", eager))

        def ort_no_spin() -> Entry:  # candidate for a faster fp32 path: threads sleep between calls
            import onnxruntime as ort

            so = ort_session_options(threads)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(exported("onnx", ours_onnx), so, providers=["CPUExecutionProvider"])
            return _from_runner("", "", "", Runner("ort", lambda x: sess.run(None, {"input": x})[0], 1), x1)

        def ov_no_pinning() -> Entry:  # candidate: OpenVINO's threads not pinned to cores
            import openvino as ov

            config = {**openvino_config(threads, "fp32"), "ENABLE_CPU_PINNING": False}
            request = ov.Core().compile_model(exported("openvino", ours_xml), "CPU", config).create_infer_request()
            return _from_runner("", "", "", Runner("ov", lambda x: request.infer({0: x})[0], 1), x1)
        specs += [("ref ours ONNX Runtime, allow_spinning=0", "ref", "fp32", "onnxruntime", ort_no_spin),
                  ("ref ours OpenVINO, ENABLE_CPU_PINNING=False", "ref", "fp32", "openvino", ov_no_pinning)]
        if s.timm_onnx:
            specs += [
                ("ref timm file + our ONNX Runtime settings", "ref", "fp32", "onnxruntime",
                 lambda: _from_runner("", "", "", open_runtime(s.timm_onnx, "onnx", threads=threads), x1, random)),
                ("ref timm file + our OpenVINO settings", "ref", "fp32", "openvino",
                 lambda: _from_runner("", "", "", open_runtime(s.timm_onnx, "openvino", threads=threads), x1,
                                      random)),
            ]
    return specs


# Our int8 paths: (row name, export format, file suffix, runtime); the int8 table and the calibration draws.
OURS_INT8 = (("ours ONNX Runtime int8", "onnx", ".onnx", "onnxruntime"),
             ("ours OpenVINO int8", "openvino", ".xml", "openvino"),
             ("ours LiteRT int8", "tflite", ".tflite", "litert"))


def _our_int8(s: Setup, fmt: str, suffix: str, calib: np.ndarray, threads: int, path: str) -> Runner:
    """Our int8 export of the config, opened. An embedding model has no top-1 to agree on: export's
    agreement bound is for classifiers (its logit-cosine check still applies); the cosine on the
    100 samples is reported instead. Raises ValueError where export refuses the file."""
    report = export(s.model, fmt, path + suffix, int8=True, calibration=calib, calibration_images=len(calib),
                    min_agreement=0.0 if s.embedding else None)
    return open_runtime(report.path, fmt, threads=threads, precision="int8")


def int8_specs(s: Setup, threads: int, tmp: str) -> list[Spec]:
    x1 = s.x1
    calib = s.calib

    def ours(fmt: str, suffix: str) -> Entry:
        return _from_runner("", "", "", _our_int8(s, fmt, suffix, calib, threads,
                                                  os.path.join(tmp, f"ours_{s.label}_int8")), x1)

    def ort_defaults_file() -> str:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        path = os.path.join(tmp, f"peer_{s.label}_int8.onnx")
        if os.path.exists(path):
            return path
        input_name = onnx.load(s.plain_onnx).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(calib[i:i + 1] for i in range(len(calib)))

            def get_next(self) -> dict[str, np.ndarray] | None:
                v = next(self.it, None)
                return None if v is None else {input_name: v}

        with quiet():
            quantize_static(s.plain_onnx, path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)  # defaults
        return path

    def nncf_defaults() -> Entry:
        import nncf
        import openvino as ov

        path = os.path.join(tmp, f"peer_{s.label}_nncf.xml")
        with quiet():
            ov.save_model(nncf.quantize(ov.convert_model(s.plain_onnx),
                                        nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])), path)
        return _from_runner("", "", "", Runner("ov", _peer_ov(path, threads), 1), x1)

    specs: list[Spec] = []
    if s.google is not None:
        def google() -> Entry:
            scale, zero = s.model.pretrained_cfg.input_quantization
            raw, outputs = _litert_google(s.google, threads, scale, zero)
            q1 = np.ascontiguousarray(np.round(x1 / scale + zero).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
            return Entry("", "", "", lambda: raw(q1), outputs)
        specs.append(("peer LiteRT on Google's uint8 file", "peer", "int8", "litert", google))
    specs += [
        ("peer ONNX Runtime int8 (quantize_static defaults, QDQ)", "peer", "int8", "onnxruntime",
         lambda: _from_runner("", "", "", Runner("ort", _peer_ort(ort_defaults_file(), threads), 1), x1)),
        ("peer OpenVINO on that QDQ file", "peer", "int8", "openvino",
         lambda: _from_runner("", "", "", Runner("ov", _peer_ov(ort_defaults_file(), threads), 1), x1)),
        ("peer OpenVINO int8 (NNCF defaults)", "peer", "int8", "openvino", nncf_defaults),
    ]
    specs += [(name, "ours", "int8", runtime, lambda fmt=fmt, suffix=suffix: ours(fmt, suffix))
              for name, fmt, suffix, runtime in OURS_INT8]
    return specs


@dataclass
class Row:
    table: str  # "fp32 1.0-224"
    name: str
    kind: str
    precision: str
    median: float
    p90: float
    ratio: float | None  # median / best peer of the same precision
    quality: dict[str, float]
    note: str


def run_table(precision: str, s: Setup, specs: list[Spec], runtimes: set[str], threads: int, turns: int,
              block: int, skip: int, tmp: str, peak: _peak.Peak | None = None) -> list[Row]:
    title = f"{precision} {s.label}"
    entries: list[Entry] = []
    for name, kind, prec, runtime, factory in specs:
        if runtime not in runtimes:
            continue
        try:
            with quiet():
                e = factory()
        except (RuntimeError, ValueError) as err:  # e.g. OpenVINO has no kernel for ORT's s8 QDQ; a refused export
            print(f"  {name}: not run ({(str(err).strip().splitlines() or [type(err).__name__])[-1][:160]})")
            continue
        entries.append(Entry(name, kind, prec, e.call, e.outputs, e.note))
    if not entries:
        return []
    times = interleaved_medians({e.name: e.call for e in entries}, warmup=2 * skip, rounds=turns, block=block,
                                skip=skip, settle=SETTLE_SECONDS)
    print(f"\n{title}: {s.weights}; batch 1, {threads} threads, {turns} interleaved turns of {block} calls "
          f"after {SETTLE_SECONDS * 1e3:.0f} ms of untimed ones "
          f"(the last {block - skip} timed: {turns * (block - skip)} per path)"
          + (f"; int8 calibrated on {s.how}" if precision == "int8" else ""))
    rows: list[Row] = []
    best_peer = {p: min((median_ms(times[e.name]) for e in entries if e.kind == "peer" and e.precision == p),
                        default=None) for p in {e.precision for e in entries}}
    width = max(len(e.name) for e in entries)
    for e in entries:
        med, p90 = median_ms(times[e.name]), p90_ms(times[e.name])
        q = quality(s, e.outputs(s.x_all) if e.outputs is not None and s.x_all is not None and not e.note else None)
        bp = best_peer.get(e.precision)
        ratio = med / bp if bp else None
        rows.append(Row(title, e.name, e.kind, e.precision, med, p90, ratio, q, e.note))
        r = f"{ratio:6.3f}" if ratio is not None else "   n/a"
        print(f"  {e.name:<{width}}  {med:8.3f} ms (p90 {p90:7.3f})  {r} × best peer  "
              f"{_quality_text(q, e.note or ('n/a (random weights)' if s.x_all is None else ''))}")
    for p in sorted({e.precision for e in entries}):
        ours = [r for r in rows if r.kind == "ours" and r.precision == p]
        peers = [r for r in rows if r.kind == "peer" and r.precision == p]
        if ours and peers:
            o, b = min(ours, key=lambda r: r.median), min(peers, key=lambda r: r.median)
            verdict = "meets" if o.median <= b.median else "MISSES"
            print(f"  {p}: ours [{o.name}] {o.median:.3f} ms / best peer [{b.name}] {b.median:.3f} ms = "
                  f"{o.median / b.median:.3f} ({verdict} ≤ 1.0)")
    if precision == "fp32":
        _roofline(s, rows, threads, tmp, peak)
    if precision == "fp32" and not cpu.cpu_features().bf16:
        print("  bf16: not accelerated on this CPU (no AVX512_BF16 or AMX): not timed (it would run as fp32)")
    if precision == "int8" and s.google is not None and not s.embedding:
        lite = next((r for r in rows if r.name == "peer LiteRT on Google's uint8 file" and "top1" in r.quality), None)
        if lite is not None:
            for r in rows:
                if r.kind == "ours" and "top1" in r.quality:
                    d = r.quality["top1"] - lite.quality["top1"]
                    print(f"  {r.name}: top-1 {d:+.0f} points vs Google's file, agreement with fp32 "
                          f"{r.quality['agreement']:.0f}% ({'within' if d >= -1 else 'NOT within'} 1 point, this draw)")
    return rows


def _roofline(s: Setup, rows: list[Row], threads: int, tmp: str, peak: _peak.Peak | None = None) -> None:
    """How close the fastest fp32 path is to this machine's fp32 multiply rate and to its FMA
    units' measured peak, and what a given speed-up over the best peer (the issue's 0.8×) would
    need: a target above the FMA peak cannot be met by any fp32 kernel, only by doing less
    arithmetic or doing it in another precision. Then, from OpenVINO's per-layer counters on our
    file, how fast the 1x1 convolutions (95% of the Mult-Adds) already run, and the floor they
    alone would set at the sgemm rate and at the FMA peak."""
    fp32 = [r for r in rows if r.precision == "fp32" and r.kind in ("ours", "peer")]
    peers = [r for r in fp32 if r.kind == "peer"]
    if not fp32 or not peers:
        return
    report = mobilenets.cost(s.model)
    gflop = 2 * report.mult_adds / 1e9
    rate, blas = sgemm_gflops(threads)
    fastest, best_peer = min(fp32, key=lambda r: r.median), min(peers, key=lambda r: r.median)
    at = gflop / (fastest.median / 1e3)
    need = gflop / (0.8 * best_peer.median / 1e3)
    print(f"  roofline: this machine multiplies fp32 matrices at {rate:.0f} GFLOP/s ({threads} threads, 2048², {blas}); "
          f"the fastest fp32 path [{fastest.name}] runs this network's {gflop:.2f} GFLOP at {at:.0f} GFLOP/s "
          f"({100 * at / rate:.0f}% of it); 0.8× the best peer would need {need:.0f} GFLOP/s ({100 * need / rate:.0f}%)")
    if peak is not None:
        top = peak.fma.best
        print(f"  FMA peak: the cores' register FMA loop ({peak.isa}, {threads} threads, the best of its windows) "
              f"runs {top:.0f} GFLOP/s; sgemm is {100 * rate / top:.0f}% of it, the fastest fp32 path "
              f"{100 * at / top:.0f}%, and 0.8× the best peer would need {100 * need / top:.0f}% of it over the "
              f"whole network ({gflop / top * 1e3:.2f} ms if every FLOP ran at the peak, "
              f"{0.8 * best_peer.median:.2f} ms the target)")
    else:
        print(f"  FMA peak: {_peak.UNAVAILABLE}")
    xml = ours_file(tmp, s, ".xml")
    if not os.path.exists(xml):  # OpenVINO not among the runtimes run
        return
    try:
        ms = _openvino_layer_ms(xml, s.x1, threads)
    except Exception as e:  # noqa: BLE001 - a diagnostic line: the table stands without it
        print(f"  layers: n/a (OpenVINO's per-layer counters: {error_line(e, with_type=True)})")
        return
    if ms["1x1"] <= 0:  # no layer recognized as 1x1 (other node names or kernel names)
        print("  layers: n/a (no 1x1 convolution found in OpenVINO's per-layer counters)")
        return
    pointwise = 2 * report.by_type()["conv 1x1"]["mult_adds"] / 1e9
    floor = pointwise / rate * 1e3
    print(f"  layers (OpenVINO's per-layer counters, ours fp32): 1x1 convs {ms['1x1']:.2f} ms = "
          f"{pointwise / ms['1x1'] * 1e3:.0f} GFLOP/s ({100 * pointwise / ms['1x1'] * 1e3 / rate:.0f}% of sgemm), "
          f"depthwise {ms['depthwise']:.2f} ms, the rest {ms['rest']:.2f} ms; at the sgemm rate the 1x1 convs alone "
          f"would take {floor:.2f} ms"
          + (f" ({pointwise / peak.fma.best * 1e3:.2f} ms at the FMA peak, where they run at "
             f"{100 * pointwise / ms['1x1'] * 1e3 / peak.fma.best:.0f}% of it)" if peak is not None else "")
          + f", against {0.8 * best_peer.median:.2f} ms for 0.8× the best peer")


def _openvino_layer_ms(xml: str, x: np.ndarray, threads: int, calls: int = 200) -> dict[str, float]:
    """Milliseconds per call in OpenVINO's own per-layer counters (``PERF_COUNT``), summed into the
    1x1 convolutions (our pointwise layers: ``/pw/`` in their names, or a 1x1 kernel), the
    depthwise ones (grouped) and the rest (the stem, the classifier, reorders)."""
    import openvino as ov

    request = ov.Core().compile_model(xml, "CPU", {**openvino_config(threads, "fp32"), "PERF_COUNT": True}
                                      ).create_infer_request()
    for _ in range(20):
        request.infer({0: x})
    total = {"1x1": 0.0, "depthwise": 0.0, "rest": 0.0}
    for _ in range(calls):
        request.infer({0: x})
        for layer in request.profiling_info:
            if layer.node_type == "GroupConvolution":
                part = "depthwise"
            elif layer.node_type == "Convolution" and ("/pw/" in layer.node_name or "1x1" in layer.exec_type):
                part = "1x1"
            else:
                part = "rest"
            total[part] += layer.real_time.total_seconds() * 1e3 / calls
    return total


def calibration_draws(s: Setup, rows: list[Row], draws: int, n_calib: int, runtimes: set[str], threads: int,
                      tmp: str) -> None:
    """int8 top-1 over several calibration draws, against Google's file. On 100 images one image is
    one point, and which 50 are calibrated on moves an int8 path's top-1 by a point or two: one
    draw's "within 1 point" is a coin flip, the mean over draws is the figure to judge."""
    lite = next((r for r in rows if r.table == f"int8 {s.label}" and r.name == "peer LiteRT on Google's uint8 file"
                 and "top1" in r.quality), None)
    if draws < 2 or lite is None:
        return
    from mobilenets.deploy import load_calibration

    print(f"\nint8 {s.label} over {draws} calibration draws ({n_calib} of the 100 images each, seeds 0–{draws - 1}; "
          f"Google's file: top-1 {lite.quality['top1']:.0f}%, agrees with fp32 {lite.quality['agreement']:.0f}%)")
    for name, fmt, suffix, runtime in OURS_INT8:
        if runtime not in runtimes:
            continue
        top1, agree, refused = [], [], 0
        table = next((r for r in rows if r.table == f"int8 {s.label}" and r.name == name and "top1" in r.quality),
                     None)
        for seed in range(draws):
            if seed == 0:  # the table's own draw (make_setup calibrates with seed 0): already measured
                if table is None:
                    refused += 1
                else:
                    top1.append(table.quality["top1"])
                    agree.append(table.quality["agreement"])
                continue
            calib, _, _ = load_calibration(IMAGENET_SAMPLE, s.model, s.resolution, n_calib, seed=seed)
            try:
                with quiet():
                    runner = _our_int8(s, fmt, suffix, calib.numpy(), threads,
                                       os.path.join(tmp, f"draw{seed}_{s.label}"))
            except ValueError:  # export's own agreement check refused this draw: nothing written
                refused += 1
                continue
            q = quality(s, runner.run_all(s.x_all))
            top1.append(q["top1"])
            agree.append(q["agreement"])
        if not top1:
            print(f"  {name}: every draw refused by export's agreement check")
            continue
        d = statistics.mean(top1) - lite.quality["top1"]
        print(f"  {name}: top-1 {statistics.mean(top1):.1f}% (min {min(top1):.0f}, max {max(top1):.0f}; "
              f"{d:+.1f} points vs Google's file: {'within' if d >= -1 else 'NOT within'} 1 point), agreement "
              f"with fp32 {statistics.mean(agree):.1f}% (min {min(agree):.0f}: "
              f"{'≥' if min(agree) >= 95 else 'NOT ≥'} 95% in every draw)"
              + (f"; {refused} draw(s) refused by export" if refused else ""))


def _markdown(rows: list[Row]) -> str:
    lines = ["| table | path | latency ms (p90) | / best peer | quality on the 100 ImageNet samples |",
             "|---|---|---:|---:|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        name = f"**{r.name}**" if r.kind == "ours" else r.name
        lines.append(f"| {r.table} | {name} | {r.median:.2f} ({r.p90:.2f}) | {ratio} | "
                     f"{_quality_text(r.quality, r.note or '')} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- C: CIFAR-10

def part_c(checkpoint: str, data: str, n_calib: int, tmp: str) -> None:
    """int8 vs fp32 top-1 of a CIFAR-10 model on the CIFAR-10 test set, for each of our int8
    exports, calibrated on ``n_calib`` class-balanced training images (disjoint from the test set)."""
    from mobilenets.data import (
        balanced_subset,
        find_split,
        load_tensor_split,
        resolve_data,
        scan_split,
        to_input,
    )
    from mobilenets.inference import evaluate_dataset
    from mobilenets.train import load_trained

    model = load_trained(checkpoint)
    info = model.pretrained_cfg
    size = int(info.input_size or model.resolution)
    spec = info.preprocess or mobilenets.data.IMAGENET_PREPROCESS
    fp32 = evaluate_dataset(model, data, split="val", progress=False)
    root = resolve_data(data)
    index = scan_split(find_split(root, "train"), info.class_names)
    index = index.subset(balanced_subset(index.labels, n_calib, 0))
    images = load_tensor_split(index).images
    mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    calib = to_input(images, mean, std, size=size)
    print(f"\nC. CIFAR-10 test set, {checkpoint}: fp32 top-1 {fp32['top1']:.2f}% ({fp32['images']} images); "
          f"int8 calibrated on {n_calib} class-balanced train images")
    for fmt, name, batch in (("openvino", "cifar_int8.xml", "dynamic"), ("onnx", "cifar_int8.onnx", "dynamic"),
                             ("tflite", "cifar_int8.tflite", 100)):
        report = export(model, fmt, os.path.join(tmp, name), int8=True, calibration=calib,
                        calibration_images=n_calib, resolution=size, batch=batch)
        runner = open_runtime(report.path, fmt, precision="int8")

        class Int8(torch.nn.Module):
            def __init__(self, runner: Runner = runner) -> None:
                super().__init__()
                self.runner = runner
                self.dummy = torch.nn.Parameter(torch.zeros(1))
                self.pretrained_cfg = info
                self.resolution, self.num_classes = size, model.num_classes
                self.config = model.config

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(self.runner.run_all(np.ascontiguousarray(x.numpy())))

        with torch.inference_mode():
            int8 = evaluate_dataset(Int8(), data, split="val", progress=False, device="cpu")
        drop = fp32["top1"] - int8["top1"]
        print(f"  {fmt:<9} int8 ({report.toolchain.split(':')[0]}): top-1 {int8['top1']:.2f}%, drop {drop:+.2f} points "
              f"({'meets' if drop <= 1.0 else 'MISSES'} ≤ 1.0)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=300, help="timed calls per path, about (in turns of 50)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_TURNS} turns of {QUICK_BLOCK} calls per path, {QUICK_CALIBRATION} calibration "
                         "images, no reference rows")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"α-ρ tables to run (default {','.join(CONFIGS)})")
    ap.add_argument("--precisions", default="fp32,int8", help="fp32 (with bf16 where accelerated), int8")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="runtimes to include, peers and ours alike")
    ap.add_argument("--calibration-images", type=int, default=50,
                    help="int8: a seeded random sample of the ImageNet samples (the rest are held out)")
    ap.add_argument("--calibration-draws", type=int, default=5,
                    help="int8 top-1 of our paths over this many calibration draws (1: the table's draw only)")
    ap.add_argument("--cifar-checkpoint", help="a CIFAR-10 model from `mobilenets train` (best.pt or run dir)")
    ap.add_argument("--cifar-data", default=str(DATA / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--cifar-calibration", type=int, default=500, help="training images to calibrate on")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    precisions = [p for p in args.precisions.split(",") if p]
    runtimes = {r for r in args.runtimes.split(",") if r}
    for what, given, known in (("config", configs, CONFIGS), ("precision", precisions, ("fp32", "int8")),
                               ("runtime", runtimes, RUNTIMES)):
        bad = [g for g in given if g not in known]
        if bad:
            ap.error(f"unknown {what} {bad[0]!r}; choose from {', '.join(known)}")
    warnings.filterwarnings("ignore")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    import onnxruntime
    import openvino

    features = cpu.cpu_features()
    print(f"machine: {machine()}")
    print(f"CPU features: {', '.join(features.flags()) or 'none of ' + ', '.join(cpu.FEATURE_NAMES)}; "
          f"VNNI {'yes' if features.vnni else 'no'}, bf16 {'accelerated' if features.bf16 else 'not accelerated'}")
    print("int8 settings for this CPU: ONNX Runtime "
          f"{REGISTRY['onnx'].describe(True)}; OpenVINO {REGISTRY['openvino'].describe(True)}")
    print(f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}, "
          f"timm {__import__('timm').__version__}")
    peak = _peak.measure(args.threads)
    print(_peak.steadiness(peak, "before the tables"))
    if args.quick:
        block, skip, turns, n_calib = QUICK_BLOCK, QUICK_SKIP, QUICK_TURNS, min(args.calibration_images,
                                                                                QUICK_CALIBRATION)
    else:
        block, skip, n_calib = BLOCK, SKIP, args.calibration_images
        turns = max(1, args.rounds // (BLOCK - SKIP))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="deploy-cpu-") as tmp:
        for label in configs:
            s = make_setup(label, n_calib, tmp)
            for precision in precisions:
                specs = fp32_specs(s, args.threads, tmp, args.quick) if precision == "fp32" else \
                    int8_specs(s, args.threads, tmp)
                rows += run_table(precision, s, specs, runtimes, args.threads, turns, block, skip, tmp, peak)
                if precision == "int8" and not args.quick and not s.embedding:
                    calibration_draws(s, rows, args.calibration_draws, n_calib, runtimes, args.threads, tmp)
        if args.cifar_checkpoint:
            part_c(args.cifar_checkpoint, args.cifar_data, args.cifar_calibration, tmp)
    print("\n" + _peak.steadiness(_peak.measure(args.threads), "after the tables"))
    print("\nsummary (markdown; bold = ours; ratio = median / the fastest peer of the same precision):\n")
    print(_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
