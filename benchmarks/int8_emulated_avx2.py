"""int8 accuracy as a CPU without VNNI computes it, checked on any x86 machine.

    apt install qemu-user
    python benchmarks/int8_emulated_avx2.py [--draws 5] [--formats openvino,onnx,tflite] [--cpu EPYC-Milan]

Our int8 exports of Google's 0.5-160 weights are made here with the settings for an AVX2-only CPU
(``cpu.cpu_features`` stands in for one: the settings are chosen from it), on the calibration of
``tests/deploy/test_export.py`` (the 50 even-numbered samples) and on ``--draws`` seeded random
draws of 50, as ``deploy_cpu.py --calibration-draws`` makes them. Each file then runs in its
runtime under QEMU's user-mode emulation of an AVX2 EPYC (``qemu-x86_64 -cpu EPYC-Milan``: AVX2
and FMA, no AVX-512, VNNI or BF16). The runtimes read the CPU's features from cpuid, so they pick
the kernels they pick on such a machine (OpenVINO names the CPU "AMD EPYC-Milan Processor" and
drops BF16 from its capabilities). Integer arithmetic is exact, so the emulated int8 results are
that machine's: NNCF's settings give the same 69 / 92–93 of 100 agreeing with fp32 here as they
gave on the real AVX2 EPYC. Google's uint8 file runs under emulation too.

Each path is judged as ``deploy_cpu.py --calibration-draws`` judges it (one image is one point,
so one draw's top-1 is noise): the mean top-1 over the draws on the 100 ImageNet samples within
1 point of Google's file, and ≥ 95 of the 100 agreeing with PyTorch fp32 in every draw. Accuracy only:
emulated time says nothing about AVX2 speed, so nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("MOBILENETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GOOGLE = DATA / "tflite" / "mobilenet_v1_0.5_160_quant.tflite"
SAMPLES = DATA / "imagenet-sample"
SUFFIX = {"openvino": ".xml", "onnx": ".onnx", "tflite": ".tflite"}
NAME = {"openvino": "ours OpenVINO (NNCF)", "onnx": "ours ONNX Runtime", "tflite": "ours LiteRT"}


def fail(message: str) -> None:
    print(f"int8_emulated_avx2: {message}", file=sys.stderr)
    sys.exit(2)


def avx2_features():
    from mobilenets.deploy import cpu

    return cpu.CpuFeatures("AuthenticAMD", "AMD EPYC (emulated AVX2)", 2, avx2=True, avx512=False,
                           avx512_vnni=False, avx_vnni=False, avx512_bf16=False, amx=False, source="stand-in")


def make_files(folder: Path, formats: list[str], draws: int) -> list[dict]:
    """Here, natively: the 100 samples, fp32's top-1, and our int8 files made for a CPU without VNNI."""
    import torch

    import mobilenets
    from mobilenets.data import list_images, quantize_input
    from mobilenets.deploy import cpu, export, load_calibration
    from mobilenets.deploy.support import quiet
    from mobilenets.inference import Classifier, imagenet_target

    model = mobilenets.load_pretrained(GOOGLE)
    classifier = Classifier(model)
    paths = list_images([SAMPLES])
    x = torch.stack([classifier.preprocess(p) for p in paths])
    with torch.no_grad():
        fp32 = model(x).argmax(1).numpy()
    y = np.array([imagenet_target(p) + 1 for p in paths])  # index 0 is "background"
    scale, zero = model.pretrained_cfg.input_quantization  # Google's file takes uint8 NHWC
    x_u8 = np.stack([quantize_input(s, scale, zero).permute(1, 2, 0).numpy() for s in x])
    np.savez(folder / "samples.npz", x=x.numpy(), x_u8=x_u8, y=y, fp32=fp32)
    sets = {"test": x[::2]}
    for seed in range(draws):
        sets[f"seed {seed}"] = load_calibration(SAMPLES, model, 160, 50, seed=seed)[0]
    real = cpu.cpu_features
    cpu.cpu_features = avx2_features  # the settings are chosen from the CPU the file is for
    files = []
    try:
        for draw, calib in sets.items():
            for fmt in formats:
                path = folder / f"{fmt}-{draw.replace(' ', '')}{SUFFIX[fmt]}"
                t = time.perf_counter()
                try:
                    with quiet():
                        report = export(model, fmt, path, int8=True, calibration=calib.numpy(), calibration_images=50)
                except ValueError as e:  # refused (export's agreement check) or could not be made: nothing written
                    files.append({"format": fmt, "draw": draw, "refused": str(e)})
                    print(f"  {NAME[fmt]}, {draw} calibration: {e}", flush=True)
                    continue
                files.append({"format": fmt, "draw": draw, "path": str(path)})
                how = f": {report.toolchain}" if draw == "test" else ""
                print(f"  made {NAME[fmt]}, {draw} calibration, in {time.perf_counter() - t:.0f} s{how}", flush=True)
    finally:
        cpu.cpu_features = real
    return files


def evaluate(folder: Path) -> None:
    """Under the emulator: every file's top-1 and agreement with fp32, and Google's file's top-1."""
    from mobilenets.deploy import open_runtime

    samples = np.load(folder / "samples.npz")
    x, y, fp32 = samples["x"], samples["y"], samples["fp32"]
    try:
        import openvino as ov

        device = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    except ImportError:
        device = "unknown"
    print(json.dumps({"device": device}), flush=True)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(GOOGLE), num_threads=2)
    interp.allocate_tensors()
    top = []
    for sample in samples["x_u8"]:
        interp.set_tensor(interp.get_input_details()[0]["index"], sample[None])
        interp.invoke()
        top.append(interp.get_tensor(interp.get_output_details()[0]["index"])[0].argmax())
    print(json.dumps(result({"format": "tflite", "draw": "google"}, np.array(top), y, fp32)), flush=True)
    for f in json.loads((folder / "files.json").read_text()):
        if "path" in f:
            runner = open_runtime(f["path"], f["format"], precision="int8", threads=2)
            print(json.dumps(result(f, runner.run_all(x).argmax(1), y, fp32)), flush=True)


def result(f: dict, top: np.ndarray, y: np.ndarray, fp32: np.ndarray) -> dict:
    return {**f, "top1": float((top == y).mean() * 100), "agree": int((top == fp32).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=5, help="seeded random calibration draws besides the test's")
    ap.add_argument("--formats", default="openvino,onnx,tflite", help="comma-separated: openvino, onnx, tflite")
    ap.add_argument("--cpu", default="EPYC-Milan", help="QEMU CPU model without VNNI (qemu-x86_64 -cpu help)")
    ap.add_argument("--evaluate", type=Path, help=argparse.SUPPRESS)  # the emulated half
    args = ap.parse_args()
    if args.evaluate:
        evaluate(args.evaluate)
        return
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in SUFFIX for f in formats):
        fail(f"--formats must be a comma-separated subset of {', '.join(SUFFIX)}; got {args.formats!r}")
    if args.draws < 0:
        fail("--draws must be ≥ 0")
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        fail("qemu-x86_64 not found; install QEMU's user-mode emulator (Debian/Ubuntu: apt install qemu-user)")
    if not GOOGLE.exists() or not SAMPLES.is_dir():
        fail(f"needs {GOOGLE} and {SAMPLES}; set MOBILENETS_DATA to the data folder")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import machine

    print(machine())
    with tempfile.TemporaryDirectory(prefix="int8-avx2-") as tmp:
        folder = Path(tmp)
        print(f"making our int8 files for a CPU without VNNI ({', '.join(formats)}; the test's calibration and "
              f"{args.draws} draws), here:", flush=True)
        files = make_files(folder, formats, args.draws)
        (folder / "files.json").write_text(json.dumps(files))
        print(f"running them under {qemu} -cpu {args.cpu} (accuracy only; a few minutes)...", flush=True)
        t = time.perf_counter()
        for attempt in range(2):  # QEMU's user-mode emulator now and then dies of a signal on threaded code
            proc = subprocess.run([qemu, "-cpu", args.cpu, sys.executable, __file__, "--evaluate", str(folder)],
                                  capture_output=True, text=True, check=False)
            if not (proc.returncode < 0 or proc.returncode >= 128) or attempt:
                break
            print(f"the emulator died (exit {proc.returncode}); once more...", flush=True)
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not rows:
            tail = [line for line in proc.stderr.splitlines() if not line.startswith("qemu-x86_64: warning")][-3:]
            fail(f"the emulated run failed (exit {proc.returncode}): {' | '.join(tail) or 'no output'}")
    device = rows[0]["device"]
    results = rows[1:]
    google = next(r for r in results if r["draw"] == "google")
    print(f"emulated CPU: {device} ({time.perf_counter() - t:.0f} s under the emulator)")
    print(f"Google's uint8 file (LiteRT, emulated): top-1 {google['top1']:.0f}%, agrees with fp32 on {google['agree']}/100")
    print("| ours, int8 0.5-160, settings for a CPU without VNNI | calibration | top-1 | vs Google | agrees with fp32 |")
    print("|---|---|---:|---:|---:|")
    ok = True
    for fmt in formats:
        mine = [r for r in results if r["format"] == fmt and r["draw"] != "google"]
        for r in mine:
            d = r["top1"] - google["top1"]
            print(f"| {NAME[fmt]} | {r['draw']} | {r['top1']:.0f}% | {d:+.0f} | {r['agree']} |")
        refused = [f for f in files if f["format"] == fmt and "refused" in f]
        for f in refused:
            print(f"| {NAME[fmt]} | {f['draw']} | not made: {f['refused'][:80]} | | |")
        top = [r["top1"] for r in mine]
        mean = float(np.mean(top)) if top else float("nan")
        within = bool(mine) and mean >= google["top1"] - 1
        agree = bool(mine) and all(r["agree"] >= 95 for r in mine)
        ok &= within and agree and not refused
        if not mine:
            print(f"{NAME[fmt]}: no file made")
        else:
            print(f"{NAME[fmt]}: mean top-1 {mean:.1f}% ({min(top):.0f}–{max(top):.0f}; {'within' if within else 'NOT within'} "
                  f"1 point of Google's {google['top1']:.0f}%), agreement {min(r['agree'] for r in mine)}–"
                  f"{max(r['agree'] for r in mine)} ({'≥' if agree else 'NOT ≥'} 95 in every draw)"
                  + (f"; {len(refused)} refused" if refused else ""))
    print("verdict: " + ("every int8 path holds without VNNI" if ok else "NOT every int8 path holds without VNNI"))


if __name__ == "__main__":
    main()
