"""ImageDataset, ImageCache (memory and disk) and the transforms, on real image files."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from classbench.data.dataset import ImageCache, ImageDataset
from classbench.data.manifest import Sample
from classbench.data.sources import read_source
from classbench.data.transforms import AUGMENT_KINDS, normalize, to_uint8_tensor, train_augment
from classbench.errors import ClassbenchError, ImageLoadError
from tests.conftest import write_image

SIZE = 16


@pytest.fixture
def samples(make_dataset):
    return read_source(make_dataset({"a": 4, "b": 3})).samples


def test_items_are_uint8_chw_and_class_index(samples):
    ds = ImageDataset(samples, {"a": 0, "b": 1}, SIZE)
    x, _ = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, SIZE, SIZE)
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 0, 0, 1, 1, 1]


def test_failing_file_names_it_and_others_load(samples, tmp_path):
    bad = tmp_path / "data" / "a" / "zz_bad.jpg"
    bad.write_text("not a jpeg")
    ds = ImageDataset([*samples, Sample(bad, "a")], {"a": 0, "b": 1}, SIZE)
    with pytest.raises(ImageLoadError, match="zz_bad.jpg: not an image"):
        ds[len(ds) - 1]
    assert ds[0][0].shape == (3, SIZE, SIZE)


def test_unknown_label_and_size_mismatch(samples):
    with pytest.raises(ClassbenchError, match="'b' not in the class list"):
        ImageDataset(samples, {"a": 0}, SIZE)
    with pytest.raises(ClassbenchError, match="cache is for 32px"):
        ImageDataset(samples, {"a": 0, "b": 1}, SIZE, cache=ImageCache(32, "memory"))


def test_memory_cache_hit_is_identical_and_skips_decoding(samples):
    cache = ImageCache(SIZE, "memory")
    ds = ImageDataset(samples, {"a": 0, "b": 1}, SIZE, cache=cache)
    first = ds[2][0]
    samples[2].path.unlink()  # a hit must not touch the file
    second = ds[2][0]
    assert torch.equal(first, second) and second.data_ptr() != first.data_ptr()
    second.zero_()  # callers may modify what they get; the cache keeps its copy
    assert torch.equal(ds[2][0], first)
    assert ds.store.filled == 1 and ds.store.file is None


def test_disk_cache_persists_across_instances(samples, tmp_path):
    calls = []
    store = ImageCache(SIZE, "disk", cache_dir=tmp_path / "cache").preload(samples, progress=lambda d, t: calls.append(d))
    assert calls[-1] == len(samples) and store.filled == len(samples) and store.file.parent == tmp_path / "cache"
    fresh = ImageCache(SIZE, "disk", cache_dir=tmp_path / "cache")
    ds = ImageDataset(samples, {"a": 0, "b": 1}, SIZE, cache=fresh)
    assert ds.store.file == store.file and ds.store.filled == len(samples)
    expected = to_uint8_tensor(Image.open(samples[1].path).convert("RGB"), SIZE)
    assert torch.equal(ds[1][0], expected)
    assert len(pickle.dumps(ds.store)) < 2000  # workers reopen the memmap instead of receiving a copy
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1][0], expected)


def test_a_pool_shares_one_cache_between_subsets_and_instances(samples, tmp_path, monkeypatch):
    """A compare's runs (each model, each fold) bind different subsets of one pool: each image decodes once."""
    pool = [s.path for s in samples]
    first = ImageCache(SIZE, "auto", cache_dir=tmp_path / "c", pool=pool).preload(samples[:4])  # fold 1's images
    assert first.file is not None and first.filled == 4
    import classbench.data.dataset as dataset_module

    decoded = []
    real = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda p: decoded.append(p) or real(p))
    later = ImageCache(SIZE, "auto", cache_dir=tmp_path / "c", pool=pool)  # another run, another subset
    store = later.preload(samples[2:])
    assert store.file == first.file and decoded == [s.path for s in samples[4:]]  # only the new images decode
    expected = to_uint8_tensor(Image.open(samples[2].path).convert("RGB"), SIZE)
    assert torch.equal(store.get(0), expected)
    outside = ImageCache(SIZE, "disk", cache_dir=tmp_path / "c", pool=pool[:2]).bind(pool[2:])
    assert outside.file != first.file  # files outside the pool get a cache of their own


def test_identical_files_share_a_disk_slot(tmp_path):
    a = write_image(tmp_path / "x" / "a.png", seed=1)
    b = tmp_path / "x" / "b.png"
    b.write_bytes(a.read_bytes())
    store = ImageCache(SIZE, "disk", cache_dir=tmp_path / "c").bind([a, b])
    assert store.shape[0] == 1 and store.slot_of == [0, 0]


def test_auto_picks_memory_or_disk(samples, tmp_path):
    assert ImageCache(SIZE, "auto", cache_dir=tmp_path, memory_limit=10**9).bind([s.path for s in samples]).file is None
    assert ImageCache(SIZE, "auto", cache_dir=tmp_path, memory_limit=10).bind([s.path for s in samples]).file
    with pytest.raises(ClassbenchError, match="unknown"):
        ImageCache(SIZE, "ram")


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_dataloader_workers_fill_shared_cache(samples, tmp_path, kind):
    cache = ImageCache(SIZE, kind, cache_dir=tmp_path / "c")
    ds = ImageDataset(samples, {"a": 0, "b": 1}, SIZE, augment=train_augment("light", SIZE), cache=cache)
    for workers in (0, 2):
        batches = list(DataLoader(ds, batch_size=4, num_workers=workers))
        assert sum(len(b[1]) for b in batches) == len(samples)
        assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape[1:] == (3, SIZE, SIZE)
    assert ds.store.filled == len(samples)  # written by the workers, visible here


@pytest.mark.parametrize("kind", AUGMENT_KINDS)
def test_augment_kinds_keep_shape_and_dtype(kind):
    x = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)
    aug = train_augment(kind, SIZE)
    for _ in range(5):
        y = aug(x)
        assert y.dtype == torch.uint8 and y.shape == x.shape
    pickle.dumps(aug)
    if kind == "none":
        assert torch.equal(aug(x), x)


def test_unknown_augment():
    with pytest.raises(ClassbenchError, match="augment 'heavy': unknown"):
        train_augment("heavy", SIZE)


def test_to_uint8_tensor_squashes():
    img = Image.new("RGB", (40, 10), (10, 20, 30))
    t = to_uint8_tensor(img, SIZE)
    assert t.shape == (3, SIZE, SIZE) and t.dtype == torch.uint8 and t[:, 5, 5].tolist() == [10, 20, 30]
    assert to_uint8_tensor(Image.new("L", (8, 8), 9), 8).shape == (3, 8, 8)


def test_normalize_batch_and_single():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(x, [0.5, 0.5, 0.5], [0.5, 0.25, 0.5])
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out[0, :, 0, 0].tolist() == pytest.approx([1.0, 2.0, 1.0])
    single = normalize(x[0], [0.0] * 3, [1.0] * 3)
    assert single.shape == (3, 4, 4) and single.max().item() == pytest.approx(1.0)
