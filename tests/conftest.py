"""Shared fixtures: real image files generated with Pillow in tmp folders, and the shared dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATASET = Path(__file__).resolve().parents[1].parent / "shared/datasets/drone_maritime"


def noise_array(seed: int, size: tuple[int, int] = (24, 24)) -> np.ndarray:
    """A random RGB image (HWC uint8); different seeds are never near-duplicates of each other."""
    width, height = size
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (24, 24), **save_kw) -> Path:
    """Write a noise image to ``path`` (format from the suffix); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise_array(seed, size)).save(path, **save_kw)
    return path


def write_class_folders(root: Path, counts: dict[str, int], ext: str = ".png", seed: int = 0) -> Path:
    """``root/<class>/<class>_<k><ext>`` noise images; every file has its own seed."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            write_image(root / name / f"{name}_{k:03d}{ext}", seed=seed * 100_003 + c * 1009 + k)
    return root


@pytest.fixture
def make_image() -> Callable[..., Path]:
    """``make_image(path, seed=0, size=(24, 24), **save_kw)`` writes a real noise image."""
    return write_image


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``make_dataset({"a": 5, "b": 3}, name="data", ext=".png", seed=0)`` -> class-folder dataset path."""

    def make(counts: dict[str, int], name: str = "data", ext: str = ".png", seed: int = 0) -> Path:
        return write_class_folders(tmp_path / name, counts, ext=ext, seed=seed)

    return make


@pytest.fixture
def shared_dataset() -> Path:
    """``../shared/datasets/drone_maritime`` (5 classes of drone crops), or skip when absent."""
    if not SHARED_DATASET.is_dir():
        pytest.skip("../shared/datasets/drone_maritime not present")
    return SHARED_DATASET


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one torch thread is many times faster than two busy ones
    (use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

