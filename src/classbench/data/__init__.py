"""Data layer: find, check, split, load and cache images (see docs/DESIGN.md).

``check``, ``split`` and ``demo`` (numpy + Pillow only) are imported directly, which also keeps the
names ``classbench.data.check`` etc. bound to the functions rather than the submodules. The
torch-based names (``ImageDataset``, ``ImageCache``, transforms) load lazily, on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from classbench.data.check import CheckReport, check, render_check
from classbench.data.demo import demo
from classbench.data.imageio import IMAGE_EXTENSIONS, load_image
from classbench.data.manifest import Manifest, Sample
from classbench.data.sources import Source, read_source
from classbench.data.split import SplitResult, render_split, split

_LAZY = {
    "to_uint8_tensor": "transforms", "train_augment": "transforms", "normalize": "transforms",
    "ImageDataset": "dataset", "ImageCache": "dataset",
}

__all__ = [
    "IMAGE_EXTENSIONS", "CheckReport", "ImageCache", "ImageDataset", "Manifest", "Sample", "Source", "SplitResult",
    "check", "demo", "load_image", "normalize", "read_source", "render_check", "render_split", "split",
    "to_uint8_tensor", "train_augment",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'classbench.data' has no attribute {name!r}")
    value = getattr(import_module(f"classbench.data.{module}"), name)
    globals()[name] = value
    return value
