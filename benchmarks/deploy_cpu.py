"""Deployment latency on CPU: our exports in the best runtime vs timm's model exported plainly.

    python benchmarks/deploy_cpu.py [--threads 2] [--rounds 300] [--cifar-checkpoint RUN/best.pt]

Everything is timed in one process, interleaved in turns of 50 calls (the first 10 of each turn
not recorded, so one runtime's spinning threads do not slow the next), batch 1,
the same number of threads for every runtime; medians (p90 in brackets) and ratios
ours / best peer (≤ 1.0 means ours is not slower).

Targets (issue 5):
  A. fp32, α=1.0, ρ=224: our fastest fp32 path ≤ the best fp32 peer (ONNX Runtime or
     OpenVINO on timm's `mobilenetv1_100` exported with torch.onnx.export); our bf16 path
     ≤ OpenVINO's bf16 on timm's export, with bf16's top-1 agreement vs fp32 reported.
  B. int8, α=0.5, ρ=160: our int8 export ≤ the fastest of LiteRT on Google's uint8 file,
     ONNX Runtime int8 and OpenVINO int8 (on a plain export quantized with the tools' defaults),
     with top-1 on the ImageNet samples within 1 point of LiteRT's.
  C. (optional, --cifar-checkpoint) int8 vs fp32 top-1 of a CIFAR-10 model on the CIFAR-10
     test set: ≤ 1.0 point drop.

"Peer" = the model exported plainly and run with the runtime's defaults (threads fixed);
"ours" = BN folded, static shapes, ReLU6 as a clip fused into the conv, our quantization
(NNCF with bias correction, per-channel weights), run with a latency configuration (one
stream, LATENCY hint, fixed threads, zero-copy inputs/outputs). The "timm file + our runtime
settings" rows show how much of the gain is the runtime configuration rather than the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from _timing import interleaved_medians, machine, median_ms, p90_ms

from mobilenets.deploy.formats import REGISTRY

import mobilenets
from mobilenets.deploy import Runner, export, load_calibration, open_runtime
from mobilenets.deploy.support import quiet
from mobilenets.quant import fuse

DATA = Path(os.environ.get("MOBILENETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GOOGLE_050_160 = DATA / "tflite" / "mobilenet_v1_0.5_160_quant.tflite"
IMAGENET_SAMPLE = DATA / "imagenet-sample"
# Calls per turn, and how many at its start are not timed: ONNX Runtime's and OpenVINO's threads
# spin for a while after a call and would slow whichever runtime ran next if turns were single
# calls; XNNPACK's (LiteRT) sleep when idle and need a few calls to be hot again.
BLOCK, SKIP = 50, 10


def _print_table(title: str, times: dict[str, list[float]]) -> dict[str, float]:
    print(f"\n{title}")
    width = max(len(k) for k in times)
    med = {k: median_ms(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:<{width}}  {med[k]:8.3f} ms  (p90 {p90_ms(v):7.3f})")
    return med


def _ratio(label: str, ours: dict[str, float], peers: dict[str, float], target: float = 1.0) -> float:
    o_name, o = min(ours.items(), key=lambda kv: kv[1])
    p_name, p = min(peers.items(), key=lambda kv: kv[1])
    r = o / p
    print(f"  {label}: ours [{o_name}] {o:.3f} ms / best peer [{p_name}] {p:.3f} ms = {r:.3f}  "
          f"({'meets' if r <= target else 'MISSES'} ≤ {target:.1f})")
    return r


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


def _fed(runner: Runner, x: np.ndarray) -> Callable[[], Any]:
    """One call of ``runner`` on ``x`` already in the file's layout (no conversion timed)."""
    v = runner.prepare(x)
    return lambda: runner(v)


def _plain_onnx(model: torch.nn.Module, x: torch.Tensor, path: str) -> str:
    with quiet():
        torch.onnx.export(model, (x,), path, dynamo=True, external_data=False)  # "exported plainly"
    return path


# ----------------------------------------------------------------------------- A: fp32 / bf16

def part_a(threads: int, rounds: int, tmp: str) -> dict[str, float]:
    import timm

    torch.manual_seed(0)
    x_t = torch.randn(1, 3, 224, 224)
    x = x_t.numpy()
    peer_model = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    ours_model = mobilenets.create_model("mobilenet_v1_100_224", activation="relu6").eval()
    assert mobilenets.cost(ours_model).params == sum(p.numel() for p in peer_model.parameters())
    timm_onnx = _plain_onnx(peer_model, x_t, os.path.join(tmp, "timm.onnx"))
    ours_onnx = export(ours_model, "onnx", os.path.join(tmp, "ours.onnx")).path
    ours_xml = export(ours_model, "openvino", os.path.join(tmp, "ours.xml")).path
    ours_tflite = export(ours_model, "tflite", os.path.join(tmp, "ours.tflite")).path
    fused = fuse(ours_model).to(memory_format=torch.channels_last)
    x_cl = x_t.contiguous(memory_format=torch.channels_last)

    def torch_eager(m: torch.nn.Module, inp: torch.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return m(inp)
        return run

    fns = {
        "peer timm eager fp32 (torch)": torch_eager(peer_model, x_t),
        "peer ORT fp32 (timm.onnx)": (lambda f=_peer_ort(timm_onnx, threads): f(x)),
        "peer OpenVINO fp32 (timm.onnx)": (lambda f=_peer_ov(timm_onnx, threads, "f32"): f(x)),
        "peer OpenVINO default precision (timm.onnx)": (lambda f=_peer_ov(timm_onnx, threads): f(x)),
        "timm.onnx + our ORT settings": _fed(open_runtime(timm_onnx, "onnx", threads=threads), x),
        "timm.onnx + our OpenVINO settings fp32": _fed(open_runtime(timm_onnx, "openvino", threads=threads), x),
        "ours torch eager fp32 (fused, NHWC)": torch_eager(fused, x_cl),
        "ours ORT fp32": _fed(open_runtime(ours_onnx, "onnx", threads=threads), x),
        "ours OpenVINO fp32": _fed(open_runtime(ours_xml, "openvino", threads=threads), x),
        "ours LiteRT fp32 (XNNPACK)": _fed(open_runtime(ours_tflite, "tflite", threads=threads), x),
    }
    from mobilenets.deploy import cpu

    bf16 = cpu.cpu_features().bf16
    if bf16:  # a precision the CPU cannot accelerate is reported, not timed as something else
        fns["ours OpenVINO bf16"] = _fed(open_runtime(ours_xml, "openvino", threads=threads, precision="bf16"), x)
    else:
        print("  bf16: not accelerated on this CPU (no AVX512_BF16 or AMX): not timed")
    med = _print_table(f"A. α=1.0 ρ=224, batch 1, {threads} threads (interleaved turns of {BLOCK} calls, the last {BLOCK - SKIP} timed; {max(1, rounds // (BLOCK - SKIP)) * (BLOCK - SKIP)} per path)",
                       interleaved_medians(fns, warmup=20, rounds=max(1, rounds // (BLOCK - SKIP)), block=BLOCK, skip=SKIP))
    print("  ratios:")
    ratios = {
        "fp32": _ratio("fp32", {k: v for k, v in med.items() if k.startswith("ours") and "fp32" in k},
                       {k: med[k] for k in ("peer ORT fp32 (timm.onnx)", "peer OpenVINO fp32 (timm.onnx)")}),
    }
    if bf16:
        ratios["bf16"] = _ratio("bf16", {"ours OpenVINO bf16": med["ours OpenVINO bf16"]},
                                {"peer OpenVINO default precision (timm.onnx)":
                                 med["peer OpenVINO default precision (timm.onnx)"]})
    fastest = min(v for k, v in med.items() if k.startswith("ours") and "fp32" in k)
    print(f"  vs timm eager fp32: ours fastest fp32 is {med['peer timm eager fp32 (torch)'] / fastest:.1f}× faster")
    return ratios


# ----------------------------------------------------------------------------- B: int8

def _litert_runner(path: Path, threads: int, scale: float, zero: int) -> tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    from mobilenets.data import quantize_input

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def raw(q: np.ndarray) -> Any:
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        return interp.get_tensor(out["index"])

    def logits(x: np.ndarray) -> np.ndarray:
        rows = []
        for sample in x:
            q = quantize_input(torch.from_numpy(sample), scale, zero).permute(1, 2, 0)[None].numpy()
            rows.append(raw(q)[0].astype(np.float32))
        return np.stack(rows)
    return raw, logits


def part_b(threads: int, rounds: int, tmp: str) -> dict[str, float]:
    from mobilenets.data import list_images
    from mobilenets.inference import Classifier, imagenet_target

    have_data = GOOGLE_050_160.is_file() and IMAGENET_SAMPLE.is_dir()
    if not have_data:
        print(f"\nB. skipped: needs {GOOGLE_050_160} and {IMAGENET_SAMPLE}")
        return {}
    model = mobilenets.load_pretrained(GOOGLE_050_160)
    classifier = Classifier(model)
    paths = list_images([IMAGENET_SAMPLE])
    x_all = torch.stack([classifier.preprocess(p) for p in paths]).numpy()
    y = np.array([imagenet_target(p) + 1 for p in paths])
    # Calibrate on a seeded random half; report top-1 on all 100 and on the held-out half.
    calib_t, held_t, how = load_calibration(IMAGENET_SAMPLE, model, 160, 50, seed=0)
    calib = calib_t.numpy()
    held_keys = {a.tobytes() for a in held_t.numpy()} if held_t is not None else set()
    held_mask = np.array([s.tobytes() in held_keys for s in x_all])

    peer_onnx = _plain_onnx(model, torch.from_numpy(x_all[:1]), os.path.join(tmp, "peer_050_160.onnx"))
    peer_q = os.path.join(tmp, "peer_050_160_int8.onnx")
    import nncf
    import onnx
    import openvino as ov
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    input_name = onnx.load(peer_onnx).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            v = next(self.it, None)
            return None if v is None else {input_name: v}

    with quiet():
        quantize_static(peer_onnx, peer_q, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)  # tool defaults
        peer_nncf = os.path.join(tmp, "peer_050_160_nncf.xml")
        ov.save_model(nncf.quantize(ov.convert_model(peer_onnx), nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])),
                      peer_nncf)
    ours_xml = export(model, "openvino", os.path.join(tmp, "ours_050_160_int8.xml"), int8=True, calibration=calib,
                      calibration_images=len(calib))
    ours_onnx = export(model, "onnx", os.path.join(tmp, "ours_050_160_int8.onnx"), int8=True, calibration=calib,
                       calibration_images=len(calib))
    ours_tflite = export(model, "tflite", os.path.join(tmp, "ours_050_160_int8.tflite"), int8=True, calibration=calib,
                         calibration_images=len(calib))
    ours_fp32_xml = export(model, "openvino", os.path.join(tmp, "ours_050_160.xml")).path

    scale, zero = model.pretrained_cfg.input_quantization
    lite_raw, lite_logits = _litert_runner(GOOGLE_050_160, threads, scale, zero)
    q1 = np.ascontiguousarray(np.round(x_all[:1] / scale + zero).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
    x1 = np.ascontiguousarray(x_all[:1])
    runners: dict[str, Runner] = {"peer ORT int8 (QDQ defaults)": Runner("ort", _peer_ort(peer_q, threads), 1)}
    try:
        runners["peer OpenVINO int8 (same QDQ file)"] = Runner("ov", _peer_ov(peer_q, threads), 1)
    except RuntimeError as e:  # OpenVINO's CPU plugin has no kernel for some of ORT's default QDQ (s8 activations)
        print(f"\n  peer OpenVINO int8 on ORT's default QDQ file: cannot compile ({str(e).strip().splitlines()[-1][:90]})")
    runners.update({
        "peer OpenVINO int8 (NNCF defaults)": Runner("ov", _peer_ov(peer_nncf, threads), 1),
        "ours ORT int8": open_runtime(ours_onnx.path, "onnx", threads=threads, precision="int8"),
        "ours OpenVINO int8": open_runtime(ours_xml.path, "openvino", threads=threads, precision="int8"),
        "ours LiteRT int8": open_runtime(ours_tflite.path, "tflite", threads=threads, precision="int8"),
    })
    fns: dict[str, Callable[[], Any]] = {"peer LiteRT uint8 (Google's file)": lambda: lite_raw(q1)}
    fns.update({k: _fed(r, x1) for k, r in runners.items()})
    med = _print_table(f"B. α=0.5 ρ=160 int8, batch 1, {threads} threads (interleaved turns of {BLOCK} calls, the last {BLOCK - SKIP} timed; {max(1, rounds // (BLOCK - SKIP)) * (BLOCK - SKIP)} per path)",
                       interleaved_medians(fns, warmup=50, rounds=max(1, rounds // (BLOCK - SKIP)), block=BLOCK, skip=SKIP))
    print("  ratio:")
    ratio = _ratio("int8", {k: v for k, v in med.items() if k.startswith("ours")},
                   {k: v for k, v in med.items() if k.startswith("peer")})

    with torch.inference_mode():
        fp32 = model(torch.from_numpy(x_all)).numpy().argmax(1)
    preds = {"fp32 PyTorch": fp32, "LiteRT (Google's uint8 file)": lite_logits(x_all).argmax(1)}

    for k, r in runners.items():
        preds[k] = r.run_all(x_all).argmax(1)
    from mobilenets.deploy import cpu

    bf16 = None
    if cpu.cpu_features().bf16:
        bf16 = open_runtime(ours_fp32_xml, "openvino", threads=threads, precision="bf16").run_all(x_all).argmax(1)
        preds["ours OpenVINO bf16"] = bf16
    print(f"\n  top-1 on {len(y)} ImageNet samples (calibration: {how}; held-out = the other {int(held_mask.sum())}):")
    acc = {}
    for k, p in preds.items():
        acc[k] = 100 * float((p == y).mean())
        print(f"    {k:<38} all {acc[k]:5.1f}%  held-out {100 * float((p == y)[held_mask].mean()):5.1f}%  "
              f"agreement with fp32 {100 * float((p == fp32).mean()):5.1f}%")
    lite = acc["LiteRT (Google's uint8 file)"]
    best_peer = min(v for k, v in med.items() if k.startswith("peer"))
    print(f"  each of ours: latency / fastest peer ({best_peer:.3f} ms), top-1 vs LiteRT on Google's file ({lite:.0f}%):")
    passing = []
    for k in sorted((k for k in med if k.startswith("ours")), key=med.get):
        fast, close = med[k] / best_peer <= 1.0, acc[k] >= lite - 1.0
        print(f"    {k:<20} {med[k] / best_peer:6.3f}  {acc[k] - lite:+5.1f} points  "
              f"{'meets both' if fast and close else 'misses ' + ' and '.join(w for w, ok in (('speed', fast), ('accuracy', close)) if not ok)}")
        if fast and close:
            passing.append(k)
    chosen = passing[0] if passing else min((k for k in med if k.startswith("ours")), key=med.get)
    ours = acc[chosen]
    agreement = f"{100 * float((bf16 == fp32).mean()):.1f}%" if bf16 is not None else "n/a (no bf16 on this CPU)"
    print(f"  target B: {'meets' if passing else 'MISSES'} with {chosen} ({med[chosen]:.3f} ms, {ours:.0f}%); "
          f"bf16 vs fp32 top-1 agreement {agreement}")
    return {"int8": ratio, "int8_top1": ours, "litert_top1": lite}


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
            def __init__(self) -> None:
                super().__init__()
                self.dummy = torch.nn.Parameter(torch.zeros(1))
                self.pretrained_cfg = info
                self.resolution, self.num_classes = size, model.num_classes
                self.config = model.config

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(runner.run_all(np.ascontiguousarray(x.numpy())))

        with torch.inference_mode():
            int8 = evaluate_dataset(Int8(), data, split="val", progress=False, device="cpu")
        drop = fp32["top1"] - int8["top1"]
        print(f"  {fmt:<9} int8 ({report.toolchain.split(':')[0]}): top-1 {int8['top1']:.2f}%, drop {drop:+.2f} points "
              f"({'meets' if drop <= 1.0 else 'MISSES'} ≤ 1.0)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--parts", default="ab", help="which parts to run: a, b (and c with --cifar-checkpoint)")
    ap.add_argument("--cifar-checkpoint", help="a CIFAR-10 model from `mobilenets train` (best.pt or run dir)")
    ap.add_argument("--cifar-data", default=str(DATA / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--cifar-calibration", type=int, default=500, help="training images to calibrate on")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    import onnxruntime
    import openvino

    from mobilenets.deploy import cpu

    print(f"machine: {machine()}\nCPU features: {cpu.cpu_features().summary()}")
    print("int8 settings for this CPU: ONNX Runtime "
          f"{REGISTRY['onnx'].describe(True)}; OpenVINO {REGISTRY['openvino'].describe(True)}")
    print(f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}, "
          f"timm {__import__('timm').__version__}")
    with tempfile.TemporaryDirectory(prefix="deploy-cpu-") as tmp:
        if "a" in args.parts:
            part_a(args.threads, args.rounds, tmp)
        if "b" in args.parts:
            part_b(args.threads, args.rounds, tmp)
        if args.cifar_checkpoint:
            part_c(args.cifar_checkpoint, args.cifar_data, args.cifar_calibration, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
