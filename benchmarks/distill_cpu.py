"""Distillation speed on a CPU: cached teacher outputs vs plain training vs the teacher run every step.

    python benchmarks/distill_cpu.py [--threads 2] [--data-dir ../shared/data] [--images 1000] [--turns 3]
                                     [--width 0.5] [--resolution 128]

The same student (α, ρ), the same CIFAR-10 training images (upscaled to ρ on the device), the same
recipe and batch, each path one epoch through the real engine (``mobilenets.train.train``), in turns
(plain, cached, every-step, plain, ...); the medians of the engine's own ``images_per_second``
(optimizer steps only) are compared:

* plain: classification with CIFAR's labels (what the student costs to train anyway);
* cached: embedding distillation from Google's 1.0-224 embedding extractor, its outputs computed
  once per image before the first epoch (``RUN/teacher_outputs.pt``, reused by later turns);
* every step: the same with ``teacher_cache=False``: the teacher sees each augmented batch.

It also prints the one-off teacher pass (seconds, images/s) and the cached path's images/s over
``--epochs-amortized`` epochs with that pass included. Target (issue #11): cached ≥ 0.9× plain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import machine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("MOBILENETS_DATA", str(Path(__file__).parents[1] / ".." /
                                                                               "shared" / "data")))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--epochs-amortized", type=int, default=10)
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()
    data = Path(args.data_dir)
    cifar = data / "cifar10-jpeg.tar.gz"
    teacher = data / "tflite" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
    for p in (cifar, teacher):
        if not p.exists():
            print(f"distill_cpu.py needs {p} (see the shared data README)", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    from mobilenets.tasks import ClassificationTask, EmbeddingDistillationTask
    from mobilenets.train import TrainConfig, train

    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="distill_bench_"))
    common = {"data": str(cifar), "width": args.width, "resolution": args.resolution, "epochs": 1,
              "batch_size": args.batch_size, "subset": args.images, "val_subset": 100, "device": "cpu",
              "progress": False, "tensorboard": False, "verbose": False, "threads": args.threads, "recipe": "distill"}
    teacher_pass: dict[str, float] = {}

    def plain(i: int) -> dict:
        return train(TrainConfig(out=work / f"plain{i}", **common), task=ClassificationTask())

    def cached(i: int) -> dict:
        run = work / f"cached{i}"
        if (work / "cached0" / "teacher_outputs.pt").is_file():
            run.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / "cached0" / "teacher_outputs.pt", run / "teacher_outputs.pt")
        task = EmbeddingDistillationTask()
        t0 = time.perf_counter()
        s = train(TrainConfig(out=run, task="embedding", teacher=str(teacher), **common), task=task)
        if task.teacher_seconds:
            teacher_pass.update(seconds=task.teacher_seconds, images=task.teacher.calls,
                                wall=time.perf_counter() - t0)
        return s

    def every_step(i: int) -> dict:
        return train(TrainConfig(out=work / f"every{i}", task="embedding", teacher=str(teacher), teacher_cache=False,
                                 **common), task=EmbeddingDistillationTask())

    paths = {"plain training": plain, "distillation, cached teacher": cached,
             "distillation, teacher every step": every_step}
    ips: dict[str, list[float]] = {k: [] for k in paths}
    try:
        for turn in range(args.turns):
            for name, fn in paths.items():
                ips[name].append(fn(turn)["images_per_second"])
                print(f"turn {turn + 1}/{args.turns}  {name:<34} {ips[name][-1]:8.1f} img/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in ips.items()}
    base = med["plain training"]
    print(f"\nstudent {args.width:g} MobileNet-{args.resolution}, {args.images} CIFAR-10 images upscaled, batch "
          f"{args.batch_size}, {args.threads} threads, teacher 1.0-224 embedding extractor; medians of {args.turns}")
    print(f"{'path':<36} {'img/s':>8} {'vs plain':>9}")
    for k, v in med.items():
        print(f"{k:<36} {v:8.1f} {v / base:9.2f}")
    n = teacher_pass.get("images", 0)
    if n:
        sec = teacher_pass["seconds"]
        e = args.epochs_amortized
        amort = e * args.images / (e * args.images / med["distillation, cached teacher"] + sec)
        print(f"one-off teacher pass: {n} images in {sec:.1f} s ({n / sec:.0f} img/s, decoding included); over {e} "
              f"epochs the cached path runs at {amort:.1f} img/s ({amort / base:.2f}x plain) with it included")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": med, "samples": ips, "teacher_pass": teacher_pass,
                                               "machine": machine()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
