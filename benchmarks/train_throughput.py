"""Training throughput on drone_maritime: classbench vs the model-only limit vs a plain loop vs the peers.

For each report architecture, same data, model, resolution and batch size (32):
- classbench: steady-state training images/s (epochs 2+, training phase, from metrics.csv) and whole-run
  images/s (train images x epochs / wall seconds of ``classbench.train``: split, cache fill, validation and
  checkpoints included);
- model-only limit: the same training step on synthetic tensors at the same precision (``classbench bench``,
  one epoch's worth of steps), measured just before and just after the run and averaged;
- plain loop: what most users write (torchvision ImageFolder + transforms, DataLoader, fp32, AdamW), run in a
  fresh interpreter so that it gets none of classbench's process settings;
- peers (ImageAI 3.0.3, Ultralytics): run by --peer-python (default .peers/bin/python, a separate venv:
  `python3 -m venv .peers && .peers/bin/pip install imageai==3.0.3 tqdm torch==2.14.1 torchvision==0.29.1
  ultralytics`) on the same split materialised as train/val/test folders; a missing peer is skipped and
  the reason printed; each model's ImageAI run follows classbench's run of that model (the VM's speed drifts
  over tens of minutes, so a pair run back to back compares like with like). Whole-run images/s = train
  images x epochs / wall seconds (the way the brief measured ImageAI: 459 x 10 / 311 s = ~15 img/s); for
  ImageAI also the steady-state training phase of epochs 2+ (read from its progress bars), the like-for-like
  partner of classbench's steady-state rate.
  ImageAI always trains at 224 px (InceptionV3 at 299): `--imageai-sizes` trains classbench at those sizes.
``--replicate N`` trains on N distinct copies of every image: on a GPU an epoch of drone_maritime is 12
steps in about 0.3 s, too short to time (the GPU is still raising its clocks); 8 copies make it ~100 steps.

Usage: .venv/bin/python benchmarks/train_throughput.py [--img-size 128] [--models a,b] [--epochs 3] [--replicate 1]
       .venv/bin/python benchmarks/train_throughput.py --imageai-sizes --epochs 3 --peer-epochs 3
       .venv/bin/python benchmarks/train_throughput.py --imageai-sizes --models densenet121 --epochs 3 \
           --peer-epochs 3 --repeats 4   # ABBA pairs, pooled: a drift linear in time cancels (~32 min)
       .venv/bin/python benchmarks/train_throughput.py --img-size 128 --epochs 4 --peer-epochs 0 --repeats 3
           # the percent-of-limit target, pooled over 3 runs per model (~40 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import need_drone, print_table, replicate, scratch_dir, write_results  # noqa: E402

import classbench  # noqa: E402
from classbench.benchmark import BenchRow  # noqa: E402
from classbench.models import resolve_name  # noqa: E402
from classbench.runs import environment_info  # noqa: E402

MODELS = "densenet121,inception_v3,mobilenetv2,resnet50"
IMAGEAI_TYPES = {"mobilenetv2": "MobileNetV2", "resnet50": "ResNet50", "densenet121": "DenseNet121",
                 "inception_v3": "InceptionV3"}


def imageai_size(model: str) -> int:
    """ImageAI's fixed training size: 224 px, InceptionV3 299."""
    return 299 if model == "inception_v3" else 224

PEER_CODE = {
    # ImageAI always trains at 224 px (InceptionV3 299) and reads DATA/train + DATA/test.
    "imageai": (
        "import sys, time\n"
        "from imageai.Classification.Custom import ClassificationModelTrainer\n"
        "data, epochs, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
        "t = ClassificationModelTrainer(); getattr(t, 'setModelTypeAs' + kind)(); t.setDataDirectory(data)\n"
        "start = time.perf_counter(); t.trainModel(num_experiments=epochs, batch_size=32)\n"
        "print('SECONDS', time.perf_counter() - start)\n"
    ),
    "ultralytics": (
        "import sys, time\n"
        "from ultralytics import YOLO\n"
        "data, epochs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
        "start = time.perf_counter()\n"
        "YOLO('yolov8n-cls.yaml').train(data=data, epochs=epochs, imgsz=size, pretrained=False, batch=32,"
        " workers=0, device='cpu', plots=False, project=sys.argv[4])\n"
        "print('SECONDS', time.perf_counter() - start)\n"
    ),
}
BAR = re.compile(r"(\d+)/(\d+) \[(\d+):(\d+)<")


def imageai_train_phases(stderr: str, train_batches: int) -> list[float]:
    """Seconds of each finished training-phase progress bar (tqdm, 1 s resolution), in epoch order."""
    finished, last = [], None
    for segment in re.split(r"[\r\n]", stderr):
        m = BAR.search(segment)
        if not m or m.group(1) != m.group(2) or int(m.group(2)) != train_batches:
            last = None if m else last
            continue
        if segment != last:
            finished.append(int(m.group(3)) * 60 + int(m.group(4)))
        last = segment
    return finished


def run_peer(python: Path, peer: str, folder: Path, epochs: int, model: str, size: int, n_train: int,
             work: Path) -> dict:
    """Time one peer in its own interpreter; returns a row, or a row that says why it was skipped."""
    row = {"model": f"{peer}:{model}", "img_size": imageai_size(model) if peer == "imageai" else size,
           "epochs": epochs}
    if not python.is_file():
        return {**row, "note": f"skipped: no peer interpreter at {python}"}
    probe = subprocess.run([str(python), "-c", f"import {peer}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {**row, "note": f"skipped: {peer} is not installed in {python}"}
    if peer == "imageai" and model not in IMAGEAI_TYPES:
        return {**row, "note": f"skipped: ImageAI has no {model}"}
    extra = [IMAGEAI_TYPES[model]] if peer == "imageai" else [str(size), str(work / "ultralytics")]
    try:
        done = subprocess.run([str(python), "-c", PEER_CODE[peer], str(folder), str(epochs), *extra],
                              capture_output=True, text=True, timeout=3600, env={**os.environ, "YOLO_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {**row, "note": "failed: no result within 60 min"}
    seconds = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("SECONDS")]
    if done.returncode != 0 or not seconds:
        return {**row, "note": f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}"}
    row.update(peer_run_img_s=round(n_train * epochs / seconds[0], 1), peer_seconds=round(seconds[0], 1))
    if peer == "imageai":
        phases = imageai_train_phases(done.stderr, math.ceil(n_train / 32))[1:]  # epochs 2+
        if phases:
            row["peer_steady_img_s"] = round(n_train * len(phases) / sum(phases), 1)
    return row


def plain_loop_rate(model_name: str, size: int, batch: int) -> float:
    """The hand-written fp32 timm loop, in a fresh interpreter (none of classbench's process settings)."""
    done = subprocess.run([sys.executable, __file__, "--plain-only", model_name, "--img-size", str(size),
                           "--batch-size", str(batch)], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _plain_loop(data: Path, model_name: str, size: int, batch: int, steps: int = 8) -> float:
    """fp32, ImageFolder, ToTensor/Normalize per image, no cache: the hand-written timm script."""
    import timm
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ds = datasets.ImageFolder(str(data), transform=tf)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
    model = timm.create_model(resolve_name(model_name), num_classes=len(ds.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 2:
            start, seen = time.perf_counter(), 0
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        seen += len(y)
        if i >= steps + 2:
            break
    return seen / (time.perf_counter() - start)


def model_only_limit(name: str, size: int, batch: int, copies: int) -> BenchRow:
    """The same training step on synthetic tensors, one epoch's worth of steps (12 x 32 of 393 images per copy)."""
    return classbench.bench([name], img_size=size, batch_size=batch, steps=12 * copies, warmup=3, exports=()).rows[0]


def classbench_row(data: Path, work: Path, name: str, size: int, batch: int, epochs: int, copies: int) -> dict:
    before = model_only_limit(name, size, batch, copies)  # measured on both sides of the run: this VM drifts by +-5%
    start = time.perf_counter()
    run = classbench.train(data, model=name, out=work / name, epochs=epochs, img_size=size, batch_size=batch,
                           progress=False, val=0.1, test=0.3)
    wall = time.perf_counter() - start
    ours = run.summary["train_images_per_s"]  # mean of epochs 2+, from metrics.csv
    n_train = sum(run.summary["class_counts"]["train"].values())
    after = model_only_limit(name, size, batch, copies)
    limit = (before.train_images_per_s + after.train_images_per_s) / 2
    plain = plain_loop_rate(name, size, batch)
    return {"model": name, "img_size": size, "precision": after.precision, "classbench_img_s": round(ours, 1),
            "model_only_img_s": round(limit, 1),
            "limit_before_after": [before.train_images_per_s, after.train_images_per_s],
            "pct_of_limit": round(100 * ours / limit, 1),
            "whole_run_img_s": round(n_train * epochs / wall, 1), "plain_fp32_img_s": round(plain, 1),
            "speedup_vs_plain": round(ours / plain, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--imageai-sizes", action="store_true", help="train each model at ImageAI's size (224/299)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--replicate", type=int, default=1, help="train on N distinct copies of every image")
    parser.add_argument("--peer-python", type=Path, default=Path(__file__).resolve().parents[1] / ".peers/bin/python")
    parser.add_argument("--peer-epochs", type=int, default=2, help="0 skips the peers")
    parser.add_argument("--repeats", type=int, default=1, help="N classbench/ImageAI pairs per model, order alternating")
    parser.add_argument("--plain-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = need_drone()
    if args.plain_only:
        print(_plain_loop(data, args.plain_only, args.img_size, args.batch_size))
        return
    work = scratch_dir("tp")
    if args.replicate > 1:
        data = replicate(data, args.replicate, work / f"data-x{args.replicate}")
    models = args.models.split(",")
    sizes = {m: imageai_size(m) if args.imageai_sizes else args.img_size for m in models}
    with_peers = args.peer_epochs > 0
    peer_folder, peer_n_train = _materialize(data, work) if with_peers else (None, 0)
    rows, peers, pooled = [], [], []
    for m in models:  # each model's ImageAI run right next to ours: the VM's speed drifts over tens of minutes
        for r in range(args.repeats):  # ours, peer; then peer, ours (ABBA: a steady drift cancels in the pair sums)
            for side in (("ours", "peer") if r % 2 == 0 else ("peer", "ours")):
                if side == "ours":
                    row = classbench_row(data, work / f"r{r}", m, sizes[m], args.batch_size, args.epochs, args.replicate)
                    rows.append({**row, "repeat": r})
                elif with_peers:
                    row = run_peer(args.peer_python, "imageai", peer_folder, args.peer_epochs, m, args.img_size,
                                   peer_n_train, work)
                    peers.append({**row, "repeat": r})
    print_table(rows, list(rows[0]))
    limits = pooled_limits(rows)
    print_table(limits, list(limits[0]))
    if with_peers:
        peers.append(run_peer(args.peer_python, "ultralytics", peer_folder, args.peer_epochs, "yolov8n-cls",
                              args.img_size, peer_n_train, work))
        pooled = _speedups(rows, peers)
    name = "train_throughput-imageai-sizes" if args.imageai_sizes else f"train_throughput-{args.img_size}px"
    name += f"-x{args.replicate}" if args.replicate > 1 else ""
    name += f"-{args.models.replace(',', '-')}-r{args.repeats}" if args.repeats > 1 else ""
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "pooled_limit": limits,
               "peers": peers, "pooled": pooled,
               "environment": environment_info()}
    write_results(name, payload)


def pooled_limits(rows: list[dict]) -> list[dict]:
    """Per model over its repeats: classbench's summed rate over the summed model-only limit (the figure the >= 95%
    target is read from: one run's percentage moves by about +-10% with the VM), the median and the range."""
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        own = [r for r in rows if r["model"] == model]
        pcts = [r["pct_of_limit"] for r in own]
        summary.append({"model": model, "runs": len(own),
                        "pooled_pct_of_limit": round(100 * sum(r["classbench_img_s"] for r in own)
                                                     / sum(r["model_only_img_s"] for r in own), 1),
                        "median_pct": statistics.median(pcts), "min_pct": min(pcts), "max_pct": max(pcts)})
    return summary


def _materialize(data: Path, work: Path) -> tuple[Path, int]:
    """The same split as train/val/test folders (what the peers read); returns the folder and its train size."""
    folder = work / "materialized"
    manifest = classbench.split(data, val=0.1, test=0.3, seed=0, materialize=folder).manifest
    return folder, len(manifest.subset("train"))


def _speedups(rows: list[dict], peers: list[dict]) -> list[dict]:
    """Each peer row gets the ratio to classbench's run of the same model and repeat; returns per-model summaries."""
    for peer in peers:
        ours = next((r for r in rows if r["model"] == peer["model"].split(":")[1]
                     and r["repeat"] == peer.get("repeat", 0)), None)
        if not ours or ours["img_size"] != peer["img_size"]:
            continue
        if peer.get("peer_steady_img_s"):
            peer["steady_speedup"] = round(ours["classbench_img_s"] / peer["peer_steady_img_s"], 2)
        if peer.get("peer_run_img_s"):
            peer["whole_run_speedup"] = round(ours["whole_run_img_s"] / peer["peer_run_img_s"], 2)
    print_table(peers, ["model", "repeat", "img_size", "epochs", "peer_steady_img_s", "steady_speedup",
                        "peer_run_img_s", "whole_run_speedup", "peer_seconds", "note"])
    return _pooled(rows, peers)


def _pooled(rows: list[dict], peers: list[dict]) -> list[dict]:
    """Over repeats: the ratio of summed rates (drift that is linear in time cancels over ABBA) and the median."""
    summary = []
    for model in dict.fromkeys(p["model"] for p in peers if p.get("steady_speedup")):
        paired = [p for p in peers if p["model"] == model and p.get("steady_speedup")]
        if len(paired) < 2:
            continue
        ours = [r for r in rows if r["model"] == model.split(":")[1] and r["repeat"] in {p["repeat"] for p in paired}]
        summary.append({"model": model, "repeats": len(paired),
                        "pooled_steady_speedup": round(sum(r["classbench_img_s"] for r in ours)
                                                       / sum(p["peer_steady_img_s"] for p in paired), 2),
                        "median_steady_speedup": statistics.median(p["steady_speedup"] for p in paired),
                        "min_steady_speedup": min(p["steady_speedup"] for p in paired),
                        "pooled_whole_run_speedup": round(sum(r["whole_run_img_s"] for r in ours)
                                                          / sum(p["peer_run_img_s"] for p in paired), 2)})
    if summary:
        print_table(summary, list(summary[0]))
    return summary


if __name__ == "__main__":
    main()
