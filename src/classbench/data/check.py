"""``check``: scan a dataset once and report what training would run into.

Each image is read once, hashed (sha256 of the bytes: exact duplicates), fully decoded (detects
truncation), and from that decoded image we take its size and a 64-bit perceptual hash (pHash:
DCT of a 32x32 grayscale thumbnail). Near-duplicates are pairs of images whose pHashes differ in at
most ``near_dup_threshold`` bits; they are joined into groups (union-find) that ``split`` keeps in
one split. Pairs are found with vectorised XOR + popcount over small tiles of the unique hashes (no
Python O(n^2) loop: under 1 s for 30,000 images). Decoding runs in a few threads (Pillow releases
the GIL); each thread holds one decoded image at a time.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from classbench.data.imageio import decode_image, phash, read_image_bytes
from classbench.data.manifest import Manifest, Sample, shown_path
from classbench.data.sources import Source, read_source
from classbench.errors import ImageLoadError
from classbench.formatting import duration, percent, rate
from classbench.runs import usable_cores

IMBALANCE_THRESHOLD = 3.0  # largest/smallest class above this: `check` warns and `--balance auto` weights the loss
MIN_SPLIT_IMAGES = 3
DEFAULT_NEAR_DUP_THRESHOLD = 4
BALANCE_NOTE = "training will use class-weighted loss and pick checkpoints on macro-F1 (--balance auto)"


class BadFile(NamedTuple):
    """An image file that cannot be used, its class, and why (``reason`` ends with the fix)."""

    path: str
    label: str
    reason: str


@dataclass
class ClassStats:
    """Usable images of one class and their size range (``None`` when the class has no usable image)."""

    count: int = 0
    share: float = 0.0
    bad: int = 0
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None

    def add_size(self, width: int, height: int) -> None:
        self.count += 1
        self.min_width = width if self.min_width is None else min(self.min_width, width)
        self.max_width = width if self.max_width is None else max(self.max_width, width)
        self.min_height = height if self.min_height is None else min(self.min_height, height)
        self.max_height = height if self.max_height is None else max(self.max_height, height)


@dataclass
class CheckReport:
    """Everything ``check`` found; ``to_dict()`` is JSON-safe (without ``samples`` and ``group_of``)."""

    path: str
    layout: str
    classes: list[str]
    stats: dict[str, ClassStats]
    usable: bool
    problem: str | None
    imbalance: float | None
    warnings: list[str]
    bad_files: list[BadFile]
    skipped: list[tuple[str, str]]
    exact_duplicates: list[list[str]]
    near_duplicates: list[list[str]]
    label_conflicts: list[dict[str, list[str]]]
    split_counts: dict[str, dict[str, int]]
    scanned: int
    scan_seconds: float
    images_per_second: float
    near_dup_threshold: int
    samples: list[Sample] = field(default_factory=list, repr=False)
    group_of: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """Usable images per class."""
        return {c: s.count for c, s in self.stats.items()}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("samples", "group_of")}
        out["stats"] = {c: asdict(s) for c, s in self.stats.items()}
        out["counts"] = self.counts
        out["total"] = self.total
        out["bad_files"] = [b._asdict() for b in self.bad_files]
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return out


class _Scan(NamedTuple):
    sha: str = ""
    phash: int = 0
    width: int = 0
    height: int = 0
    error: str | None = None


def check(
    path: str | os.PathLike,
    *,
    near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
    max_pixels: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Scan the DATA folder/CSV at ``path``; ``progress(done, total)`` is called as images are read."""
    source = read_source(path)
    start = time.perf_counter()
    scans = _scan_all(source.samples, max_pixels, workers, progress)
    seconds = time.perf_counter() - start
    stats = {c: ClassStats() for c in source.classes}
    good: list[tuple[Sample, _Scan]] = []
    bad: list[BadFile] = []
    for sample, scan in zip(source.samples, scans):
        if scan.error is not None:
            bad.append(BadFile(str(sample.path), sample.label, scan.error))
            stats[sample.label].bad += 1
        else:
            good.append((sample, scan))
            stats[sample.label].add_size(scan.width, scan.height)
    total = sum(s.count for s in stats.values())
    for s in stats.values():
        s.share = s.count / total if total else 0.0
    groups = group_near_duplicates(np.array([sc.phash for _, sc in good], dtype=np.uint64), near_dup_threshold)
    splits = Manifest(source.samples, source.classes).split_counts(present_only=True) if source.presplit else {}
    report = CheckReport(
        path=str(source.root), layout=source.layout, classes=list(source.classes), stats=stats,
        usable=True, problem=None, imbalance=None, warnings=list(source.warnings), bad_files=bad,
        skipped=[(str(p), r) for p, r in source.skipped], exact_duplicates=_exact_groups(good),
        near_duplicates=[], label_conflicts=[], split_counts=splits,
        scanned=len(scans), scan_seconds=round(seconds, 3),
        images_per_second=round(len(scans) / seconds, 1) if seconds > 0 else 0.0,
        near_dup_threshold=near_dup_threshold, samples=[s for s, _ in good],
    )
    _fill_groups(report, good, groups)
    _judge(report, source)
    return report


def _scan_all(
    samples: list[Sample], max_pixels: int | None, workers: int | None, progress: Callable[[int, int], None] | None
) -> list[_Scan]:
    workers = workers or min(4, usable_cores())
    out: list[_Scan] = []
    total = len(samples)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for scan in pool.map(lambda s: _scan_one(s.path, max_pixels), samples, chunksize=1):
            out.append(scan)
            if progress is not None and (len(out) % 32 == 0 or len(out) == total):
                progress(len(out), total)
    return out


def _scan_one(path: Path, max_pixels: int | None) -> _Scan:
    """Read the bytes once, decode once (JPEG via draft), derive size and pHash from that image."""
    try:
        data = read_image_bytes(path)
        img, (width, height) = decode_image(path, data=data, max_pixels=max_pixels, draft=(64, 64))
        return _Scan(hashlib.sha256(data).hexdigest(), phash(img), width, height)
    except ImageLoadError as err:
        return _Scan(error=err.reason)


def _exact_groups(good: list[tuple[Sample, _Scan]]) -> list[list[str]]:
    by_sha: dict[str, list[str]] = defaultdict(list)
    for sample, scan in good:
        by_sha[scan.sha].append(str(sample.path))
    return sorted(sorted(g) for g in by_sha.values() if len(g) > 1)


def _fill_groups(report: CheckReport, good: list[tuple[Sample, _Scan]], groups: list[int]) -> None:
    members: dict[int, list[Sample]] = defaultdict(list)
    for (sample, _), gid in zip(good, groups):
        members[gid].append(sample)
    ordered = sorted(members.values(), key=lambda ms: min(str(s.path) for s in ms))
    width = len(str(len(ordered)))
    leaks: list[list[str]] = []
    for k, group in enumerate(ordered):
        for sample in group:
            report.group_of[str(sample.path)] = f"g{k:0{width}d}"
        if len(group) < 2:
            continue
        files = sorted(str(s.path) for s in group)
        report.near_duplicates.append(files)
        labels = sorted({s.label for s in group})
        if len(labels) > 1:
            report.label_conflicts.append({"labels": labels, "files": files})
        if len({s.split for s in group}) > 1:
            leaks.append(files)
    if leaks:
        report.warnings.append(
            f"{len(leaks)} near-duplicate group(s) span the given splits (e.g. {', '.join(leaks[0][:2])}); "
            "this leaks evaluation images into training"
        )


def imbalance_ratio(counts: Iterable[int]) -> float | None:
    """Largest over smallest non-zero class count; None with fewer than two non-empty classes."""
    present = [n for n in counts if n > 0]
    return max(present) / min(present) if len(present) >= 2 else None


def _judge(report: CheckReport, source: Source) -> None:
    """Set ``usable``/``problem``, ``imbalance`` and the warnings."""
    counts = report.counts
    empty = [c for c, n in counts.items() if n == 0]
    if not counts:
        report.problem = (
            f"no classes found in {report.path}; expected DATA/<class>/<image> folders "
            "or a CSV with path,label columns"
        )
    elif empty:
        report.problem = f"class '{empty[0]}' has no usable images; add images to it or remove the folder"
    elif len(counts) < 2:
        report.problem = f"only one class ('{next(iter(counts))}'); a classifier needs at least 2 classes"
    elif source.presplit and not any(s.split == "train" for s in report.samples):
        report.problem = "pre-split data has no usable train images; add a train/ folder"
    report.usable = report.problem is None
    ratio = imbalance_ratio(counts.values())
    report.imbalance = round(ratio, 2) if ratio is not None else None
    warn = report.warnings
    if report.imbalance is not None and report.imbalance > IMBALANCE_THRESHOLD:
        big = max(counts, key=lambda c: counts[c])
        small = min((c for c in counts if counts[c]), key=lambda c: counts[c])
        warn.append(
            f"imbalance {report.imbalance:.1f}:1 (largest '{big}' {counts[big]}, smallest '{small}' {counts[small]}); "
            + BALANCE_NOTE
        )
    for c, n in counts.items():
        if 0 < n < MIN_SPLIT_IMAGES and not source.presplit:
            warn.append(f"class '{c}' has only {n} image(s); it will be kept in train only (no val/test image)")
    for sp, per_class in report.split_counts.items():
        missing = [c for c, n in per_class.items() if n == 0]
        if missing and sp == "train":
            warn.append(f"train split has no images of {', '.join(repr(c) for c in missing)}: a model cannot learn "
                        "them; add training images or re-split")
        elif missing:
            warn.append(f"{sp} split has no images of {', '.join(repr(c) for c in missing)}")
    if report.bad_files:
        warn.append(f"{len(report.bad_files)} bad file(s) will be excluded (each listed with its reason)")
    if report.label_conflicts:
        warn.append(
            f"{len(report.label_conflicts)} duplicate group(s) span two or more classes (label conflicts); "
            "remove the wrong copies"
        )
    if report.exact_duplicates:
        extra = sum(len(g) - 1 for g in report.exact_duplicates)
        warn.append(f"{len(report.exact_duplicates)} exact-duplicate group(s) ({extra} extra copies)")


def group_near_duplicates(hashes: np.ndarray, threshold: int, tile: int = 256) -> list[int]:
    """Groups of pHashes within ``threshold`` bits (transitively); a group id per input: the index, among the
    sorted distinct hashes, of the group's first one."""
    if len(hashes) == 0:
        return []
    unique, inverse = np.unique(hashes.astype(np.uint64), return_inverse=True)
    component = connected_components(len(unique), _close_pairs(unique, threshold, tile))
    return [int(component[i]) for i in np.asarray(inverse).ravel()]


def connected_components(n: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """The component of each of ``n`` nodes joined by ``pairs`` (scipy's csgraph), named by its smallest node."""
    from scipy.sparse import coo_matrix, csgraph

    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    smallest = np.full(int(labels.max(initial=-1)) + 1, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


def _close_pairs(unique: np.ndarray, threshold: int, tile: int) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` of distinct hashes with Hamming distance <= ``threshold``, tile by tile.

    Small tiles with preallocated buffers stay in cache: ~0.5 s for 30,000 hashes on one core.
    """
    pairs: list[tuple[int, int]] = []
    if threshold <= 0:
        return pairs
    n = len(unique)
    xor = np.empty((tile, tile), np.uint64)
    bits = np.empty((tile, tile), np.uint8)
    close = np.empty((tile, tile), bool)
    for i0 in range(0, n, tile):
        rows = unique[i0 : i0 + tile, None]
        for j0 in range(i0, n, tile):
            cols = unique[None, j0 : j0 + tile]
            r, c = rows.shape[0], cols.shape[1]
            np.bitwise_xor(rows, cols, out=xor[:r, :c])
            mask = np.less_equal(_popcount(xor[:r, :c], bits[:r, :c]), threshold, out=close[:r, :c])
            if mask.any():
                ii, jj = np.nonzero(mask)
                keep = ii + i0 < jj + j0
                pairs += zip((ii[keep] + i0).tolist(), (jj[keep] + j0).tolist())
    return pairs


def _popcount(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x, out=out)
    return popcount_swar(x)  # numpy < 2


def popcount_swar(x: np.ndarray) -> np.ndarray:
    """Bits set per uint64 (SWAR), for numpy versions without ``np.bitwise_count``."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def render_check(report: CheckReport, console: Any) -> None:
    """Print the report with rich: a per-class table, then imbalance, problems, duplicates, scan rate."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(report.path)}  ({report.layout}, {report.total} usable images)", title_justify="left")
    for name, justify in (("class", "left"), ("images", "right"), ("", "left"), ("share", "right"),
                          ("width", "right"), ("height", "right"), ("bad", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    top = max(report.counts.values(), default=0) or 1
    for name, s in report.stats.items():
        bar = "█" * max(1 if s.count else 0, round(24 * s.count / top))
        table.add_row(escape(name), str(s.count), f"[cyan]{bar}[/]", percent(s.share), _range(s.min_width, s.max_width),
                      _range(s.min_height, s.max_height), str(s.bad) if s.bad else "")
    console.print(table)
    if report.imbalance is not None:
        console.print(f"imbalance (largest/smallest class): {report.imbalance:.1f}:1")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    for b in report.bad_files:
        console.print(f"[red]bad file:[/] {escape(shown_path(b.path, report.path))}: {escape(b.reason)}", highlight=False)
    for p, r in report.skipped[:20]:
        console.print(f"[dim]skipped:[/] {escape(shown_path(p, report.path))}: {escape(r)}", highlight=False)
    if len(report.skipped) > 20:
        console.print(f"[dim]skipped: ... and {len(report.skipped) - 20} more (see --json)[/]")
    console.print(
        f"duplicates: {len(report.exact_duplicates)} exact group(s), {len(report.near_duplicates)} near-duplicate "
        f"group(s) (pHash distance <= {report.near_dup_threshold}), {len(report.label_conflicts)} label conflict(s)"
    )
    for conflict in report.label_conflicts[:10]:
        files = ", ".join(shown_path(f, report.path) for f in conflict["files"][:4])
        console.print(f"  [red]conflict[/] {escape('/'.join(conflict['labels']))}: {escape(files)}", highlight=False)
    console.print(f"scanned {report.scanned} images in {duration(report.scan_seconds)} ({rate(report.images_per_second)}/s)")
    verdict = "[green]usable[/]" if report.usable else f"[red]not usable:[/] {escape(report.problem or '')}"
    console.print(verdict, highlight=False)


def _range(lo: int | None, hi: int | None) -> str:
    if lo is None or hi is None:
        return "-"
    return str(lo) if lo == hi else f"{lo}-{hi}"
