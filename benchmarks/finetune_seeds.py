"""How much does the fine-tuning result on drone_maritime depend on the training seed, and on the backbone's
learning rate? One split (val 0.1, test 0.3, seed 0), several training seeds, efficientnet_lite0 from ImageNet
weights (the recipe of drone_targets.py); test balanced accuracy per seed.

Usage: .venv/bin/python benchmarks/finetune_seeds.py [--seeds 0,1,2] [--scales 0.1,0.3,1.0] [--epochs 15]
(~85 s per run on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lite0_weights, need_drone, print_table, scratch_dir, write_results  # noqa: E402

import classbench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scales", default="0.1,0.3,1.0", help="backbone learning rate / head learning rate")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    work = scratch_dir("ftseeds")
    split = work / "split.csv"
    classbench.split(need_drone(), val=0.1, test=0.3, seed=0, out=split)  # one split; only training varies
    rows = []
    for scale in (float(s) for s in args.scales.split(",")):
        scores = []
        for seed in (int(s) for s in args.seeds.split(",")):
            run = classbench.train(split, model="efficientnet_lite0", out=work / f"{scale}-{seed}", img_size=128,
                                   epochs=args.epochs, augment="aerial", weights=str(lite0_weights()), seed=seed,
                                   backbone_lr_scale=scale, progress=False)
            scores.append(classbench.evaluate(run.path, progress=False).to_dict()["metrics"]["balanced_accuracy"])
        rows.append({"backbone_lr_scale": scale, "balanced_acc_per_seed": [round(s, 3) for s in scores],
                     "mean": round(sum(scores) / len(scores), 3), "min": round(min(scores), 3)})
    print_table(rows, list(rows[0]))
    write_results("finetune_seeds", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
