"""Does `classbench bench --data D --epochs E` predict the real training time within 20%?

Runs the estimate, then the real training of the same configuration, and compares with the wall
time of `classbench.train` (split, cache fill, epochs, validation, checkpoints included).

Usage: .venv/bin/python benchmarks/estimate_check.py [--models resnet18,mobilenetv2] [--img-size 128] [--epochs 5]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import Timer, need_drone, print_table, write_results  # noqa: E402

import classbench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenetv2")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    data = need_drone()
    work = Path(tempfile.mkdtemp(prefix="classbench-est-"))
    rows = []
    for name in args.models.split(","):
        estimate = classbench.bench([name], img_size=args.img_size, batch_size=args.batch_size, data=data,
                                    epochs=args.epochs, val=0.1, test=0.3).rows[0]
        with Timer() as t:
            run = classbench.train(data, model=name, out=work / name, epochs=args.epochs, img_size=args.img_size,
                                   batch_size=args.batch_size, val=0.1, test=0.3, progress=False)
        error = (estimate.estimated_run_seconds - t.seconds) / t.seconds
        rows.append({"model": name, "epochs": args.epochs, "estimate_s": estimate.estimated_run_seconds,
                     "real_s": round(t.seconds, 1), "error_pct": round(100 * error, 1),
                     "within_20pct": abs(error) <= 0.20,
                     # where the real time went: Lightning's fit, and the epochs inside it (train + validation)
                     "fit_s": run.summary["wall_seconds_this_session"], "epochs_s": run.summary["training_seconds"],
                     "est_epoch_s": estimate.estimated_epoch_seconds, "real_epoch_s": _median_later_epoch(run.path),
                     "est_cache_s": estimate.cache_seconds, "device": "cuda" if torch.cuda.is_available() else "cpu"})
    print_table(rows, list(rows[0]))
    write_results("estimate_check", {"args": vars(args), "rows": rows})


def _median_later_epoch(run_dir: Path) -> float:
    """Median epoch_seconds of epochs 2+ (train + validation), from the run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        seconds = [float(r["epoch_seconds"]) for r in csv.DictReader(fh)][1:] or [0.0]
    return round(statistics.median(seconds), 2)


if __name__ == "__main__":
    main()
