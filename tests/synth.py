"""Generate small, real image datasets on disk for training tests (learnable, deterministic); and wait for a
training process to write a file (the kill/interrupt tests)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40), (160, 60, 200), (40, 200, 200)]


def make_class_folders(root: Path, counts: dict[str, int], size: int = 32, seed: int = 0,
                       noise: float = 40.0, signal: float = 1.0) -> Path:
    """One folder per class; class i is a coloured stripe pattern + noise. ``signal`` < 1 makes classes harder."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, n) in enumerate(sorted(counts.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        for j in range(n):
            base = np.full((size, size, 3), 128.0, dtype=np.float32)
            stripes = np.zeros((size, size, 1), dtype=np.float32)
            period = 4 + 2 * i
            if i % 2:
                stripes[:, (np.arange(size) // period) % 2 == 0] = 1.0
            else:
                stripes[(np.arange(size) // period) % 2 == 0, :] = 1.0
            img = base + signal * stripes * (colour - 128.0) + rng.normal(0, noise, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{name}_{j:04d}.png")
    return root


def make_overlapping_classes(root: Path, counts: dict[str, int], shift: float = 1.5, size: int = 32,
                             seed: int = 0) -> Path:
    """Classes differ only in mean brightness, with overlapping distributions (class i: shift*i sd brighter).

    Under a 20:1 prior the Bayes-optimal *unweighted* classifier predicts the minority class almost
    never, while a class-balanced one recovers most of it: the imbalance failure in miniature.
    """
    rng = np.random.default_rng(seed)
    sd = 20.0
    for i, (name, n) in enumerate(sorted(counts.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(n):
            level = rng.normal(100.0 + shift * sd * i, sd)
            img = level + rng.normal(0, 6.0, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{name}_{j:04d}.png")
    return root


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float, poll: float = 0.01) -> None:
    """Return once ``path`` exists, ``proc`` has ended, or ``timeout`` seconds have passed."""
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(poll)
