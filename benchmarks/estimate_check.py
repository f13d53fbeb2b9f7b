"""Does `classbench bench --data D --epochs E` predict the real training time within 20%?

Runs the estimate, then the real training of the same configuration, and compares with the wall
time of `classbench.train` (split, cache fill, epochs, validation, checkpoints included).

Usage: .venv/bin/python benchmarks/estimate_check.py [--models resnet18,mobilenetv2] [--img-size 128] [--epochs 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import need_drone, print_table, scratch_dir, write_results  # noqa: E402

# Each side runs in a fresh interpreter, as a user runs `classbench bench` and later `classbench train`: in
# one process the second would find kernels already loaded and tuned by the first (on the H200 that hid
# 2.7 s of mobilenetv2's first validation from the real run). The training run is timed after the libraries
# are imported (reported as imports_s: starting Python, not training; about 5 s on 2 cores).
BENCH = (
    "import dataclasses, json, sys, classbench\n"
    "a = json.loads(sys.argv[1])\n"
    "row = classbench.bench([a['model']], img_size=a['img_size'], batch_size=a['batch_size'], data=a['data'],"
    " epochs=a['epochs'], val=0.1, test=0.3, onnx=False).rows[0]\n"
    "print('RESULT', json.dumps(dataclasses.asdict(row)))\n"
)
TRAIN = (
    "import importlib, json, pkgutil, sys, time\n"
    "start = time.perf_counter()\n"
    "import classbench\n"
    "for lib in ('torch', 'torchvision', 'timm', 'lightning', 'torchmetrics', 'matplotlib.pyplot', 'safetensors.torch',"
    " 'yaml', 'PIL.Image', 'rich.progress'):\n"
    "    importlib.import_module(lib)\n"
    "for mod in pkgutil.walk_packages(classbench.__path__, 'classbench.'):\n"
    "    importlib.import_module(mod.name)\n"
    "imports = time.perf_counter() - start\n"
    "a = json.loads(sys.argv[1])\n"
    "start = time.perf_counter()\n"
    "run = classbench.train(a['data'], model=a['model'], out=a['out'], epochs=a['epochs'], img_size=a['img_size'],"
    " batch_size=a['batch_size'], val=0.1, test=0.3, progress=False)\n"
    "seconds = time.perf_counter() - start\n"
    "print('RESULT', json.dumps({'seconds': seconds, 'imports': imports, 'path': str(run.path),"
    " 'summary': run.summary}, default=str))\n"
)


def fresh(code: str, args: dict) -> dict:
    """Run ``code`` in a new interpreter; returns the JSON it printed after RESULT."""
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenetv2")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    data = need_drone()
    work = scratch_dir("est")
    rows = []
    for name in args.models.split(","):
        common = {"model": name, "data": str(data), "epochs": args.epochs, "img_size": args.img_size,
                  "batch_size": args.batch_size}
        estimate = fresh(BENCH, common)
        real = fresh(TRAIN, {**common, "out": str(work / name)})
        seconds, epoch_seconds = real["seconds"], _epoch_seconds(Path(real["path"]))
        error = (estimate["estimated_run_seconds"] - seconds) / seconds
        rows.append({"model": name, "epochs": args.epochs, "estimate_s": estimate["estimated_run_seconds"],
                     "real_s": round(seconds, 1), "error_pct": round(100 * error, 1),
                     "within_20pct": abs(error) <= 0.20, "imports_s": round(real["imports"], 1),
                     # where the real time went: Lightning's fit, and the epochs inside it (train + validation)
                     "fit_s": real["summary"]["wall_seconds_this_session"],
                     "epochs_s": real["summary"]["training_seconds"],
                     "est_epoch_s": estimate["estimated_epoch_seconds"],
                     "real_epoch_s": round(statistics.median(epoch_seconds[1:] or [0.0]), 2),  # epochs 2+
                     "est_cache_s": estimate["cache_seconds"], "real_first_epoch_s": epoch_seconds[0],
                     "device": "cuda" if torch.cuda.is_available() else "cpu",
                     "estimate_parts": estimate["estimate_parts"]})
    print_table(rows, [k for k in rows[0] if k != "estimate_parts"])
    for row in rows:
        print(row["model"], "estimate parts (s):", row["estimate_parts"])
    write_results("estimate_check", {"args": vars(args), "rows": rows})


def _epoch_seconds(run_dir: Path) -> list[float]:
    """epoch_seconds (train + validation) of each epoch, from the run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [float(r["epoch_seconds"]) for r in csv.DictReader(fh)]


if __name__ == "__main__":
    main()
