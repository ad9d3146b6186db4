"""SSD MobileNet V1 on the CPU: batch-1 latency, 2 threads, every path in one run, interleaved in
turns (20 calls per turn, the first 5 not timed), plus COCO128 val mAP of the paths that change
the numbers (int8).

Paths: the detector graphs (preprocessed input → box encodings and class scores), each in its
runtime; LiteRT runs Google's whole file (its post-processing op included, 10 boxes). Our decoding +
NMS (torchvision's box coder and batched_nms, 100 boxes) is timed on its own, in each ``nms_mode``
(multiclass: the default, the best 1000 (anchor, class) pairs into per-class NMS; exact: every
candidate, the reference it equals; fast: TFLite's use_regular_nms=false) at an app's score
threshold (0.01) and at the evaluation's (1e-8), with PyTorch's 2 intra-op threads and with 1 (the
better choice for this small-tensor work, and far steadier when other programs load the CPU); the
default at the app's threshold is added in the "ours end to end" lines. Two paths run decoding + NMS inside the file (``export --nms``) and are
end to end themselves. torchvision's SSDLite has random weights, so only its graph is timed
(decoding random scores would time NMS over thousands of boxes).
  ours  SSD α=0.75 (Google's weights, ported): PyTorch eager; ONNX Runtime fp32; OpenVINO fp32;
        ONNX Runtime int8 and LiteRT int8 (our exports, calibrated on COCO128 train images);
        ONNX Runtime int8 with NonMaxSuppression in the graph (score >= 0.01, 100 boxes); LiteRT
        int8 with TFLite_Detection_PostProcess (fast NMS, 10 boxes: Google's file's settings)
  peers LiteRT on Google's uint8 file (its own TFLite_Detection_PostProcess);
        torchvision ssdlite320_mobilenet_v3_large (random weights) in PyTorch eager and ONNX Runtime

    python benchmarks/detect_cpu.py [--rounds 15] [--no-map]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _peak
from _timing import interleaved_medians, machine, median_ms

DATA = Path(os.environ.get("MOBILENETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SSD_FILE = DATA / "tflite" / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
E2E_ORT = "ours ONNX Runtime int8 + NMS in the file (multiclass, score >= 0.01, 100 boxes)"
E2E_LITERT = "ours LiteRT int8 + TFLite_Detection_PostProcess (fast, 10 boxes)"


def _ours(ssd, run_raw, mode=None):
    """A path: raw graph in some runtime, then our decode + NMS (the same for every runtime)."""
    anchors = ssd.anchors_xyxy()

    def detect(x: np.ndarray):
        boxes, scores = run_raw(x)
        return [ssd.detections_from_scores(torch.from_numpy(np.asarray(boxes))[0],
                                           torch.from_numpy(np.asarray(scores))[0], anchors, (300, 300), mode=mode)]
    return detect


def _threads(n: int, fn, x):
    torch.set_num_threads(n)
    try:
        return fn(x)
    finally:
        torch.set_num_threads(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-map", action="store_true", help="skip the COCO128 mAP of the int8 paths")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import mobilenets
    from mobilenets.data import load_image
    from mobilenets.deploy.timing import SETTLE_SECONDS
    from mobilenets.deploy.detector import DetectorGraph, export_detector, open_detector_runtime, runtime_detections
    from mobilenets.inference.detect import resize_for_detector
    from mobilenets.models.detection import NMS_MODES

    if not SSD_FILE.is_file():
        sys.exit(f"needs {SSD_FILE} (set MOBILENETS_DATA)")
    print(f"machine: {machine()}")
    print(_peak.steadiness(_peak.measure(2), "before the timing"))
    ssd = mobilenets.load_detector(SSD_FILE)
    graph = DetectorGraph(mobilenets.fuse(ssd)).eval()
    image = resize_for_detector(load_image(DATA / "tflite" / "grace_hopper.bmp"), 300)
    mean = np.asarray(ssd.transform.image_mean, np.float32)[None, :, None, None]
    std = np.asarray(ssd.transform.image_std, np.float32)[None, :, None, None]
    x = np.ascontiguousarray((image.transpose(2, 0, 1)[None].astype(np.float32) / 255 - mean) / std)
    tmp = Path(tempfile.mkdtemp(prefix="detect-bench-"))
    coco = DATA / "coco128.tar.gz"
    export_detector(ssd, "onnx", tmp / "ssd.onnx")
    export_detector(ssd, "openvino", tmp / "ssd.xml")
    export_detector(ssd, "onnx", tmp / "ssd_int8.onnx", int8=True, calibration=coco, calibration_images=16)
    export_detector(ssd, "tflite", tmp / "ssd_int8.tflite", int8=True, calibration=coco, calibration_images=16)
    import copy

    deployed = copy.copy(ssd)  # what an app runs: candidates scoring ≥ 0.01 (mAP needs 1e-8)
    deployed.score_thresh = 0.01
    google_like = copy.copy(ssd)  # Google's file's post-processing: fast NMS, 10 boxes, score > 1e-8
    google_like.detections_per_img = 10
    export_detector(deployed, "onnx", tmp / "ssd_int8_nms.onnx", int8=True, calibration=coco, calibration_images=16,
                    postprocess="multiclass")
    export_detector(google_like, "tflite", tmp / "ssd_int8_nms.tflite", int8=True, calibration=coco,
                    calibration_images=16, postprocess="fast")

    def eager(a: np.ndarray):
        with torch.no_grad():
            return tuple(t.numpy() for t in graph(torch.from_numpy(a)))

    raw = {
        "ours PyTorch eager fp32": eager,
        "ours ONNX Runtime fp32": open_detector_runtime(tmp / "ssd.onnx", "onnx", threads=2),
        "ours OpenVINO fp32": open_detector_runtime(tmp / "ssd.xml", "openvino", threads=2),
        "ours ONNX Runtime int8": open_detector_runtime(tmp / "ssd_int8.onnx", "onnx", threads=2, precision="int8"),
        "ours LiteRT int8": open_detector_runtime(tmp / "ssd_int8.tflite", "tflite", threads=2),
    }
    whole = {  # decoding + NMS in the file: end to end
        E2E_ORT: open_detector_runtime(tmp / "ssd_int8_nms.onnx", "onnx", threads=2),
        E2E_LITERT: open_detector_runtime(tmp / "ssd_int8_nms.tflite", "tflite", threads=2),
    }
    paths = {name: (lambda fn=fn: fn(x)) for name, fn in {**raw, **whole}.items()}
    boxes0, scores0 = raw["ours ONNX Runtime fp32"](x)
    decoders = {}
    for mode in NMS_MODES:
        for setting, model in (("app", deployed), ("map", ssd)):
            fn = _ours(model, lambda _x: (boxes0, scores0), mode)
            for threads in (2, 1):  # 1: PyTorch's intra-op pool not used (small tensors; robust on a busy CPU)
                decoders[f"decode {mode} {setting} {threads}"] = fn
                paths[f"decode {mode} {setting} {threads}"] = lambda fn=fn, t=threads: _threads(t, fn, x)

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(SSD_FILE), num_threads=2)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]

    def litert():
        interp.set_tensor(inp, image[None])
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])
    paths["LiteRT on Google's uint8 file"] = litert

    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    x320 = torch.randn(1, 3, 320, 320)

    class TVRaw(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            out = self.m.head(list(self.m.backbone(t).values()))
            return out["bbox_regression"], out["cls_logits"]

    tv_raw = TVRaw(tv).eval()
    @torch.no_grad()
    def tv_eager():
        return tv_raw(x320)
    torch.onnx.export(tv_raw, (x320,), str(tmp / "tv.onnx"), dynamo=True, input_names=["x"]).save(str(tmp / "tv.onnx"))
    import onnxruntime as ort

    from mobilenets.deploy.formats.onnx import ort_session_options

    sess = ort.InferenceSession(str(tmp / "tv.onnx"), ort_session_options(2), providers=["CPUExecutionProvider"])
    xn = x320.numpy()

    def tv_ort():
        return sess.run(None, {sess.get_inputs()[0].name: xn})
    paths["torchvision SSDLite320 MobileNetV3 eager"] = tv_eager
    paths["torchvision SSDLite320 MobileNetV3 ONNX Runtime"] = tv_ort

    times = interleaved_medians(paths, warmup=3, rounds=args.rounds, block=10, skip=2, settle=SETTLE_SECONDS)
    med = {name: median_ms(t) for name, t in times.items()}
    post = {name: med.pop(name) for name in decoders}
    ref = med["LiteRT on Google's uint8 file"]
    print(f"\nbatch 1, 2 threads, {args.rounds} turns of 10 calls (first 2 untimed); ratio = path / LiteRT")
    for name, m in sorted(med.items(), key=lambda kv: kv[1]):
        print(f"  {name:<48} {m:8.2f} ms   {m / ref:5.2f}×")
    print("ours decode + NMS (torchvision box coder + batched_nms, 100 boxes), by nms_mode; PyTorch threads 2 | 1:")
    for mode in NMS_MODES:
        for setting, what in (("app", "app settings (score >= 0.01)"), ("map", "mAP settings (score > 1e-8)")):
            print(f"  {mode + ', ' + what:<48} {post[f'decode {mode} {setting} 2']:8.2f} ms | "
                  f"{post[f'decode {mode} {setting} 1']:6.2f} ms")
    best = min((m, n) for n, m in med.items() if n.startswith("ours") and n not in whole)
    for threads in (2, 1):
        total = best[0] + post[f"decode {NMS_MODES[0]} app {threads}"]
        name = f"ours end to end: {best[1].removeprefix('ours ')} + decode (app, {threads} thread{'s' * (threads > 1)})"
        print(f"  {name:<48} {total:8.2f} ms   {total / ref:5.2f}×")
    print(_peak.steadiness(_peak.measure(2), "after the timing"))
    if args.no_map:
        return
    from mobilenets.data.detection import open_detection_data
    from mobilenets.tasks.coco_eval import coco_map

    index = open_detection_data(coco, "val")
    preds = {"ours ONNX Runtime int8": [], "ours ONNX Runtime fp32": [], "ours LiteRT int8": [],
             "LiteRT on Google's uint8 file (raw decode)": [], E2E_ORT: [], E2E_LITERT: [],
             "LiteRT on Google's uint8 file (its post-processing, 10 boxes)": []}
    from mobilenets.weights.tflite_graph import read_tflite_graph

    graph_info = read_tflite_graph(SSD_FILE)
    post_op = next(op for op in graph_info.ops if "PostProcess" in op.op)
    lite_raw = Interpreter(model_path=str(SSD_FILE), num_threads=2, experimental_preserve_all_tensors=True)
    lite_raw.allocate_tensors()

    def deq(i):
        t, d = graph_info.tensors[i], lite_raw.get_tensor(i)
        return (d.astype(np.float32) - t.zero_point[0]) * t.scale[0] if t.quantized else d

    preds["ours ONNX Runtime fp32, nms_mode=fast"] = []  # (exact: the same detections as multiclass, see the tests)
    for s in index.samples:
        a = resize_for_detector(load_image(s.path), 300)
        xa = np.ascontiguousarray((a.transpose(2, 0, 1)[None].astype(np.float32) / 255 - mean) / std)
        scale = torch.tensor([s.width, s.height] * 2, dtype=torch.float32) / 300
        outputs = {name: raw[name](xa) for name in ("ours ONNX Runtime int8", "ours ONNX Runtime fp32",
                                                    "ours LiteRT int8")}
        for name, o in outputs.items():
            d = _ours(ssd, lambda _x, o=o: o)(xa)[0]
            preds[name].append({**d, "boxes": d["boxes"] * scale})
        for name, fn in whole.items():
            d = runtime_detections(fn(xa), "tflite" if "LiteRT" in name else "onnx", 300)
            preds[name].append({**d, "boxes": d["boxes"] * scale})
        d = _ours(ssd, lambda _x, o=outputs["ours ONNX Runtime fp32"]: o, "fast")(xa)[0]
        preds["ours ONNX Runtime fp32, nms_mode=fast"].append({**d, "boxes": d["boxes"] * scale})
        lite_raw.set_tensor(lite_raw.get_input_details()[0]["index"], a[None])
        lite_raw.invoke()
        lite = (deq(post_op.inputs[0])[:, :, [1, 0, 3, 2]], deq(post_op.inputs[1]))
        d = _ours(ssd, lambda _x, lite=lite: lite)(xa)[0]
        preds["LiteRT on Google's uint8 file (raw decode)"].append({**d, "boxes": d["boxes"] * scale})
        own = runtime_detections(tuple(lite_raw.get_tensor(o["index"]) for o in lite_raw.get_output_details()),
                                 "tflite", 300)
        preds["LiteRT on Google's uint8 file (its post-processing, 10 boxes)"].append(
            {**own, "boxes": own["boxes"] * scale})
    print(f"\nCOCO128 val2017 ({len(index)} images), decoded alike (sigmoid, NMS 0.6, top 100; nms_mode "
          f"{NMS_MODES[0]} unless named):")
    for name, p in preds.items():
        m = coco_map(p, index.samples)
        print(f"  {name:<48} mAP {100 * m['map']:.2f}  AP50 {100 * m['map50']:.2f}")


if __name__ == "__main__":
    main()
