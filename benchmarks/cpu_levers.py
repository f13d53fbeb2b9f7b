"""Each CPU lever in classbench/speed.py, measured alone: model-only training images/s and page faults per step.

Configurations (each in a fresh interpreter, since the allocator setting is process-wide):
- base: bf16 autocast + channels_last (what `precision auto` gives on a bf16 CPU), glibc's default allocator;
- +malloc: freed memory kept in the heap (speed.tune_allocator);
- +malloc+fp32dw: and strided depthwise convolutions in fp32 (speed.fp32_strided_depthwise);
- +fused: and BatchNorm+ReLU/ReLU6 fused into one C kernel (fused_norm.fuse_norm_act) = classbench.
Activations run out of place in none of them (speed.out_of_place_activations is measured by its own test).

Usage: .venv/bin/python benchmarks/cpu_levers.py [--img-size 128] [--models a,b] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

MODELS = "mobilenetv2,efficientnet_lite0,resnet50,densenet121,inception_v3"
CONFIGS = {"base": ("default", False, False), "+malloc": ("tuned", False, False),
           "+malloc+fp32dw": ("tuned", True, False), "+fused": ("tuned", True, True)}


def measure(model: str, size: int, batch: int, steps: int, fp32dw: bool, fused: bool) -> dict:
    """One configuration in this process: images/s and minor page faults per step after 3 warm-up steps."""
    import resource
    import time

    import torch

    from classbench.benchmark import _step
    from classbench.fused_norm import fuse_norm_act
    from classbench.models import create_model, resolve_name
    from classbench.speed import fp32_strided_depthwise, tune_allocator

    tuned = tune_allocator()
    torch.manual_seed(0)
    net = create_model(resolve_name(model), 5)
    swapped = fp32_strided_depthwise(net) if fp32dw else 0
    fused_norms = fuse_norm_act(net) if fused else 0
    net = net.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (batch,))

    def step() -> None:
        _step(net, optimizer, x, y, "bf16-mixed")  # bench's training step: bf16 autocast, backward, clipping, AdamW

    for _ in range(3):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"img_s": round(batch * steps / seconds, 1), "faults_per_step": faults // steps, "malloc_tuned": tuned,
            "fp32_convs": swapped, "fused_norms": fused_norms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, config = args.one
        print(json.dumps(measure(model, args.img_size, args.batch_size, args.steps, *CONFIGS[config][1:])))
        return
    rows = []
    for model in args.models.split(","):
        row: dict = {"model": model, "img_size": args.img_size}
        for config, (malloc, *_) in CONFIGS.items():
            done = subprocess.run([sys.executable, __file__, "--one", model, config, "--img-size", str(args.img_size),
                                   "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, "CLASSBENCH_MALLOC": malloc})
            result = json.loads(done.stdout.strip().splitlines()[-1])
            row[f"{config} img/s"] = result["img_s"]
            row[f"{config} faults/step"] = result["faults_per_step"]
        row["fused speedup"] = round(row["+fused img/s"] / row["+malloc+fp32dw img/s"], 2)
        row["speedup"] = round(row["+fused img/s"] / row["base img/s"], 2)
        rows.append(row)
        print(row, flush=True)
    print_table(rows, list(rows[0]))
    from classbench.runs import environment_info

    write_results(f"cpu_levers-{args.img_size}px", {"args": vars(args), "rows": rows,
                                                    "environment": environment_info()})


if __name__ == "__main__":
    main()
