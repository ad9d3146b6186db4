"""The input pipeline: locating and checking data, subsets, archives, deterministic augmentation."""

import os
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from mobilenets import data as D


def make_folder(root, per_class=6, classes=3, size=32, splits=("train", "val"), seed=0):
    """A tiny ImageFolder tree of coloured noise, one colour per class."""
    return make_image_folder(root, {s: per_class for s in splits}, classes=classes, size=size, seed=seed)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- subsets and seeds

def test_balanced_subset_is_balanced_seeded_and_sorted():
    labels = [i % 10 for i in range(1000)]
    a = D.balanced_subset(labels, 95, seed=0)
    assert a == D.balanced_subset(labels, 95, seed=0) and a == sorted(a) and len(a) == 95
    counts = Counter(labels[i] for i in a)
    assert set(counts.values()) == {9, 10} and len(counts) == 10
    assert a != D.balanced_subset(labels, 95, seed=1)
    assert D.balanced_subset(labels, 5000, seed=0) == list(range(1000))
    with pytest.raises(ValueError, match="at least 1"):
        D.balanced_subset(labels, 0, seed=0)


def test_balanced_subset_short_class_gives_what_it_has():
    labels = [0] * 50 + [1] * 3
    chosen = D.balanced_subset(labels, 20, seed=0)
    assert Counter(labels[i] for i in chosen) == {0: 10, 1: 3}


def test_epoch_permutation_is_a_pure_function_of_seed_and_epoch():
    p = D.epoch_permutation(100, 3, 7)
    assert torch.equal(p, D.epoch_permutation(100, 3, 7))
    assert not torch.equal(p, D.epoch_permutation(100, 3, 8))
    assert sorted(p.tolist()) == list(range(100))


# ----------------------------------------------------------------------------- augmentation

def test_crop_flip_matches_slicing():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    params = D.augment_params(4, 8, pad=2, cutout=0, seed=0, epoch=0, step=0)
    out = D.crop_flip(x, params, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):
        dy, dx = int(params.dy[i]), int(params.dx[i])
        ref = padded[i, :, dy:dy + 8, dx:dx + 8]
        if params.flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)
    ident = D.AugmentParams(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                            torch.zeros(4, dtype=torch.bool))
    assert torch.equal(D.crop_flip(x, ident, pad=0), x)


def test_augmentation_slices_equal_the_global_batch():
    """N processes each slicing the global step's choices see what 1 process sees."""
    whole = D.augment_params(8, 32, 4, 8, seed=5, epoch=2, step=9)
    again = D.augment_params(8, 32, 4, 8, seed=5, epoch=2, step=9)
    assert torch.equal(whole.dx, again.dx) and torch.equal(whole.cy, again.cy)
    half = whole.slice(4, 8)
    assert torch.equal(half.dy, whole.dy[4:]) and torch.equal(half.flip, whole.flip[4:])
    other = D.augment_params(8, 32, 4, 8, seed=5, epoch=2, step=10)
    assert not torch.equal(whole.dx, other.dx)


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(2, 3, 10, 10)
    p = D.AugmentParams(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                        torch.zeros(2, dtype=torch.bool), cy=torch.tensor([5, 0]), cx=torch.tensor([5, 0]))
    D.cutout_(x, p, 4)
    assert int((x[0, 0] == 0).sum()) == 16 and int((x[1, 0] == 0).sum()) == 4  # clipped at the corner
    assert torch.equal(x[:, 0], x[:, 2])


def test_to_input_normalizes_and_resizes():
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)
    y = D.to_input(x, mean, std, size=20, channels_last=True)
    assert y.shape == (2, 3, 20, 20) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, torch.ones_like(y))


def test_epoch_sampler_shards_each_global_batch():
    one = D.EpochSampler(50, 10, seed=1)
    one.set_epoch(3)
    whole = [i for i, _ in one]
    assert len(whole) == 50 and len(one) == 50
    shards = []
    for rank in range(2):
        s = D.EpochSampler(50, 10, seed=1, rank=rank, world=2)
        s.set_epoch(3)
        shards.append([i for i, _ in s])
    for step in range(5):
        lo, hi = step * 5, (step + 1) * 5
        assert shards[0][lo:hi] + shards[1][lo:hi] == whole[2 * lo:2 * hi]
    one.set_epoch(3, start_step=2)
    assert [i for i, _ in one] == whole[20:]
    seeds = {k: seed for k, seed in D.EpochSampler(50, 10, seed=1)}
    assert len(set(seeds.values())) > 40  # every sample gets its own augmentation seed


# ----------------------------------------------------------------------------- folders and their errors

def test_scan_split_and_loader_choice(tmp_path):
    root = make_folder(tmp_path / "d")
    index = D.scan_split(root / "train")
    assert index.class_names == ["class0", "class1", "class2"] and len(index) == 18
    assert Counter(index.labels) == {0: 6, 1: 6, 2: 6}
    assert D.choose_loader(index) == "tensor"
    big = make_folder(tmp_path / "big", per_class=1, classes=2, size=96, splits=("train",))
    assert D.choose_loader(D.scan_split(big / "train")) == "folder"
    assert D.resolve_data(tmp_path / "d") == root
    assert D.find_split(root, "val") == root / "val"


def test_val_folder_named_test_and_nested_root(tmp_path):
    root = make_folder(tmp_path / "outer" / "cifar", splits=("train", "test"))
    assert D.resolve_data(tmp_path / "outer") == root
    assert D.find_split(root, "val") == root / "test"


@pytest.mark.parametrize("setup,fragment", [
    (lambda r: (r / "train").mkdir(parents=True), "no class folders and no images"),
    (lambda r: [(r / "train" / "a").mkdir(parents=True), (r / "train" / "b").mkdir()], "has no images"),
    (lambda r: [(r / "train").mkdir(parents=True),
                Image.new("RGB", (8, 8)).save(r / "train" / "x.png")], "one sub-folder per class"),
    (lambda r: r.mkdir(), "no train/ folder found"),
])
def test_bad_folders_have_clear_messages(tmp_path, setup, fragment):
    root = tmp_path / "bad"
    setup(root)
    with pytest.raises(ValueError, match=fragment):
        D.scan_split(D.find_split(D.resolve_data(root), "train"))


def test_class_with_images_but_empty_sibling_names_the_folder(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "train" / "zzz_empty").mkdir()
    with pytest.raises(ValueError, match=r"zzz_empty: class folder has no images"):
        D.scan_split(root / "train")


def test_val_class_unknown_and_missing_val(tmp_path):
    root = make_folder(tmp_path / "d", splits=("train",))
    with pytest.raises(ValueError, match=r"no val/ or validation/ or test/ folder"):
        D.find_split(root, "val")
    make_folder(tmp_path / "d", splits=("val",), classes=4)
    with pytest.raises(ValueError, match="'class3' is not one of the model's 3 classes"):
        D.scan_split(root / "val", D.scan_split(root / "train").class_names)


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "d")
    bad = root / "train" / "class1" / "broken.png"
    bad.write_bytes(b"not an image at all")
    index = D.scan_split(root / "train")
    split = D.load_tensor_split(index, cache=False)
    assert len(split) == 18 and split.skipped == [str(bad)] and split.images.dtype == torch.uint8
    assert split.images.shape == (18, 3, 32, 32)
    assert "skipped 1 unreadable image(s)" in D.skipped_message(split.skipped, "train")
    ds = D.FolderDataset(index, 24, train=True)
    i = index.paths.index(bad)
    x, y, failed = ds[(i, 123)]
    assert failed == str(bad) and x.shape == (3, 24, 24)
    xb, yb, valid, failures = D.collate_masked([ds[(0, 1)], ds[(i, 2)]])
    assert valid.tolist() == [True, False] and failures == [str(bad)]


def test_folder_dataset_augmentation_depends_on_the_key_only(tmp_path):
    root = make_folder(tmp_path / "d", size=48)
    ds = D.FolderDataset(D.scan_split(root / "train"), 32, train=True)
    a, _, _ = ds[(3, 77)]
    torch.manual_seed(999)
    b, _, _ = ds[(3, 77)]
    c, _, _ = ds[(3, 78)]
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    ev = D.FolderDataset(D.scan_split(root / "val"), 32, train=False)
    x, _, _ = ev[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= float(x.min()) <= float(x.max()) <= 1


def test_decoded_cache_is_reused(tmp_path):
    root = make_folder(tmp_path / "d")
    index = D.scan_split(root / "train")
    first = D.load_tensor_split(index, cache=True)
    files = list((tmp_path / "cache" / "decoded").glob("*.pt"))
    assert len(files) == 1
    second = D.load_tensor_split(index, cache=True)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


# ----------------------------------------------------------------------------- archives

def test_archive_is_extracted_once_atomically(tmp_path):
    src = make_folder(tmp_path / "src" / "tiny")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="tiny")
    root = D.resolve_data(archive)
    assert root.name == "tiny" and (root / "train" / "class0").is_dir()
    cache = tmp_path / "cache" / "datasets"
    entries = os.listdir(cache)
    assert len(entries) == 1 and not entries[0].startswith(".")  # no temporary folder left behind
    stamp = (cache / entries[0]).stat().st_mtime_ns
    assert D.resolve_data(archive) == root and (cache / entries[0]).stat().st_mtime_ns == stamp


def test_bad_archives(tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08 this is not gzip")
    with pytest.raises(ValueError, match="corrupt or truncated archive"):
        D.resolve_data(broken)
    assert not [p for p in (tmp_path / "cache" / "datasets").iterdir()]
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    with pytest.raises(ValueError, match="not a folder or an archive"):
        D.resolve_data(other)
    with pytest.raises(ValueError, match="no such file or folder"):
        D.resolve_data(tmp_path / "missing")


def test_small_image_archive_is_read_in_place_like_the_extracted_folder(tmp_path):
    src = make_folder(tmp_path / "src" / "tiny", per_class=7)
    (src / "train" / "class1" / "nested").mkdir()
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(src / "train" / "class1" / "nested" / "a.png")
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(src / "train" / "class1" / "zz.png")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="tiny")
    inside = D.open_data(archive)
    assert inside.tree is not None and not (tmp_path / "cache" / "datasets").exists()  # nothing extracted
    extracted = D.DataSource(D.resolve_data(archive))
    for split in ("train", "val"):
        a, b = inside.index(split), extracted.index(split)
        base = tmp_path / "cache" / "datasets"
        assert [str(p) for p in a.paths] == [p.relative_to(base).as_posix().split("/", 1)[1] for p in b.paths]
        assert a.labels == b.labels and a.class_names == b.class_names and a.split == b.split == split
        sub_a = a.subset(D.balanced_subset(a.labels, 10, seed=2))
        sub_b = b.subset(D.balanced_subset(b.labels, 10, seed=2))
        ta, tb = D.load_tensor_split(sub_a, cache=False), D.load_tensor_split(sub_b, cache=False)
        assert torch.equal(ta.images, tb.images) and torch.equal(ta.labels, tb.labels)
    assert D.open_data(archive).tree is None  # once extracted, the folder is used


def test_archive_errors_in_place(tmp_path):
    src = make_folder(tmp_path / "src" / "t", splits=("train",))
    (src / "train" / "empty").mkdir()
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname="t")
    source = D.open_data(archive)
    with pytest.raises(ValueError, match="empty: class folder has no images"):
        source.index("train")
    with pytest.raises(ValueError, match="no val/ or validation/ or test/ folder"):
        source.index("val")


def test_random_resized_crop_box_stays_inside_and_follows_its_rules():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = D.random_resized_crop_box((500, 375), (0.08, 1.0), g)
        assert top >= 0 and top + h <= 375 and left >= 0 and left + w <= 500
        assert 0.08 * 500 * 375 * 0.9 <= h * w <= 500 * 375
    assert D.random_resized_crop_box((100, 10), (0.9, 1.0), g) == (0, 43, 10, 13)  # fallback: central crop
    a = D.random_resized_crop_box((64, 48), (0.25, 1.0), torch.Generator().manual_seed(5))
    assert a == D.random_resized_crop_box((64, 48), (0.25, 1.0), torch.Generator().manual_seed(5))
