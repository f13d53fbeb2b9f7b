"""Smoke test of an installed classbench (run by ``make test-floor`` in the venv of the dependency floors).

The whole user path through the installed ``classbench`` command, on the built-in demo data (24 images per class), in a few minutes
on 2 cores: demo-data -> check -> train 1 epoch -> resume (the finished run is extended to 2 epochs, so the
resume really loads ``last.ckpt``: weights, optimiser, schedule, recorder) -> evaluate -> predict -> export
(ONNX, parity checked) -> predict through ONNX Runtime. Exits non-zero at the first step that fails.

Usage: ``python .ci/floor_smoke.py WORK_DIR`` (the interpreter of the venv under test; its ``bin/classbench``
is the command that runs).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
MODEL = ["--model", "resnet18", "--img-size", "32", "--batch-size", "16"]
PER_CLASS = 24


def step(name: str, *args: str) -> str:
    """Run ``classbench ARGS`` from the venv under test; print its wall time; stop the smoke test on failure."""
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "classbench"), *args], capture_output=True, text=True,
                          env={"COLUMNS": "120", "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())})
    print(f"  {name:<10} {time.perf_counter() - start:6.1f} s  classbench {' '.join(args)}", flush=True)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"floor smoke test: `classbench {' '.join(args)}` exited {done.returncode}")
    return done.stdout


def extend(run: Path, epochs: int) -> None:
    """Turn a finished run into an interrupted one that planned ``epochs``: what ``--resume`` continues."""
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    config["args"]["epochs"] = epochs
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (run / "summary.json").unlink()


def main(work: Path) -> None:
    start = time.perf_counter()
    data, run = work / "digits", work / "run"
    print(f"classbench {step('version', '--version').split()[-1]} from {BIN.parent}")
    step("demo-data", "demo-data", str(data))
    for folder in filter(Path.is_dir, data.iterdir()):  # 24 images per digit: every step runs, none waits on a full epoch
        for extra in sorted(folder.iterdir())[PER_CLASS:]:
            extra.unlink()
    step("check", "check", str(data))
    step("train", "train", str(data), *MODEL, "--epochs", "1", "--checkpoint-every", "0", "--out", str(run),
         "--overwrite")
    extend(run, 2)
    step("resume", "train", "--resume", str(run))
    with open(run / "metrics.csv", encoding="utf-8") as fh:
        epochs = [int(row["epoch"]) for row in csv.DictReader(fh)]
    if epochs != [1, 2]:
        raise SystemExit(f"floor smoke test: metrics.csv epochs after resume are {epochs}, expected [1, 2]")
    step("evaluate", "evaluate", str(run))
    metrics = json.loads((run / "eval.json").read_text(encoding="utf-8"))["metrics"]
    images = sorted((data / "digit_0").iterdir())[:4]
    step("predict", "predict", str(run), *map(str, images), "--backend", "torch", "--format", "json")
    step("export", "export", str(run))
    step("predict", "predict", str(run), *map(str, images), "--backend", "onnx", "--format", "json")
    print(f"floor smoke test passed in {time.perf_counter() - start:.0f} s "
          f"(test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
