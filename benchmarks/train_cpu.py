"""Training input pipelines and a CIFAR-10 epoch on a CPU.

    python benchmarks/train_cpu.py [--threads 2] [--data-dir ../shared/data] [--skip-epoch] [--epoch-subset N]

(a) Images per second of the ImageFolder pipeline at 224 px (what DataLoader workers run for
    ImageNet-scale folders): decode + RandomResizedCrop + flip → uint8 (training), and decode +
    central crop + TF bilinear resize → float (evaluation), over ../shared/data/imagenet-sample
    (100 JPEGs of ImageNet size), with 0, 1 and 2 workers.
(b) Images per second of the tensor path (uint8 batch in memory → crop + flip + normalize as
    batch ops) at 32 px and upscaled to 224 px.
(c) One CIFAR-10 epoch (50,000 images, then the 10,000 test images) of 0.25 MobileNet with the
    cifar recipe on this CPU: train images/s, epoch time, and wall time including reading and
    decoding the archive (cached after the first run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import machine
from PIL import Image

from mobilenets import data as D

REPO = Path(__file__).resolve().parents[1]


def pipeline(data_dir: Path, threads: int, rounds: int) -> None:
    sample = data_dir / "imagenet-sample"
    if not sample.is_dir():
        print(f"skip (a): {sample} not found")
        return
    paths = sorted(p for p in sample.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    index = D.FolderIndex(sample, paths * rounds, [0] * len(paths) * rounds, ["x"])
    with Image.open(paths[len(paths) // 2]) as img:
        size = img.size
    print(f"(a) ImageFolder pipeline at 224 px on {len(paths)} ImageNet JPEGs x {rounds} (e.g. {size[0]}x{size[1]})")
    for train in (True, False):
        ds = D.FolderDataset(index, 224, train=train)
        for workers in (0, 1, 2):
            if workers > threads:
                continue
            sampler = D.EpochSampler(len(ds), 32, seed=0) if train else None
            loader = torch.utils.data.DataLoader(ds, batch_size=32, sampler=sampler, num_workers=workers,
                                                 collate_fn=D.collate_masked)
            t0 = time.perf_counter()
            n = sum(int(x.shape[0]) for x, *_ in loader)
            dt = time.perf_counter() - t0
            kind = "train: decode + RandomResizedCrop + flip" if train else "eval:  decode + crop 87.5% + TF resize"
            print(f"    {kind}, {workers} worker(s): {n / dt:7.1f} images/s")


def tensor_path(threads: int) -> None:
    print("(b) tensor path (uint8 in memory, batch ops on the device = CPU here), batch 512")
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for size in (32, 224):
        def run(step: int, size: int = size) -> torch.Tensor:
            p = D.augment_params(512, size, 4, 0, seed=0, epoch=0, step=step)
            x = D.crop_flip(images, p, 4)
            return D.to_input(x, mean, std, size=size, channels_last=True)
        run(0)
        t0 = time.perf_counter()
        steps = 20 if size == 32 else 3
        for s in range(steps):
            run(s)
        dt = time.perf_counter() - t0
        print(f"    crop + flip + normalize{' + resize' if size != 32 else ''} to {size} px: "
              f"{steps * 512 / dt:10.0f} images/s")


def cold_decode(data_dir: Path) -> None:
    archive = data_dir / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        return
    t0 = time.perf_counter()
    source = D.open_data(archive)
    train = source.index("train")
    test = source.index("val", train.class_names)
    t1 = time.perf_counter()
    splits = D.load_tensor_splits([train, test], cache=False)
    t2 = time.perf_counter()
    n = sum(len(s) for s in splits)
    print(f"    CIFAR-10 archive read in place: listing {t1 - t0:.1f} s, reading + decoding {n} images into uint8 "
          f"tensors {t2 - t1:.1f} s ({n / (t2 - t1):.0f} images/s; later runs load the cached tensors)")


def cifar_epoch(data_dir: Path, subset: int | None) -> None:
    from mobilenets.train import TrainConfig, train

    archive = data_dir / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        print(f"skip (c): {archive} not found")
        return
    out = Path(tempfile.mkdtemp(prefix="mobilenets-bench-"))
    try:
        t0 = time.perf_counter()
        summary = train(TrainConfig(data=archive, out=out / "run", width=0.25, epochs=1, device="cpu",
                                    subset=subset, tensorboard=False, verbose=False, progress=sys.stderr.isatty()))
        wall = time.perf_counter() - t0
        m = json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[0])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    s = summary["settings"]
    print(f"(c) CIFAR-10 epoch, 0.25 MobileNet (small-input stem, {summary['mult_adds'] / 1e6:.1f} M Mult-Adds), "
          f"recipe {s['recipe']}, batch {s['batch_size']}, {s['train_images']} train / {s['val_images']} test images")
    print(f"    train: {m['images_per_second']:.0f} images/s, {m['train_time']:.1f} s; test: {m['val_time']:.1f} s "
          f"({s['val_images'] / m['val_time']:.0f} images/s); epoch {m['epoch_time']:.1f} s; wall incl. reading and "
          f"decoding the archive, setup: {wall:.1f} s; test top-1 after 1 epoch {m['val_top1']:.2f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("MOBILENETS_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--rounds", type=int, default=2, help="passes over the ImageNet sample in (a)")
    ap.add_argument("--skip-epoch", action="store_true", help="skip (c)")
    ap.add_argument("--epoch-subset", type=int, default=None, help="train (c) on a subset of N images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    pipeline(args.data_dir, args.threads, args.rounds)
    tensor_path(args.threads)
    cold_decode(args.data_dir)
    if not args.skip_epoch:
        cifar_epoch(args.data_dir, args.epoch_subset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
