"""Find the labelled images in a user's DATA path.

Layouts (``Source.layout``):

* ``"folders"``: ``DATA/<class>/<image>``. Images in subfolders below a class folder count for that
  class (the tree is flattened), e.g. ``DATA/boat/2023/x.jpg`` is a ``boat``.
* ``"presplit"``: ``DATA/train|val|test/<class>/...`` (``valid``/``validation`` mean ``val``, ``training``
  means ``train``); used as given. Chosen only when *every* subfolder is a split name.
* ``"csv"``: a CSV with ``path,label[,split[,group]]`` (paths relative to the CSV; classbench's own
  ``split.csv`` manifests are of this form). ``file``/``class`` are accepted as column names too.

Files without an image extension (``IMAGE_EXTENSIONS``), and files directly in ``DATA`` (not in a class
folder), are listed in ``Source.skipped`` with a reason. Hidden files and folders (names starting
with ``.``) and ``__MACOSX`` folders are ignored silently. Samples are sorted by path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from classbench.data.imageio import IMAGE_EXTENSIONS, is_image_file
from classbench.data.manifest import SPLIT_ALIASES, Sample, normpath, parse_rows
from classbench.errors import DataError

_IGNORED_DIRS = {"__MACOSX"}


class SkippedFile(NamedTuple):
    """A file that is not used, and why."""

    path: Path
    reason: str


@dataclass
class Source:
    """What ``read_source`` found: samples (sorted), the layout, skipped files and all class names."""

    samples: list[Sample]
    layout: str
    skipped: list[SkippedFile] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    root: Path = Path(".")
    warnings: list[str] = field(default_factory=list)

    @property
    def presplit(self) -> bool:
        """True when every sample came with a split (pre-split folders, or a CSV split column)."""
        return bool(self.samples) and all(s.split for s in self.samples)


def read_source(path: str | os.PathLike) -> Source:
    """Read a DATA folder or CSV; a wrong path -> ``DataError`` naming it."""
    root = normpath(path)
    if not root.exists():
        raise DataError(
            f"{path}: no such folder or file; DATA must be a folder of class folders (DATA/<class>/<image>) "
            "or a CSV with path,label columns"
        )
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{path}: is a file, not a folder; DATA must be a folder of class folders or a .csv")
        return _read_csv(root)
    subdirs = _subdirs(root)
    split_names = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if subdirs and len(split_names) == len(subdirs):
        return _read_presplit(root, subdirs)
    source = _read_class_folders(root, split=None)
    if split_names:
        names = ", ".join(repr(d.name) for d in split_names)
        source.warnings.append(
            f"folder(s) {names} look like split names but sit beside class folders; "
            "every subfolder is treated as a class"
        )
    return source


def _read_class_folders(root: Path, split: str | None) -> Source:
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    for entry in _visible(root):
        if entry.is_file():
            where = f"{split} split folder" if split else "DATA folder"
            skipped.append(SkippedFile(entry, f"not inside a class folder (loose file in the {where})"))
    classes = [d.name for d in _subdirs(root)]
    for class_dir in _subdirs(root):
        for file in files_under(class_dir):
            if is_image_file(file):
                samples.append(Sample(file, class_dir.name, split))
            else:
                skipped.append(SkippedFile(file, _unsupported(file)))
    samples.sort(key=lambda s: str(s.path))
    skipped.sort(key=lambda s: str(s.path))
    return Source(samples, "folders", skipped, sorted(classes), root)


def _read_presplit(root: Path, split_dirs: list[Path]) -> Source:
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    classes: set[str] = set()
    loose = [SkippedFile(e, "not inside a split folder (train/val/test)") for e in _visible(root) if e.is_file()]
    for split_dir in split_dirs:
        part = _read_class_folders(split_dir, SPLIT_ALIASES[split_dir.name.lower()])
        samples += part.samples
        skipped += part.skipped
        classes.update(part.classes)
    samples.sort(key=lambda s: str(s.path))
    skipped = sorted(loose + skipped, key=lambda s: str(s.path))
    return Source(samples, "presplit", skipped, sorted(classes), root)


def _read_csv(csv_path: Path) -> Source:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV; save it as CSV (UTF-8)") from err
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    for rel, label, split, group in parse_rows(text, csv_path):
        file = normpath(csv_path.parent / rel)
        if is_image_file(file):
            samples.append(Sample(file, label, split, group))
        else:
            skipped.append(SkippedFile(file, _unsupported(file)))
    with_split = sum(1 for s in samples if s.split)
    if 0 < with_split < len(samples):
        raise DataError(
            f"{csv_path}: {len(samples) - with_split} rows have an empty split; fill in train/val/test for every row "
            "or leave the split column out"
        )
    classes = sorted({s.label for s in samples})
    return Source(samples, "csv", skipped, classes, csv_path)


def _unsupported(file: Path) -> str:
    suffix = file.suffix.lower() or "no extension"
    kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    return f"not a supported image type ({suffix}); supported: {kinds}"


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_DIRS


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not _hidden(p.name))
    except PermissionError as err:
        raise DataError(f"{folder}: permission denied; make the folder readable") from err


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir()]


def files_under(folder: Path) -> list[Path]:
    """All files below ``folder``, sorted, recursively, skipping hidden names (``.*``, ``__MACOSX``) and following
    no symlinked folders: the one folder walker (class folders, ``predict`` on a folder)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        out += [Path(dirpath) / f for f in filenames if not _hidden(f)]
    return sorted(out)
