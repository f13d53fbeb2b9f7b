"""Epoch time and peak memory at 1x, 4x and 10x drone_maritime (replicated, re-encoded files).

Each size runs `classbench train` in a fresh process (so peak RSS is its own) with the decoded-image
cache limited to 64 MB of memory: past that it spills to a disk memmap, so memory stays flat while
epoch time grows linearly with the number of images.

Usage: .venv/bin/python benchmarks/scaling.py [--factors 1,4,10] [--img-size 64]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402
from _common import need_drone, print_table, replicate, scratch_dir, write_results  # noqa: E402

# Runs the CLI in-process, then prints the process's own peak RSS in KiB as the last line.
MEASURE = """
import resource, sys
from classbench.cli import app
sys.argv = sys.argv[1:]
try:
    app()
except SystemExit as exit_:
    if exit_.code:
        raise
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factors", default="1,4,10")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data = need_drone()
    work = scratch_dir("scale")
    rows = []
    for factor in (int(f) for f in args.factors.split(",")):
        folder = replicate(data, factor, work / f"data{factor}")
        run = work / f"run{factor}"
        env = {**os.environ, "CLASSBENCH_CACHE_MEMORY_MB": "64", "CLASSBENCH_CACHE": str(work / "cache")}
        argv = ["classbench", "train", str(folder), "--model", "resnet18", "--img-size", str(args.img_size),
                "--epochs", str(args.epochs), "--out", str(run)]
        done = subprocess.run([sys.executable, "-c", MEASURE, *argv], check=True, env=env, capture_output=True,
                              text=True)
        peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024  # this process's own peak RSS (KiB -> MiB)
        with open(run / "metrics.csv", newline="") as fh:
            metrics = list(csv.DictReader(fh))
        summary = json.loads((run / "summary.json").read_text())
        images = sum(summary["class_counts"]["train"].values())
        epoch_s = float(metrics[-1]["epoch_seconds"])
        rows.append({"factor": factor, "train_images": images, "epoch_s": round(epoch_s, 2),
                     "ms_per_image": round(1000 * epoch_s / images, 3),
                     "peak_rss_mb": round(peak_mb, 1),
                     "cache": yaml.safe_load((run / "config.yaml").read_text())["resolved"]["cache"]})
    base = rows[0]
    for row in rows:
        row["rss_vs_1x"] = round(row["peak_rss_mb"] / base["peak_rss_mb"], 3)
        row["time_per_image_vs_1x"] = round(row["ms_per_image"] / base["ms_per_image"], 3)
    print_table(rows, list(rows[0]))
    write_results("scaling", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
