"""Built-in demo data: real handwritten digits (scikit-learn ``load_digits``) as a class-folder dataset.

1,797 real 8x8 scans (UCI optical digits, bundled with scikit-learn: no network) in 10 classes are
written as dark-ink-on-white PNGs, upscaled (bilinear) to ``size x size`` RGB, to
``OUT/digit_<k>/digit_<k>_<index>.png`` (``index`` = position in ``load_digits``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from classbench.errors import ClassbenchError

MARKER = ".classbench-demo.json"
DEMO_SIZE = 32  # pixels: the demo's images and the size its compare trains at


def demo_counts(available: dict[int, int], imbalance: float) -> dict[int, int]:
    """Images kept per class: geometric from ``m`` (digit 0) down to ``m / imbalance`` (digit 9).

    ``m`` is the smallest class size available, so every class can supply its quota; with
    ``imbalance == 1`` every image is kept.
    """
    if imbalance == 1:
        return dict(available)
    top = min(available.values())
    last = max(len(available) - 1, 1)
    return {k: max(1, round(top * imbalance ** (-rank / last))) for rank, k in enumerate(sorted(available))}


def demo(out_dir: str | os.PathLike, imbalance: float = 10.0, seed: int = 0, size: int = DEMO_SIZE) -> Path:
    """Write the digits demo dataset to ``out_dir`` and return it; deterministic for ``seed``.

    ``imbalance`` R subsamples classes geometrically so the largest is ~R times the smallest.
    Refuses a non-empty ``out_dir`` that is not a previous demo folder (that one is replaced).
    """
    from sklearn.datasets import load_digits

    if not imbalance >= 1:
        raise ClassbenchError(f"imbalance {imbalance}: must be >= 1 (1 keeps every image)")
    if not 8 <= size <= 1024:
        raise ClassbenchError(f"size {size}: must be between 8 and 1024 pixels")
    out = Path(out_dir)
    _check_target(out)
    digits = load_digits()
    images, targets = digits.images, digits.target
    available = {int(k): int(n) for k, n in zip(*np.unique(targets, return_counts=True))}
    counts = demo_counts(available, imbalance)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for k in sorted(counts):
            idx = np.flatnonzero(targets == k)
            keep = np.sort(rng.choice(idx, size=counts[k], replace=False)) if counts[k] < len(idx) else idx
            folder = tmp / f"digit_{k}"
            folder.mkdir()
            for i in keep.tolist():
                _digit_image(images[i], size).save(folder / f"digit_{k}_{i:04d}.png", optimize=False)
        meta = {"format": "classbench-demo/1", "source": "sklearn.datasets.load_digits", "imbalance": imbalance,
                "seed": seed, "size": size, "counts": {f"digit_{k}": n for k, n in counts.items()}}
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _digit_image(values: np.ndarray, size: int) -> Image.Image:
    """0..16 ink values -> dark ink on white, upscaled to ``size`` RGB."""
    gray = np.rint(255.0 - values * (255.0 / 16.0)).astype(np.uint8)
    img = Image.fromarray(gray, "L").resize((size, size), Image.Resampling.BILINEAR)
    return img.convert("RGB")


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ClassbenchError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ClassbenchError(
            f"{out}: folder is not empty and is not a classbench demo folder; choose an empty or new folder"
        )
