"""Does bf16 training (precision auto on this CPU) cost accuracy? Same seed, same split, fp32 vs bf16-mixed.

Both runs evaluate in fp32 (classbench always does). Prints training time, images/s and test metrics.

Usage: .venv/bin/python benchmarks/precision_check.py [--model resnet18] [--img-size 128] [--epochs 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import need_drone, print_table, scratch_dir, write_results  # noqa: E402

import classbench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    data = need_drone()
    work = scratch_dir("prec")
    rows = []
    for precision in ("32", "bf16-mixed"):
        run = classbench.train(data, model=args.model, out=work / precision, epochs=args.epochs, img_size=args.img_size,
                               precision=precision, augment="aerial", val=0.1, test=0.3, progress=False)
        m = classbench.evaluate(run.path, progress=False).to_dict()["metrics"]
        rows.append({"precision": precision, "train_s": run.summary["training_seconds"],
                     "img_s": run.summary["train_images_per_s"], "test_acc": m["accuracy"],
                     "balanced_acc": m["balanced_accuracy"], "macro_f1": m["macro_f1"]})
    print_table(rows, list(rows[0]))
    print(f"speed-up bf16/fp32: {rows[1]['img_s'] / rows[0]['img_s']:.2f}x; "
          f"macro-F1 difference: {rows[1]['macro_f1'] - rows[0]['macro_f1']:+.3f}")
    write_results("precision_check", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
