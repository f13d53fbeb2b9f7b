"""Datasets and DataLoaders for training: split manifest -> cached, augmented uint8 batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, WeightedRandomSampler

from classbench.data.dataset import ImageCache, ImageDataset
from classbench.data.manifest import Manifest
from classbench.data.transforms import train_augment


@dataclass
class Loaders:
    train: Iterable[Any]
    val: Iterable[Any]
    n_train: int
    n_val: int
    cache_mode: str
    continuous: bool = False

    def close(self) -> None:
        """Stop a continuous loader's workers (a plain DataLoader's stop with it)."""
        for loader in (self.train, self.val):
            if isinstance(loader, ContinuousLoader):
                loader.close()


class _Repeat:
    """A batch sampler that runs ``batches`` pass after pass, forever (each pass reshuffles)."""

    def __init__(self, batches: BatchSampler) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield from self.batches


class ContinuousLoader:
    """``len(batches)`` batches per pass, all passes drawn from one DataLoader iterator that never ends.

    A plain DataLoader's workers stop at the end of each pass and start the next only when the next
    epoch asks for its first batch, so every epoch begins with a wait (on a GPU, a visible share of a
    short epoch). Here the workers keep preparing the next pass's batches while validation runs.
    Passes stay aligned with the sampler's passes as long as each pass is consumed to the end, which
    the training loop does (no sanity-check or limited batches).
    """

    def __init__(self, dataset: Any, batches: BatchSampler, **loader_options: Any) -> None:
        self.batches = batches
        self.loader = DataLoader(dataset, batch_sampler=_Repeat(batches), **loader_options)
        self._stream: Iterator[Any] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        if self._stream is None:
            self._stream = iter(self.loader)
        for _ in range(len(self)):
            yield next(self._stream)

    def close(self) -> None:
        """Stop the worker processes (the next pass would start new ones)."""
        self._stream = None


def class_weights(counts: list[int]) -> list[float]:
    """Inverse-frequency weights, mean 1 over the classes present: n / (C * n_c)."""
    present = [c for c in counts if c > 0]
    total, k = sum(present), len(present)
    return [total / (k * c) if c > 0 else 0.0 for c in counts]


def build_loaders(manifest: Manifest, img_size: int, batch_size: int, augment: str, balance: str,
                  cache: str, workers: int, seed: int, on_gpu: bool, progress: bool = True,
                  continuous: bool = False) -> Loaders:
    """Train loader (augmented, shuffled or class-balanced sampling) and val loader (plain).

    ``continuous`` (with workers; single process only, DDP needs Lightning's distributed sampler):
    :class:`ContinuousLoader` for both, so workers prepare batches across epoch boundaries.
    """
    train_samples, val_samples = manifest.subset("train"), manifest.subset("val")
    image_cache, mode = None, "off"
    if cache != "off":
        image_cache = ImageCache(img_size, kind=cache)
        stores = [_preload(image_cache, part, name, progress) for part, name in ((train_samples, "train"),
                                                                              (val_samples, "val"))]
        mode = "disk" if any(store.file is not None for store in stores) else "memory"
    train_set = ImageDataset(train_samples, manifest.class_to_idx, img_size, augment=train_augment(augment, img_size),
                             cache=image_cache)
    val_set = ImageDataset(val_samples, manifest.class_to_idx, img_size, augment=None, cache=image_cache)
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if balance == "sampler":
        labels = [manifest.class_to_idx[s.label] for s in train_samples]
        counts = [labels.count(i) for i in range(len(manifest.classes))]
        per_class = class_weights(counts)
        sampler = WeightedRandomSampler([per_class[y] for y in labels], num_samples=len(labels), replacement=True,
                                        generator=generator)
    drop_last = len(train_set) > batch_size
    if continuous and workers > 0:
        from lightning.fabric.utilities.seed import pl_worker_init_function

        options = {"num_workers": workers, "pin_memory": on_gpu, "generator": generator,
                   "worker_init_fn": partial(pl_worker_init_function, rank=0)}  # as Lightning seeds its loaders
        order = sampler or RandomSampler(train_set, generator=generator)
        train_batches = BatchSampler(order, batch_size, drop_last=drop_last)
        val_batches = BatchSampler(SequentialSampler(val_set), batch_size * 2, drop_last=False)
        return Loaders(ContinuousLoader(train_set, train_batches, **options),
                       ContinuousLoader(val_set, val_batches, **options), len(train_set), len(val_set), mode,
                       continuous=True)
    common: dict[str, Any] = {"num_workers": workers, "pin_memory": on_gpu, "persistent_workers": workers > 0}
    train = DataLoader(train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                       drop_last=drop_last, generator=generator, **common)
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
