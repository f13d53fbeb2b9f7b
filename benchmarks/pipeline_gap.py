"""Where does training lose against the model-only limit? One process, the same data, repeated:

- limit: `bench`'s training step on synthetic tensors (one epoch's worth of steps);
- manual pipeline: the same step fed by the real loader (cache, augmentation, workers, pinned memory),
  sustained over one epoch's worth of steps;
- lightning: `classbench.train`'s epochs (train_images_per_s from metrics.csv).

Repeating the three shows how far the machine itself drifts (on a lent H100 every rate rose ~30% during
the first minute). Usage (GPU: `--copies 8` makes an epoch 96 steps, long enough to time):
    .venv/bin/python benchmarks/pipeline_gap.py --model resnet50 --img-size 224 --copies 8
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import need_drone, print_table, replicate, scratch_dir, write_results  # noqa: E402

import classbench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--copies", type=int, default=1, help="distinct copies of every image")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = scratch_dir("gap")
    data = replicate(need_drone(), args.copies, work / "data") if args.copies > 1 else need_drone()
    rows = []
    for rep in range(args.repeats):
        row = classbench.bench([args.model], img_size=args.img_size, batch_size=32, data=data, epochs=args.epochs,
                               steps=12 * args.copies, warmup=3, val=0.1, test=0.3, onnx=False).rows[0]
        run = classbench.train(data, model=args.model, out=work / f"run{rep}", epochs=args.epochs,
                               img_size=args.img_size, batch_size=32, val=0.1, test=0.3, progress=False)
        with open(run.path / "metrics.csv", newline="") as fh:
            epochs = [float(r["train_images_per_s"]) for r in csv.DictReader(fh)]
        steady = sum(epochs[1:]) / max(len(epochs) - 1, 1)
        rows.append({"repeat": rep, "limit_img_s": row.train_images_per_s,
                     "manual_pipeline_img_s": row.pipeline_images_per_s, "lightning_epochs_img_s": epochs,
                     "lightning_pct_of_limit": round(100 * steady / row.train_images_per_s, 1)})
    print_table(rows, list(rows[0]))
    write_results(f"pipeline_gap-{args.model}-{args.img_size}px-x{args.copies}", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
