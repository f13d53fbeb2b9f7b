"""A list of labelled image files with their split: the contract between data, training and runs.

On disk a manifest is ``<name>.csv`` with columns ``path,label,split,group`` (paths relative to the
CSV's folder, ``/``-separated; empty split/group = none) plus ``<name>.classes.json`` with the sorted
class list. In memory every ``Sample.path`` is absolute and normalised, so save/load round-trips.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from classbench.errors import DataError
from classbench.runs import atomic_write_csv, atomic_write_json, csv_text

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
}
FIELDS: tuple[str, ...] = ("path", "label", "split", "group")


def canonical_split(name: str | None) -> str | None:
    """``"Valid"`` -> ``"val"``; ``""``/``None`` -> ``None``; an unknown name -> ``ValueError``."""
    if name is None or not str(name).strip():
        return None
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {name!r}; use train, val or test")
    return SPLIT_ALIASES[key]


def normpath(path: str | os.PathLike) -> Path:
    """Absolute, normalised path (``..`` folded, symlinks kept)."""
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


def shown_path(path: str | os.PathLike, data: str | os.PathLike) -> str:
    """``path`` as a user reads it: relative to the dataset ``data`` (a folder, or a CSV's folder) when it lies
    inside it, else as given."""
    root = os.fspath(data)
    root = os.path.dirname(root) if root.lower().endswith(".csv") else root
    try:
        rel = os.path.relpath(os.fspath(path), root)
    except ValueError:  # another drive (Windows)
        return os.fspath(path)
    return os.fspath(path) if rel.startswith("..") else rel


@dataclass(frozen=True)
class Sample:
    """One labelled image file; ``path`` is made absolute and normalised on creation."""

    path: Path
    label: str
    split: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", normpath(self.path))
        object.__setattr__(self, "split", canonical_split(self.split))
        object.__setattr__(self, "group", self.group or None)


@dataclass
class Manifest:
    """Samples plus the sorted class list (which may name classes that have no samples)."""

    samples: list[Sample]
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.samples = list(self.samples)
        self.classes = sorted(set(self.classes) | {s.label for s in self.samples})

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def subset(self, split: str) -> list[Sample]:
        """Samples of one split (``"valid"`` etc. accepted)."""
        split = canonical_split(split)
        return [s for s in self.samples if s.split == split]

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class (all classes, zeros included), for one split or overall."""
        samples = self.samples if split is None else self.subset(split)
        out = dict.fromkeys(self.classes, 0)
        for s in samples:
            out[s.label] += 1
        return out

    def split_counts(self, present_only: bool = False) -> dict[str, dict[str, int]]:
        """``{split: {class: images}}`` for train, val and test, empty ones too; with ``present_only`` only the
        splits that have images, plus ``"unsplit"`` for the images in none (what ``check`` and the report show)."""
        counts = {split: self.counts(split) for split in SPLITS}
        if not present_only:
            return counts
        unsplit = Manifest([s for s in self.samples if s.split is None], self.classes).counts()
        return {split: c for split, c in {**counts, "unsplit": unsplit}.items() if any(c.values())}

    def __len__(self) -> int:
        return len(self.samples)

    def save(self, csv_path: str | os.PathLike) -> Path:
        """Write ``csv_path`` and the sidecar ``<stem>.classes.json`` atomically; returns the CSV path."""
        csv_path = normpath(csv_path)
        rows = [_row(s, csv_path.parent) for s in self.samples]
        atomic_write_csv(csv_path, rows, FIELDS)
        atomic_write_json(classes_path(csv_path), self.classes)
        return csv_path

    @classmethod
    def load(cls, csv_path: str | os.PathLike) -> Manifest:
        """Read a manifest written by ``save`` (or any CSV with ``path,label[,split[,group]]``)."""
        csv_path = normpath(csv_path)
        try:
            text = csv_path.read_text(encoding="utf-8-sig")
        except FileNotFoundError as err:
            raise DataError(f"{csv_path}: manifest not found; check the path") from err
        samples = [
            Sample(csv_path.parent / rel, label, split, group) for rel, label, split, group in parse_rows(text, csv_path)
        ]
        classes: list[str] = []
        sidecar = classes_path(csv_path)
        if sidecar.is_file():
            try:
                classes = [str(c) for c in json.loads(sidecar.read_text(encoding="utf-8"))]
            except (json.JSONDecodeError, TypeError) as err:
                raise DataError(f"{sidecar}: not a JSON list of class names; delete or re-create it") from err
        return cls(samples, classes)

    def sha256(self) -> str:
        """Hash of the canonical CSV: rows sorted, paths relative to the samples' common folder.

        Independent of where the CSV or the dataset lives, so runs on the same split compare equal.
        """
        root = _common_root(self.samples)
        rows = sorted((_row(s, root) for s in self.samples), key=lambda r: (r["path"], r["label"]))
        text = csv_text([["classes", *self.classes], *([r[k] for k in FIELDS] for r in rows)])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def classes_path(csv_path: str | os.PathLike) -> Path:
    """``split.csv`` -> ``split.classes.json``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.classes.json")


PATH_COLUMNS = ("path", "file", "filename", "filepath", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "category", "target")


def parse_rows(text: str, csv_path: Path) -> list[tuple[str, str, str | None, str | None]]:
    """``(path, label, split, group)`` per data row; a missing/odd header or value -> ``DataError``."""
    reader = csv.DictReader(io.StringIO(text))
    header = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    path_col = next((header[c] for c in PATH_COLUMNS if c in header), None)
    label_col = next((header[c] for c in LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise DataError(f"{csv_path}: CSV needs a header row with 'path' and 'label' columns (optional: split, group)")
    split_col, group_col = header.get("split"), header.get("group")
    rows = []
    for line, rec in enumerate(reader, start=2):
        path, label = (rec.get(path_col) or "").strip(), (rec.get(label_col) or "").strip()
        if not path and not label:
            continue
        if not path or not label:
            raise DataError(f"{csv_path}: line {line}: empty path or label; fill it in or remove the row")
        split = (rec.get(split_col) or "").strip() if split_col else ""
        try:
            split = canonical_split(split)
        except ValueError as err:
            raise DataError(f"{csv_path}: line {line}: {err}") from err
        group = (rec.get(group_col) or "").strip() if group_col else ""
        rows.append((path, label, split, group or None))
    return rows


def _row(sample: Sample, base: Path) -> dict[str, str]:
    try:
        rel = Path(os.path.relpath(sample.path, base)).as_posix()
    except ValueError:  # another drive on Windows
        rel = sample.path.as_posix()
    return {"path": rel, "label": sample.label, "split": sample.split or "", "group": sample.group or ""}


def _common_root(samples: list[Sample]) -> Path:
    if not samples:
        return Path("/")
    try:
        return Path(os.path.commonpath([s.path.parent for s in samples]))
    except ValueError:
        return Path("/")
