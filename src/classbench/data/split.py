"""``split``: a stratified, seeded, group-aware train/val/test split written as a manifest.

* Inputs are ``check``ed first: bad files are excluded (and listed), near-duplicate groups found by
  ``check`` (plus a CSV ``group`` column) are kept whole in one split.
* Per class (a group belongs to the class most of its images have), groups are shuffled with
  ``random.Random(f"{seed}/{class}")`` over sorted inputs: the same on every machine, and a class's
  split does not change when other classes are added.
* A class with >= 3 images (and >= 3 groups) gets >= 1 image in val and in test (when val/test > 0);
  smaller classes stay in train, with a warning. ``test_per_class=k`` puts exactly k images (k groups,
  smallest fitting first) of each class in test and ``val`` is then a fraction of the rest.
* Pre-split folders and CSVs with a split column are used as given.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from classbench.data.check import MIN_SPLIT_IMAGES, BadFile, CheckReport, check, connected_components
from classbench.data.manifest import SPLITS, Manifest, Sample
from classbench.errors import DataError

DEFAULT_VAL, DEFAULT_TEST = 0.2, 0.1  # the shares of the images a split gives validation and the locked test


@dataclass
class SplitResult:
    """The manifest, what was excluded, and where it was written."""

    manifest: Manifest
    warnings: list[str] = field(default_factory=list)
    excluded: list[BadFile] = field(default_factory=list)
    given: bool = False
    seed: int = 0
    csv_path: Path | None = None
    materialized: Path | None = None
    report: CheckReport | None = field(default=None, repr=False)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class: images}}``."""
        return self.manifest.split_counts()

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts, "warnings": self.warnings, "given": self.given, "seed": self.seed,
            "excluded": [b._asdict() for b in self.excluded], "sha256": self.manifest.sha256(),
            "csv_path": str(self.csv_path) if self.csv_path else None,
            "materialized": str(self.materialized) if self.materialized else None,
        }


def split(
    path: str | os.PathLike,
    val: float = DEFAULT_VAL,
    test: float = DEFAULT_TEST,
    test_per_class: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    materialize: str | os.PathLike | None = None,
    *,
    report: CheckReport | None = None,
) -> SplitResult:
    """Split the DATA folder/CSV at ``path``; ``out`` (a .csv path or a folder) writes the manifest.

    ``report`` reuses an earlier ``check(path)``; ``materialize=DIR`` links the files into
    ``DIR/train|val|test/<class>/`` (hard links, copies across filesystems).
    """
    _validate(val, test, test_per_class)
    report = report or check(path)
    if not report.usable:
        raise DataError(f"{path}: {report.problem}")
    groups = _groups(report)
    given = bool(report.samples) and all(s.split for s in report.samples)
    warnings = list(report.warnings)  # imbalance, small classes, bad files, classes missing from given splits
    if given:
        samples = [replace(s, group=groups[str(s.path)]) for s in report.samples]
    else:
        samples, notes = _assign(report.samples, groups, val, test, test_per_class, seed)
        warnings += notes
    result = SplitResult(Manifest(samples, report.classes), warnings, list(report.bad_files), given, seed, report=report)
    if out is not None:
        csv_path = Path(out) if str(out).lower().endswith(".csv") else Path(out) / "split.csv"
        result.csv_path = result.manifest.save(csv_path)
    if materialize is not None:
        result.materialized = materialize_split(result.manifest, materialize)
    return result


def _validate(val: float, test: float, test_per_class: int | None) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"val={val}, test={test}: fractions must be >= 0 and add up to less than 1")
    if test_per_class is not None and test_per_class < 0:
        raise DataError(f"test_per_class={test_per_class}: must be >= 0")


def _groups(report: CheckReport) -> dict[str, str]:
    """Near-duplicate groups from ``check`` merged with a CSV ``group`` column (connected components of both),
    each named after its first sample's group (by path; the user's name preferred)."""
    def dup_key(s: Sample) -> str:
        return "dup:" + report.group_of.get(str(s.path), str(s.path))

    samples = sorted(report.samples, key=lambda s: str(s.path))
    nodes: dict[str, int] = {}
    for key in [dup_key(s) for s in samples] + ["user:" + s.group for s in samples if s.group]:
        nodes.setdefault(key, len(nodes))
    component = connected_components(len(nodes), [(nodes[dup_key(s)], nodes["user:" + s.group])
                                                  for s in samples if s.group])
    names: dict[int, str] = {}
    for s in samples:
        names.setdefault(int(component[nodes[dup_key(s)]]), s.group or dup_key(s)[4:])
    return {str(s.path): names[int(component[nodes[dup_key(s)]])] for s in report.samples}


def training_split(path: str | os.PathLike, val: float = DEFAULT_VAL, test: float = DEFAULT_TEST, test_per_class: int | None = None,
                   seed: int = 0, out: str | os.PathLike | None = None) -> SplitResult:
    """The split a training run uses.

    A classbench manifest (every row has a split and a group: ``split`` already checked it and dropped
    bad files) is used as written, without a second scan of every image; anything else goes through
    :func:`split`. A given split without validation (ImageAI's train/test folders) gets a stratified
    ``val`` carved out of train.
    """
    path = Path(path)
    result = None
    if path.suffix.lower() == ".csv" and path.is_file():
        manifest = Manifest.load(path)
        if manifest.samples and all(s.split and s.group for s in manifest.samples):
            result = SplitResult(manifest, given=True, seed=seed)
    if result is None:
        result = split(path, val=val, test=test, test_per_class=test_per_class, seed=seed)
    carved = carve_missing_validation(result, val, seed, path)
    if carved:
        result.warnings.append(carved)
    if out is not None:
        result.csv_path = result.manifest.save(out)
    return result


def carve_missing_validation(result: SplitResult, val: float, seed: int, source: Any) -> str | None:
    """Give ``result`` a validation part when its split has none (a given train/test split): a stratified
    ``val`` of train, via :func:`carve_validation`. Returns the warning to show the user, or None."""
    manifest = result.manifest
    if manifest.subset("val") or val <= 0 or not manifest.subset("train"):
        return None
    result.manifest = carve_validation(manifest, val, seed)
    return (f"{source}: the given split has no validation part; took a stratified {val:.0%} of train as "
            "validation (checkpoints are chosen on it, never on test)")


def carve_validation(manifest: Manifest, fraction: float, seed: int | str = 0) -> Manifest:
    """A given split without validation (e.g. ImageAI's train/test folders): move a stratified,
    group-aware ``fraction`` of train to val; test is untouched."""
    train = manifest.subset("train")
    groups = {str(s.path): s.group or str(s.path) for s in train}
    carved, _ = _assign(train, groups, fraction, 0.0, None, seed)
    by_path = {str(s.path): s for s in carved}
    return Manifest([by_path.get(str(s.path), s) for s in manifest.samples], manifest.classes)


def majority_label(labels: list[str]) -> str:
    """The class a near-duplicate group belongs to: its most common label (ties: the first in sorted order)."""
    ordered = sorted(labels)
    return max(sorted(set(ordered)), key=ordered.count)


def groups_by_class(samples: list[Sample], groups: dict[str, str]) -> dict[str, list[list[Sample]]]:
    """``{class: [group, ...]}``: samples joined by ``groups[path]``, each group under its majority label, groups in
    the sorted order of their ids (the one rule that split, folds and the verdict's bootstrap share)."""
    members: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        members[groups[str(s.path)]].append(s)
    by_class: dict[str, list[list[Sample]]] = defaultdict(list)
    for gid in sorted(members):
        by_class[majority_label([s.label for s in members[gid]])].append(members[gid])
    return by_class


def _assign(
    samples: list[Sample], groups: dict[str, str], val: float, test: float, test_per_class: int | None, seed: int | str
) -> tuple[list[Sample], list[str]]:
    by_class = groups_by_class(samples, groups)
    split_of: dict[str, str] = {}
    notes: list[str] = []
    for label in sorted(by_class):
        class_groups = by_class[label]
        rng = random.Random(f"{seed}/{label}")
        rng.shuffle(class_groups)
        n = sum(len(g) for g in class_groups)
        n_test, n_val = _targets(n, val, test, test_per_class)
        needed = 1 + (n_test > 0) + (n_val > 0)
        if n < MIN_SPLIT_IMAGES or len(class_groups) < needed:
            n_test = n_val = 0
            if n >= MIN_SPLIT_IMAGES:
                notes.append(f"class '{label}': its {n} images form {len(class_groups)} near-duplicate group(s); "
                             "all kept in train")
        rest = list(class_groups)
        for name, target in (("test", n_test), ("val", n_val)):
            for group in _take(rest, target):
                split_of.update({str(s.path): name for s in group})
        split_of.update({str(s.path): "train" for g in rest for s in g})
    out = [replace(s, split=split_of[str(s.path)], group=groups[str(s.path)]) for s in samples]
    return out, notes


def _targets(n: int, val: float, test: float, test_per_class: int | None) -> tuple[int, int]:
    """Images wanted in test and val for a class of ``n`` images (train always keeps >= 1)."""
    if test_per_class is not None:
        n_test = min(test_per_class, max(n - 1, 0))
        n_val = _round(val * (n - n_test))
    else:
        n_test, n_val = _round(test * n), _round(val * n)
        if test > 0:
            n_test = max(1, n_test)
    if val > 0:
        n_val = max(1, n_val)
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_val >= n_test and n_val > 1 or not n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def _round(x: float) -> int:
    return int(x + 0.5)


def _take(groups: list[list[Sample]], target: int) -> list[list[Sample]]:
    """Remove groups from ``groups`` (in order) until ``target`` images are taken; at least one group stays.

    Groups that fit the remaining need are taken; if none fits, the smallest group is taken so the
    split is not empty.
    """
    chosen: list[int] = []
    need = target
    for i, group in enumerate(groups):
        if need <= 0 or len(groups) - len(chosen) <= 1:
            break
        if len(group) <= need:
            chosen.append(i)
            need -= len(group)
    if target > 0 and not chosen and len(groups) > 1:
        chosen = [min(range(len(groups)), key=lambda i: len(groups[i]))]
    taken = [groups[i] for i in chosen]
    keep = set(range(len(groups))) - set(chosen)
    groups[:] = [g for i, g in enumerate(groups) if i in keep]
    return taken


def materialize_split(manifest: Manifest, folder: str | os.PathLike) -> Path:
    """Hard-link (or copy) every sample to ``folder/<split>/<class>/<name>``; ``folder`` must be new or empty."""
    dest = Path(folder)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: exists and is not empty; choose a new folder for --materialize")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        used: set[Path] = set()
        for s in sorted(manifest.samples, key=lambda s: str(s.path)):
            target = _free_name(tmp / (s.split or "unsplit") / s.label / s.path.name, used)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(s.path, target)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _free_name(target: Path, used: set[Path]) -> Path:
    candidate, k = target, 1
    while candidate in used:
        candidate = target.with_name(f"{target.stem}_{k}{target.suffix}")
        k += 1
    used.add(candidate)
    return candidate


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def render_split(result: SplitResult, console: Any) -> None:
    """Print images per class and split with rich, then the warnings."""
    from rich.markup import escape
    from rich.table import Table

    how = "as given" if result.given else f"seed {result.seed}"
    table = Table(title=f"split ({how})", title_justify="left")
    table.add_column("class")
    for name in (*SPLITS, "total"):
        table.add_column(name, justify="right")
    counts = result.counts
    for c in result.manifest.classes:
        row = [counts[sp][c] for sp in SPLITS]
        table.add_row(escape(c), *map(str, row), str(sum(row)))
    totals = [sum(counts[sp].values()) for sp in SPLITS]
    table.add_row("[bold]all[/]", *map(str, totals), str(sum(totals)))
    console.print(table)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    for b in result.excluded:
        console.print(f"[red]excluded:[/] {escape(b.path)}: {escape(b.reason)}")
    if result.csv_path:
        console.print(f"manifest: {escape(str(result.csv_path))}")
    if result.materialized:
        console.print(f"files linked under: {escape(str(result.materialized))}")
