"""Exported runtimes on this CPU for trained runs: fp32 ONNX Runtime vs INT8 ONNX Runtime vs OpenVINO (the CPU
plugin's precision, bf16 where the CPU has it) vs OpenVINO INT8 (NNCF): img/s at batch 32, ms at batch 1, top-1
agreement with PyTorch on the val split (overall and worst class) and file size.

Each run folder is copied to a scratch folder first (split.csv rewritten with absolute paths), so the runs given are
never written to. Every variant is exported with ``min_agreement=0`` (written whatever its agreement, to be
measured); ``classbench export`` itself refuses INT8 under 99%.

Usage: .venv/bin/python benchmarks/export_speed.py [RUN ...] [--repeats 5] [--out export_speed]
       (default runs: runs/bakeoff-stability/seed-0/cv/{mobilenetv2,resnet50,densenet121}/fold-1)
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, print_table, scratch_dir, write_results  # noqa: E402

from classbench.benchmark.rates import time_runner  # noqa: E402
from classbench.exporting import export  # noqa: E402
from classbench.exporting.parity import worst_classes  # noqa: E402
from classbench.inference import EXPORTS, open_export  # noqa: E402

DEFAULT_RUNS = [ROOT / f"runs/bakeoff-stability/seed-0/cv/{a}/fold-1" for a in ("mobilenetv2", "resnet50", "densenet121")]
VARIANTS = {"onnx": {}, "onnx-int8": {"int8": True}, "openvino": {"format": "openvino"},
            "openvino-int8": {"format": "openvino", "int8": True}}


def scratch_copy(run: Path, work: Path) -> Path:
    """model.json + model.safetensors + split.csv (absolute paths) of ``run`` in a new folder under ``work``."""
    target = work / f"{run.parent.name}-{run.name}"
    target.mkdir(parents=True)
    for name in ("model.json", "model.safetensors", "split.classes.json"):
        shutil.copy2(run / name, target / name)
    with open(run / "split.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["path"] = str((run / row["path"]).resolve())
    with open(target / "split.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def _precision(result) -> str:
    """``float32`` / ``int8`` for ONNX Runtime; OpenVINO's inference precision (``bf16``, ``int8+bf16``)."""
    if not result.runtime_precision:
        return result.precision
    return f"int8+{result.runtime_precision}" if result.precision == "int8" else result.runtime_precision


def measure(run: Path, repeats: int) -> list[dict]:
    """Export every variant of one run and time it; one row per variant."""
    rows = []
    for variant, options in VARIANTS.items():
        result = export(run, min_agreement=0.0, **options)
        runner = open_export(variant, run / EXPORTS[variant].file)
        ips, ms = time_runner(runner.run, 32, int(runner.metadata["img_size"]), repeats)
        worst = worst_classes(result.parity, 1)
        rows.append({"model": runner.metadata["architecture"], "variant": variant,
                     "precision": _precision(result), "img_s_b32": ips, "ms_b1": ms,
                     "agreement": result.parity["top1_agreement"], "worst_class": f"{worst[0][0]} {worst[0][1]:.3f}",
                     "val_images": result.parity["samples"], "macro_f1_torch": result.parity.get("macro_f1_torch"),
                     "macro_f1_export": result.parity.get("macro_f1_export"), "size_mb": result.size_bytes / 1e6,
                     "export_seconds": result.seconds})
    base = rows[0]["img_s_b32"]
    for row in rows:
        row["x_onnx_fp32"] = row["img_s_b32"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="export_speed")
    args = parser.parse_args()
    work = scratch_dir("export")
    rows = [row for run in args.runs for row in measure(scratch_copy(run, work), args.repeats)]
    print_table(rows, ["model", "variant", "precision", "img_s_b32", "ms_b1", "x_onnx_fp32", "agreement", "worst_class",
                       "macro_f1_torch", "macro_f1_export", "size_mb"])
    from classbench.runs import environment_info

    write_results(args.out, {"rows": rows, "runs": [str(r) for r in args.runs], "environment": environment_info()})


if __name__ == "__main__":
    main()
