"""The report's four architectures on drone_maritime, from scratch, one split/seed/budget: the bake-off.

Prints the verdict (cross-validated, ties called ties), time per run and the selected model's test numbers,
and writes report.html.

Usage: .venv/bin/python benchmarks/compare_four.py [--img-size 64] [--epochs 10] [--out runs/drone-compare]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import need_drone, print_table, write_results  # noqa: E402

import classbench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", default="densenet121,inception_v3,mobilenetv2,resnet50")
    parser.add_argument("--out", default="runs/drone-compare")
    args = parser.parse_args()
    board = classbench.compare(need_drone(), models=args.models.split(","), out=args.out, epochs=args.epochs,
                               img_size=args.img_size, val=0.1, test=0.3, augment="aerial", progress=False,
                               overwrite=True)
    columns = ["model", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "img_size", "params",
               "train_seconds", "infer_ms_batch1", "test_balanced_acc", "test_macro_f1", "worst_class_recall"]
    print_table(board.rows, columns)
    print(f"verdict: {board.sentence}")
    print(f"report: {board.report}")
    write_results("compare_four", {"args": vars(args), "rows": board.rows})


if __name__ == "__main__":
    main()
