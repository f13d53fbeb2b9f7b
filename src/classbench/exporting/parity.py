"""Parity as a user judges it: top-1 agreement of an export with the fp32 PyTorch model, overall and per class.

The images are the run's own ``val`` split by default (``test`` on request; the locked test split is kept for the
final estimate), read from ``split.csv`` and decoded by ``classbench.inference.iter_batches`` with the run's
``img_size`` / ``mean`` / ``std``: the one inference path of ``evaluate`` and ``predict``. Calibration images for
INT8 are a seeded sample of the ``train`` split through the same path. Without a split (and no images given) the
fp32 logit check runs on seeded random images and agreement is grouped by PyTorch's prediction.

``export.json`` in the run folder holds one entry per export variant (``onnx``, ``onnx-int8``, ``openvino``, ...);
``record`` replaces one entry atomically and leaves the others as they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.calibration import softmax, stored_temperature
from classbench.errors import ModelError
from classbench.formatting import percent

EXPORT_JSON = "export.json"
RANDOM_SAMPLES = 32
DEFAULT_MAX_IMAGES = 1000
DEFAULT_MIN_AGREEMENT = 0.99  # INT8 exports under this top-1 agreement with PyTorch are refused
BATCH = 32


@dataclass
class Samples:
    """Parity images: ``batches`` of uint8 ``[B, 3, S, S]`` tensors in ``paths`` order, ``labels`` their class
    indices in ``meta["classes"]`` (-1: a label the model does not know; None: no labels), ``source`` what they are
    (``"val"``, ``"test"``, ``"given"``, ``"random"``), ``available`` how many the source had before the cap,
    ``unreadable`` how many could not be decoded (left out), ``note`` why random images were used."""

    batches: list[Any]
    labels: list[int] | None
    source: str
    available: int
    unreadable: int = 0
    note: str = ""

    def inputs(self, meta: dict[str, Any]) -> Iterator[np.ndarray]:
        """Normalised float32 NCHW batches (the models' input), one per stored batch."""
        from classbench.data.transforms import normalize

        for batch in self.batches:
            yield np.ascontiguousarray(normalize(batch, meta["mean"], meta["std"]).numpy(), dtype=np.float32)


def split_rows(folder: Path, split: str) -> list[tuple[Path, str]]:
    """``(path, label)`` of one split of the run's ``split.csv`` in file order; empty when there is none."""
    from classbench.data.manifest import Manifest

    csv_path = folder / "split.csv"
    if not csv_path.is_file():
        return []
    return [(s.path, s.label) for s in Manifest.load(csv_path).subset(split)]


def _decode(paths: Sequence[Path], size: int) -> tuple[list[Any], list[int]]:
    """uint8 batches of the readable files and the positions (in ``paths``) that they hold."""
    from classbench.inference import iter_batches

    batches, kept = [], []
    for batch in iter_batches(paths, size, BATCH):
        if batch.images is not None:
            batches.append(batch.images)
            kept += batch.index
    return batches, kept


def _seeded_subset(n: int, limit: int | None, seed: int) -> list[int]:
    """All of ``range(n)``, or ``limit`` of them drawn with ``seed`` (sorted: file order is kept)."""
    if limit is None or n <= limit:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, limit, replace=False).tolist())


def parity_samples(folder: Path, meta: dict[str, Any], split: str = "val",
                   images: Sequence[str | os.PathLike] | None = None, max_images: int | None = DEFAULT_MAX_IMAGES,
                   seed: int = 0) -> Samples:
    """The images parity is measured on: ``images`` (no labels) when given, else the run's ``split`` (a seeded
    subset of ``max_images`` when it has more), else ``RANDOM_SAMPLES`` seeded random images."""
    import torch

    size = int(meta["img_size"])
    if images is not None:
        paths, names, source = [Path(p) for p in images], None, "given"
    else:
        rows = split_rows(folder, split)
        paths, names, source = [p for p, _ in rows], [label for _, label in rows], split
    pick = _seeded_subset(len(paths), max_images, seed)
    batches, kept = _decode([paths[i] for i in pick], size)
    if not batches:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randint(0, 256, (RANDOM_SAMPLES, 3, size, size), dtype=torch.uint8, generator=g)
        where = "the given images" if images is not None else f"the {split} split of {folder / 'split.csv'}"
        return Samples([noise], None, "random", 0, note=f"no readable images in {where}")
    index = {c: i for i, c in enumerate(meta["classes"])}
    labels = [index.get(names[pick[k]], -1) for k in kept] if names is not None else None
    return Samples(batches, labels, source, len(paths), unreadable=len(pick) - len(kept))


def calibration_inputs(folder: Path, meta: dict[str, Any], count: int, seed: int = 0,
                       batch_size: int = 8) -> list[np.ndarray]:
    """``count`` train images of the run's split.csv (a seeded sample, file order), normalised float32 batches of
    ``batch_size``; ModelError when the run lists no readable training image."""
    paths = [p for p, _ in split_rows(folder, "train")]
    chosen = [paths[i] for i in _seeded_subset(len(paths), count, seed)]
    batches, _ = _decode(chosen, int(meta["img_size"]))
    if not batches:
        raise ModelError(f"{folder}: no readable training images in split.csv to calibrate INT8 on; "
                         "export from a run folder that `classbench train` wrote")
    flat = Samples(batches, None, "train", len(paths)).inputs(meta)
    stacked = np.concatenate(list(flat))
    return [stacked[i:i + batch_size] for i in range(0, len(stacked), batch_size)]


def run_logits(run: Callable[[np.ndarray], np.ndarray], samples: Samples, meta: dict[str, Any]) -> np.ndarray:
    """``run(batch) -> logits`` over every parity batch, concatenated (float32 ``[N, C]``)."""
    return np.concatenate([np.asarray(run(x), dtype=np.float32) for x in samples.inputs(meta)])


def torch_logits(model: Any, samples: Samples, meta: dict[str, Any]) -> np.ndarray:
    """The reference: fp32 PyTorch logits of the parity images (``classbench.inference.TorchRunner``)."""
    from classbench.inference import TorchRunner

    return run_logits(TorchRunner(model, "cpu"), samples, meta)


def _macro_f1(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present (labelled or predicted), counted as ``evaluate`` counts it."""
    from classbench.metrics import classification_summary

    return float(classification_summary(labels, pred, None, [str(c) for c in range(n_classes)])["macro_f1"])


def agreement(reference: np.ndarray, logits: np.ndarray, samples: Samples, meta: dict[str, Any],
              tolerance: float | None = None, min_agreement: float = DEFAULT_MIN_AGREEMENT, enforce: bool = False) -> dict[str, Any]:
    """The parity report of one export: overall and per-class top-1 agreement with PyTorch, macro-F1 of both
    against the labels (when known), max probability/logit differences.

    Per class groups by the true label (``grouped_by: "label"``) or, without labels, by PyTorch's prediction.
    ``tolerance`` (the fp32 check) raises ModelError when the max probability difference exceeds it.
    ``below_min_agreement`` says whether agreement is under ``min_agreement``; with ``enforce`` that makes
    ``passed`` False (the caller then raises ``refusal``)."""
    classes = list(meta["classes"])
    if not np.isfinite(logits).all():
        raise ModelError("exported model produced NaN/inf (fp16 overflow?); export fp32 and use TensorRT --fp16")
    temperature = stored_temperature(meta)
    ref_p, out_p = softmax(reference, temperature), softmax(logits, temperature)
    ref_top, out_top = ref_p.argmax(1), out_p.argmax(1)
    same = ref_top == out_top
    labelled = samples.labels is not None
    groups = np.asarray(samples.labels) if labelled else ref_top
    per_class = [{"class": c, "images": int((groups == i).sum()),
                  "agreement": float(same[groups == i].mean()) if (groups == i).any() else None}
                 for i, c in enumerate(classes)]
    report: dict[str, Any] = {
        "images": samples.source, "samples": len(reference), "available": samples.available,
        "unreadable": samples.unreadable, "grouped_by": "label" if labelled else "PyTorch prediction",
        "top1_agreement": float(same.mean()), "per_class": per_class,
        "max_abs_prob_diff": float(np.abs(ref_p - out_p).max()),
        "max_abs_logit_diff": float(np.abs(reference - logits).max()),
        "tolerance": tolerance, "min_agreement": min_agreement, "enforced": enforce,
    }
    if labelled and (groups >= 0).any():
        known = groups >= 0
        report["macro_f1_torch"] = _macro_f1(groups[known], ref_top[known], reference.shape[1])
        report["macro_f1_export"] = _macro_f1(groups[known], out_top[known], reference.shape[1])
    if tolerance is not None and report["max_abs_prob_diff"] > tolerance:
        raise ModelError(f"parity check failed: max probability difference {report['max_abs_prob_diff']:.2e} > "
                         f"{tolerance:.0e} (top-1 agreement {percent(report['top1_agreement'])}) over {len(reference)} inputs")
    report["below_min_agreement"] = bool(report["top1_agreement"] < min_agreement)
    report["passed"] = not (enforce and report["below_min_agreement"])
    return report


def worst_classes(report: dict[str, Any], limit: int | None = None) -> list[tuple[str, float]]:
    """``(class, agreement)`` lowest first (classes without images left out)."""
    rows = [(r["class"], r["agreement"]) for r in report["per_class"] if r["agreement"] is not None]
    return sorted(rows, key=lambda t: (t[1], t[0]))[:limit]


def refusal(report: dict[str, Any], what: str) -> ModelError:
    """The one-line error of an export whose agreement is under its ``min_agreement``."""
    worst = ", ".join(f"{c} {percent(a)}" for c, a in worst_classes(report, 3))
    return ModelError(f"{what}: top-1 agreement with PyTorch fp32 on {report['samples']} {report['images']} images is "
                      f"{percent(report['top1_agreement'])} < {percent(report['min_agreement'])} (worst: {worst}); nothing "
                      "written. Lower --min-agreement, raise --calibration-images, or ship the fp32 export")


def record(folder: Path, variant: str, entry: dict[str, Any]) -> Path:
    """Replace ``variant``'s entry in ``folder/export.json`` (atomic write; other variants kept as they were)."""
    from classbench.runs import atomic_write_json, read_json

    path = folder / EXPORT_JSON
    try:
        current = read_json(path) if path.is_file() else {}
    except Exception:  # noqa: BLE001 - a damaged export.json is replaced, never a reason to refuse an export
        current = {}
    if not isinstance(current, dict):
        current = {}
    current[variant] = entry
    return atomic_write_json(path, current)
