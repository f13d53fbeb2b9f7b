"""The brief's accuracy targets on drone_maritime (stratified 70/30 split, test locked away).

Targets: from scratch, balanced accuracy >= 0.60 within ImageAI's 311 s; fine-tuning real pretrained
weights (ImageNet EfficientNet-Lite0), balanced accuracy >= 0.75; no class ever lost.
Baselines measured here on the same split: ImageAI 3.0.3 MobileNetV2 (10 epochs, 224 px) acc 0.58 /
balanced 0.36 in 311 s; Ultralytics yolov8n-cls (128 px) 0.61 / 0.33 in 52 s.

Usage: .venv/bin/python benchmarks/drone_targets.py [--configs recipe|defaults|all] [--out NAME]
  recipe:   resnet18 from scratch, 40 epochs @128, --augment aerial (~3 min here); efficientnet_lite0
            fine-tuned, 15 epochs @128 (~1.5 min)
  defaults: `classbench train DATA --val 0.1 --test 0.3` as a user types it (resnet18 @224, 20 epochs,
            light augmentation), and the same with `--model efficientnet_lite0 --weights FILE`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, lite0_weights, need_drone, print_table, scratch_dir, write_results  # noqa: E402

import classbench  # noqa: E402

SPLIT = {"val": 0.1, "test": 0.3, "seed": 0}  # 70/30 train(+val)/test, as the baselines


def configs(which: str) -> list[tuple[str, dict]]:
    weights = str(lite0_weights())
    recipe = [
        ("scratch resnet18 @128, 40 ep, aerial", {"model": "resnet18", "img_size": 128, "epochs": 40, "augment": "aerial"}),
        ("finetune efficientnet_lite0 @128, 15 ep, aerial (ImageNet)",
         {"model": "efficientnet_lite0", "img_size": 128, "epochs": 15, "augment": "aerial", "weights": weights}),
    ]
    defaults = [
        ("scratch, defaults (resnet18 @224, 20 ep)", {}),
        ("finetune, defaults (efficientnet_lite0 @224, 20 ep, ImageNet)",
         {"model": "efficientnet_lite0", "weights": weights}),
    ]
    return {"recipe": recipe, "defaults": defaults, "all": recipe + defaults}[which]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", choices=["recipe", "defaults", "all"], default="all")
    parser.add_argument("--out", default="drone_targets", help="results/NAME.json")
    args = parser.parse_args()
    data = need_drone()
    work = scratch_dir("drone")
    rows = []
    for i, (label, options) in enumerate(configs(args.configs)):
        with Timer() as t:
            run = classbench.train(data, out=work / f"run{i}", progress=False, **SPLIT, **options)
        ev = classbench.evaluate(run.path, progress=False).to_dict()
        m = ev["metrics"]
        predicted = [c["class"] for c in ev["per_class"] if c["predicted"] > 0]
        rows.append({"config": label, "train_s": round(run.summary["training_seconds"], 1),
                     "wall_s": round(t.seconds, 1), "img_s": run.summary["train_images_per_s"],
                     "test_acc": m["accuracy"], "balanced_acc": m["balanced_accuracy"], "macro_f1": m["macro_f1"],
                     "worst_recall": m["worst_class_recall"], "classes_predicted": f"{len(predicted)}/{len(ev['classes'])}",
                     "run": str(run.path)})
    print_table(rows, ["config", "train_s", "wall_s", "img_s", "test_acc", "balanced_acc", "macro_f1", "worst_recall",
                       "classes_predicted"])
    print("targets: scratch balanced_acc >= 0.60 within 311 s; fine-tune balanced_acc >= 0.75; every class predicted")
    write_results(args.out, {"split": SPLIT, "rows": rows})


if __name__ == "__main__":
    main()
