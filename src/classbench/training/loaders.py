"""Datasets and DataLoaders for training: split manifest -> cached, augmented uint8 batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from classbench.data.dataset import ImageCache, ImageDataset
from classbench.data.manifest import Manifest
from classbench.data.transforms import train_augment


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    n_train: int
    n_val: int
    cache_mode: str


class EpochSampler(Sampler[int]):
    """The training order: a permutation, or class-weighted draws with replacement (``weights``), that depends
    only on the seed and the epoch, so a resumed run sees the batches an uninterrupted one would
    (Lightning calls :meth:`set_epoch` before each epoch, also through its DDP sampler wrapper)."""

    def __init__(self, n: int, seed: int, weights: list[float] | None = None) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.weights = torch.tensor(weights, dtype=torch.float64) if weights is not None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is None:
            return iter(torch.randperm(self.n, generator=generator).tolist())
        return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def class_weights(counts: list[int]) -> list[float]:
    """Inverse-frequency weights, mean 1 over the classes present: n / (C * n_c)."""
    present = [c for c in counts if c > 0]
    total, k = sum(present), len(present)
    return [total / (k * c) if c > 0 else 0.0 for c in counts]


def build_loaders(manifest: Manifest, img_size: int, batch_size: int, augment: str, balance: str,
                  cache: str, workers: int, seed: int, on_gpu: bool, progress: bool = True,
                  cache_pool: Manifest | None = None) -> Loaders:
    """Train loader (augmented, shuffled or class-balanced sampling) and val loader (plain); ``cache_pool``:
    the images whose one cache this run shares (a compare's split; see ``ImageCache``)."""
    train_samples, val_samples = manifest.subset("train"), manifest.subset("val")
    image_cache, mode = None, "off"
    if cache != "off":
        pool = [s.path for s in cache_pool.samples] if cache_pool is not None else None
        image_cache = ImageCache(img_size, kind=cache, pool=pool)
        stores = [_preload(image_cache, part, name, progress) for part, name in ((train_samples, "train"),
                                                                              (val_samples, "val"))]
        mode = "disk" if any(store.file is not None for store in stores) else "memory"
    train_set = ImageDataset(train_samples, manifest.class_to_idx, img_size, augment=train_augment(augment, img_size),
                             cache=image_cache)
    val_set = ImageDataset(val_samples, manifest.class_to_idx, img_size, augment=None, cache=image_cache)
    generator = torch.Generator().manual_seed(seed)
    weights = None
    if balance == "sampler":
        labels = [manifest.class_to_idx[s.label] for s in train_samples]
        counts = [labels.count(i) for i in range(len(manifest.classes))]
        per_class = class_weights(counts)
        weights = [per_class[y] for y in labels]
    common: dict[str, Any] = {"num_workers": workers, "pin_memory": on_gpu, "persistent_workers": workers > 0}
    train = DataLoader(train_set, batch_size=batch_size, sampler=EpochSampler(len(train_set), seed, weights),
                       drop_last=len(train_set) > batch_size, generator=generator, **common)
    val = DataLoader(val_set, batch_size=batch_size * 2, shuffle=False, **common)
    return Loaders(train, val, len(train_set), len(val_set), mode)


def _preload(cache: ImageCache, samples: list, name: str, progress: bool) -> Any:
    """Decode each image once (later epochs read the cache); a progress bar when asked."""
    if not progress or not samples:
        return cache.preload(samples)
    from rich.progress import Progress

    from classbench.console import console

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"Caching {name} images", total=len(samples))
        return cache.preload(samples, progress=lambda done, total: bar.update(task, completed=done))
