"""Accuracy of a classifier on labelled images: ImageNet folders (Google's weights, TF-slim
preprocessing) and the splits of a training dataset (a run's checkpoint, its own preprocessing)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import (
    IMAGENET_PREPROCESS,
    FolderDataset,
    balanced_subset,
    choose_loader,
    collate_masked,
    list_images,
    load_tensor_split,
    open_data,
    to_input,
    wnid_to_index,
)
from ..models import MobileNetV1, pretrained_cfg
from ..tasks import topk_correct
from .classifier import Classifier

__all__ = ['evaluate_dataset', 'evaluate_imagenet_folder', 'imagenet_target']


_WNID = re.compile(r"^(n\d{8})")


def imagenet_target(path: Path) -> int | None:
    """ImageNet class index of a file: from its folder name (``n01440764/x.JPEG``) or its file
    name (``n01440764_tench.JPEG``); ``None`` when neither is a WordNet id of ImageNet-1k."""
    table = wnid_to_index()
    for candidate in (path.parent.name, path.name):
        m = _WNID.match(candidate)
        if m and m[1] in table:
            return table[m[1]]
    return None


def evaluate_imagenet_folder(classifier: Classifier, root: str | os.PathLike, *, batch_size: int = 32,
                             progress: bool = True) -> dict[str, Any]:
    """Top-1 / top-5 on an ImageNet-style folder. Images whose class cannot be told from their
    folder or file name, and unreadable images, are skipped and counted."""
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory; give an ImageNet-style folder")
    paths = list_images([root])
    if not paths:
        raise ValueError(f"{root}: no images found (expected JPEG/PNG files, in wnid folders or named <wnid>_*.JPEG)")
    if not classifier.has_classifier:
        raise ValueError(classifier.no_classifier_message())
    offset = 1 if classifier.model.num_classes == 1001 else 0
    labelled = [(p, t) for p in paths if (t := imagenet_target(p)) is not None]
    if not labelled:
        raise ValueError(f"{root}: no image is named by an ImageNet WordNet id (n01440764/... or n01440764_*.JPEG)")
    top1 = top5 = seen = unreadable = 0
    bar = tqdm(total=len(labelled), desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start:start + batch_size]
        tensors, targets = [], []
        for p, t in chunk:
            try:
                tensors.append(classifier.preprocess(p))
                targets.append(t + offset)
            except ValueError:
                unreadable += 1
        if tensors:
            probs = classifier.probabilities(torch.stack(tensors))
            hit1, hit5 = topk_correct(probs, torch.tensor(targets), (1, 5)).tolist()
            top1 += int(hit1)
            top5 += int(hit5)
            seen += len(targets)
        bar.update(len(chunk))
        bar.set_postfix(top1=f"{100 * top1 / max(seen, 1):.1f}", top5=f"{100 * top5 / max(seen, 1):.1f}")
    bar.close()
    return {"images": seen, "top1": 100.0 * top1 / max(seen, 1), "top5": 100.0 * top5 / max(seen, 1),
            "unlabelled": len(paths) - len(labelled), "unreadable": unreadable}



@torch.no_grad()
def evaluate_dataset(model: MobileNetV1, data_path: str | os.PathLike, *, split: str = "val", batch_size: int = 256,
                     device: str | torch.device | None = None, subset: int | None = None, seed: int = 0,
                     progress: bool = True, workers: int | None = None) -> dict[str, Any]:
    """Top-1 / top-5 of a model trained by :func:`train` on a split of an ImageFolder tree or
    archive, preprocessed as in training. Folder classes are mapped to the model's outputs by
    the checkpoint's ``class_names``; a folder class the model does not know is an error.

    Returns ``{"top1", "top5", "loss", "images", "skipped", "split"}`` (accuracies in %).
    """
    from tqdm import tqdm

    info = pretrained_cfg(model)
    class_names = info.class_names if info is not None else None
    if not class_names:
        raise ValueError("the model carries no class names (it was not trained with `mobilenets train`); "
                         "for ImageNet folders use `mobilenets evaluate DIR --weights FILE`")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; choose train, val or test")
    device = torch.device(device) if device is not None else next(iter(model.parameters()), torch.empty(0)).device
    model = model.to(device).eval()
    index = open_data(data_path).index(split, class_names)
    if subset:
        index = index.subset(balanced_subset(index.labels, subset, seed))
    spec = info.preprocess or IMAGENET_PREPROCESS
    mean = torch.tensor(spec["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], device=device).view(1, 3, 1, 1)
    size = int(info.input_size or model.resolution)
    if choose_loader(index) == "tensor":
        data = load_tensor_split(index)
        skipped = len(data.skipped)
        batches: Iterator[Any] = ((data.images[i:i + batch_size], data.labels[i:i + batch_size], None)
                                  for i in range(0, len(data), batch_size))
        total = len(data)
    else:
        ds = FolderDataset(index, size, train=False, eval_crop=float(spec.get("crop", 0.875)))
        n_workers = workers if workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=n_workers,
                                             collate_fn=collate_masked)
        batches = ((x, y, valid) for x, y, valid, _ in loader)
        skipped, total = 0, len(ds)
    top1 = top5 = seen = 0
    loss_sum = 0.0
    bar = tqdm(total=total, desc=f"evaluate {index.split}", unit="img", disable=not progress, dynamic_ncols=True)
    for x, y, valid in batches:
        x = to_input(x.to(device), mean, std, size=size)
        y = y.to(device)
        logits = model(x).float()
        if valid is not None and not bool(valid.all()):
            keep = valid.to(device)
            skipped += int((~valid).sum())
            logits, y = logits[keep], y[keep]
        hit1, hit5 = topk_correct(logits, y, (1, 5)).tolist()
        top1 += int(hit1)
        top5 += int(hit5)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        seen += int(y.shape[0])
        bar.update(int(x.shape[0]))
        bar.set_postfix(top1=f"{100 * top1 / max(seen, 1):.1f}", top5=f"{100 * top5 / max(seen, 1):.1f}")
    bar.close()
    n = max(seen, 1)
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss_sum / n, "images": seen,
            "skipped": skipped, "split": index.split}
