"""Training data: ImageFolder trees and archives of them, as fast as the device allows.

Two input paths, chosen by the size of the images (``loader="auto"``):

* **tensor**: small images (CIFAR-10's 32×32) are decoded once into one ``uint8`` tensor,
  kept on the training device, and augmented there a whole batch at a time (random crop
  with padding, flip, cutout are index arithmetic, not per-image Python). The GPU never
  waits for the CPU, and on a CPU it is also the fastest way to feed a small model.
  Decoded tensors of large sets are cached (``<cache>/decoded/``).
* **folder**: ImageNet-scale trees go through a ``DataLoader`` with worker processes and
  pinned memory; workers decode, crop and resize to ``uint8``, normalization happens on the
  device.

Both are deterministic: the order of an epoch is a pure function of ``(seed, epoch)`` and each
augmentation of ``(seed, epoch, step)`` or ``(seed, epoch, sample)``, whatever the number of
processes or workers, so a run resumed at any step replays exactly what it would have done.

An archive (``.tar.gz``, ``.tar``, ``.zip``) given as the data path is read in place when its
images are small (CIFAR-10: two passes over 19 MB instead of writing 60,000 files); otherwise
it is extracted once, atomically (to a temporary folder, then renamed), into the cache folder
outside the repository: ``$MOBILENETS_CACHE``, else ``$XDG_CACHE_HOME/mobilenets`` or
``~/.cache/mobilenets``. Both ways list and order the images identically.
"""


from .archives import (
    ARCHIVE_SUFFIXES,
    VAL_SPLITS,
    cache_dir,
    extract_archive,
    find_split,
    resolve_data,
)
from .folder import (
    EpochSampler,
    FolderDataset,
    ShardSampler,
    collate_masked,
    random_resized_crop_box,
    skipped_message,
)
from .index import (
    ArchiveTree,
    DataSource,
    FolderIndex,
    choose_loader,
    open_data,
    scan_split,
)
from .labels import (
    coco_category_names,
    imagenet_lemmas,
    imagenet_names,
    imagenet_wnids,
    labels_for,
    wnid_to_index,
)
from .preprocess import (
    IMAGE_EXTENSIONS,
    IMAGENET_PREPROCESS,
    TF_PREPROCESS,
    central_crop,
    dequantize_input,
    list_images,
    load_image,
    quantize_input,
    resize_bilinear_legacy,
    tf_slim_preprocess,
    to_rgb8,
)
from .samplers import balanced_subset, epoch_permutation
from .tensor import (
    AugmentParams,
    TensorSplit,
    augment_params,
    crop_flip,
    cutout_,
    load_tensor_split,
    load_tensor_splits,
    to_input,
)

__all__ = [
    "cache_dir", "resolve_data", "open_data", "DataSource", "ArchiveTree", "find_split", "scan_split", "extract_archive",
    "balanced_subset", "epoch_permutation", "FolderIndex", "TensorSplit", "load_tensor_split",
    "load_tensor_splits", "choose_loader", "AugmentParams", "augment_params", "crop_flip", "cutout_", "to_input",
    "FolderDataset", "random_resized_crop_box", "EpochSampler", "ShardSampler", "collate_masked", "skipped_message",
    "ARCHIVE_SUFFIXES", "VAL_SPLITS", "IMAGE_EXTENSIONS", "IMAGENET_PREPROCESS", "TF_PREPROCESS", "central_crop",
    "dequantize_input", "list_images", "load_image", "quantize_input", "resize_bilinear_legacy", "tf_slim_preprocess", "to_rgb8",
    "imagenet_lemmas", "coco_category_names", "imagenet_names", "imagenet_wnids", "labels_for", "wnid_to_index",
]
