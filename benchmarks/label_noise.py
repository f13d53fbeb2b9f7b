"""Does K-fold `compare` find deliberately wrong labels? Flip 5% of drone_maritime's labels, cross-validate one
model and score the ranked `label_issues.csv` (confident learning on the out-of-fold probabilities).

The flips are seeded, spread over the classes in proportion to their size (largest remainder) and always to
another class. The noisy labels go into a CSV manifest (`path,label`, absolute paths to the original files:
the shared data is never copied or modified). Precision and recall are taken at k = number flipped over the
rows whose source includes `out-of-fold` (conflict-only rows from `check` are not ranked); the random
baseline is the fraction flipped. Flipped images that land in compare's locked test split get no
out-of-fold prediction, so they are reported too ("in pool": the non-test images, from `<out>/split.csv`).
Target: precision at k >= 0.5.

Usage: .venv/bin/python benchmarks/label_noise.py [--model resnet18] [--folds 5] [--epochs 12] [--img-size 96]
       [--seed 0] [--fraction 0.05]   (trains folds x 1 model: many minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, need_drone, print_table, scratch_dir, write_results  # noqa: E402

import classbench  # noqa: E402
from classbench.data.sources import is_image_file  # noqa: E402

TARGET_PRECISION = 0.5


def _key(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def list_images(data: Path) -> list[tuple[str, str]]:
    """``(absolute path, class)`` for every image in ``data``'s class folders, sorted."""
    return [(str(f.absolute()), cls.name) for cls in sorted(p for p in data.iterdir() if p.is_dir())
            for f in sorted(cls.iterdir()) if is_image_file(f)]


def flip_labels(samples: list[tuple[str, str]], fraction: float, seed: int) -> dict[str, tuple[str, str]]:
    """``{path: (original, noisy)}`` for ``round(fraction * n)`` images, allotted to classes in proportion to their
    size (largest remainder, ties by name), each moved to a uniformly chosen *other* class."""
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    classes = sorted(by_class)
    if len(classes) < 2:
        raise SystemExit("need at least two classes to flip labels")
    total = round(fraction * len(samples))
    quotas = {c: total * len(by_class[c]) / len(samples) for c in classes}
    alloc = {c: int(quotas[c]) for c in classes}
    for c in sorted(classes, key=lambda c: (-(quotas[c] - alloc[c]), c))[: total - sum(alloc.values())]:
        alloc[c] += 1
    flips = {}
    for c in classes:
        for path in rng.sample(by_class[c], alloc[c]):
            flips[path] = (c, rng.choice([o for o in classes if o != c]))
    return flips


def write_manifest(samples: list[tuple[str, str]], flips: dict[str, tuple[str, str]], path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label"])
        for file, label in samples:
            writer.writerow([file, flips[file][1] if file in flips else label])
    return path


def read_issues(csv_path: Path) -> list[dict[str, str]]:
    """The ranked out-of-fold rows of ``label_issues.csv`` (file order), paths made absolute."""
    with csv_path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if "out-of-fold" in (r.get("source") or "")]
    for r in rows:
        p = Path(r["path"])
        r["key"] = _key(p if p.is_absolute() else csv_path.parent / p)
    return rows


def pool_keys(out: Path) -> set[str] | None:
    """Non-test images of compare's ``split.csv`` (the ones that get out-of-fold predictions), if it is there."""
    from classbench.data.manifest import Manifest

    manifest = out / "split.csv"
    if not manifest.is_file():
        return None
    return {_key(s.path) for s in Manifest.load(manifest).samples if s.split != "test"}


def score(rows: list[dict[str, str]], flips: dict[str, tuple[str, str]], n_images: int,
          pool: set[str] | None) -> dict:
    truth = {_key(p): orig for p, (orig, _) in flips.items()}
    k = len(truth)
    top = rows[:k]
    hits = [r for r in top if r["key"] in truth]
    flagged_hits = sum(r["key"] in truth for r in rows)
    in_pool = None if pool is None else len(set(truth) & pool)
    return {
        "images": n_images, "flipped": k, "flagged": len(rows), "k": k,
        "precision_at_k": len(hits) / len(top) if top else 0.0,
        "recall_at_k": len(hits) / k if k else 0.0,
        "random_baseline": k / n_images if n_images else 0.0,
        "recall_all_flagged": flagged_hits / k if k else 0.0,
        "suggestion_correct": sum(r["suggested"] == truth[r["key"]] for r in hits) / len(hits) if hits else None,
        "flipped_in_pool": in_pool,
        "recall_at_k_in_pool": len(hits) / in_pool if in_pool else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Flip a fraction of drone_maritime's labels, run a K-fold compare, "
                                     "score its label_issues.csv at k = number flipped.")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0, help="seeds the flips and the compare")
    parser.add_argument("--fraction", type=float, default=0.05, help="fraction of labels to flip")
    parser.add_argument("--weights", default=None, help="'lite0': fine-tune efficientnet_lite0 from ImageNet weights")
    args = parser.parse_args()
    data = need_drone()
    work = scratch_dir("noise")
    samples = list_images(data)
    flips = flip_labels(samples, args.fraction, args.seed)
    manifest = write_manifest(samples, flips, work / "noisy.csv")
    out = work / "cmp"
    extra = {}
    if args.weights == "lite0":
        from _common import lite0_weights

        args.model, extra = "efficientnet_lite0", {"weights": str(lite0_weights())}
    with Timer() as t:
        classbench.compare(manifest, models=[args.model], folds=args.folds, epochs=args.epochs, img_size=args.img_size,
                           seed=args.seed, out=out, progress=False, refit=False, **extra)
    issues_csv = out / "label_issues.csv"
    if not issues_csv.is_file():
        raise SystemExit(f"{issues_csv}: not written by compare (was it run with folds?)")
    result = {"model": args.model, **score(read_issues(issues_csv), flips, len(samples), pool_keys(out)),
              "compare_seconds": round(t.seconds, 1)}
    print_table([result], list(result))
    passed = result["precision_at_k"] >= TARGET_PRECISION
    print(f"precision at k={result['k']}: {result['precision_at_k']:.3f} (random {result['random_baseline']:.3f}); "
          f"target >= {TARGET_PRECISION}: {'PASS' if passed else 'FAIL'}")
    flipped = {Path(p).relative_to(data.absolute()).as_posix(): list(v) for p, v in sorted(flips.items())}
    name = "label_noise" + (f"-{args.weights}" if args.weights else "")
    write_results(name, {"args": vars(args), "rows": [result], "target_precision": TARGET_PRECISION,
                         "passed": passed, "flips": flipped})


if __name__ == "__main__":
    main()
