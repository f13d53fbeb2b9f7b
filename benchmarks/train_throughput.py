"""Training throughput on drone_maritime: classbench vs the model-only limit vs a plain PyTorch+timm loop.

For each report architecture at one resolution and batch size:
- classbench: training images/s of epochs 2+ (decoded-image cache, bf16 where native, channels_last),
  read from the run's metrics.csv;
- model-only limit: the same training step on synthetic tensors at the same precision (classbench bench);
- plain loop: what most users write: torchvision ImageFolder + transforms, DataLoader, fp32, AdamW;
- peers (ImageAI 3.0.3, Ultralytics): run by --peer-python (default .peers/bin/python, a separate venv:
  `python3 -m venv .peers && .peers/bin/pip install imageai==3.0.3 tqdm torch==2.14.1 torchvision==0.29.1
  ultralytics`) on the same split materialised as train/val/test folders; a missing peer is skipped and
  the reason printed. Peer images/s = train images x epochs / wall seconds (their per-epoch evaluation
  included), the way the brief measured ImageAI (459 x 10 / 311 s = ~15 img/s).

Usage: .venv/bin/python benchmarks/train_throughput.py [--img-size 128] [--models a,b] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import need_drone, print_table, write_results  # noqa: E402

import classbench  # noqa: E402

MODELS = "densenet121,inception_v3,mobilenetv2,resnet50"
IMAGEAI_TYPES = {"mobilenetv2": "MobileNetV2", "resnet50": "ResNet50", "densenet121": "DenseNet121",
                 "inception_v3": "InceptionV3"}
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


def run_peer(python: Path, peer: str, folder: Path, epochs: int, model: str, size: int, n_train: int,
             work: Path) -> dict:
    """Time one peer in its own interpreter; returns a row, or a row that says why it was skipped."""
    import subprocess

    row = {"model": f"{peer}:{model}", "img_size": 224 if peer == "imageai" else size}
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
                              capture_output=True, text=True, timeout=1800, env={**os.environ, "YOLO_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {**row, "note": "failed: no result within 30 min"}
    seconds = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("SECONDS")]
    if done.returncode != 0 or not seconds:
        return {**row, "note": f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}"}
    return {**row, "peer_img_s": round(n_train * epochs / seconds[0], 1), "peer_seconds": round(seconds[0], 1)}


def plain_loop_rate(data: Path, model_name: str, size: int, batch: int, steps: int = 8) -> float:
    """fp32, ImageFolder, ToTensor/Normalize per image, no cache: the hand-written timm script."""
    import timm
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ds = datasets.ImageFolder(str(data), transform=tf)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
    model = timm.create_model(classbench.models.resolve_name(model_name), num_classes=len(ds.classes))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--peer-python", type=Path, default=Path(__file__).resolve().parents[1] / ".peers/bin/python")
    parser.add_argument("--peer-epochs", type=int, default=2, help="0 skips the peers")
    args = parser.parse_args()
    data = need_drone()
    work = Path(tempfile.mkdtemp(prefix="classbench-tp-"))
    rows = []
    for name in args.models.split(","):
        run = classbench.train(data, model=name, out=work / name, epochs=args.epochs, img_size=args.img_size,
                               batch_size=args.batch_size, progress=False, val=0.1, test=0.3)
        with open(run.path / "metrics.csv", newline="") as fh:
            rates = [float(r["train_images_per_s"]) for r in csv.DictReader(fh)][1:]  # epochs 2+
        ours = sum(rates) / len(rates)
        limit = classbench.bench([name], img_size=args.img_size, batch_size=args.batch_size).rows[0]
        plain = plain_loop_rate(data, name, args.img_size, args.batch_size)
        rows.append({"model": name, "img_size": args.img_size, "precision": limit.precision,
                     "classbench_img_s": round(ours, 1), "model_only_img_s": limit.train_images_per_s,
                     "pct_of_limit": round(100 * ours / limit.train_images_per_s, 1),
                     "plain_fp32_img_s": round(plain, 1), "speedup_vs_plain": round(ours / plain, 2)})
    print_table(rows, list(rows[0]))
    name = f"train_throughput-{args.img_size}px"
    if args.peer_epochs <= 0:
        write_results(name, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "peers": []})
        return
    peers = []
    folder = work / "materialized"
    manifest = classbench.split(data, val=0.1, test=0.3, seed=0, materialize=folder).manifest
    n_train = len(manifest.subset("train"))
    for name in args.models.split(","):
        peers.append(run_peer(args.peer_python, "imageai", folder, args.peer_epochs, name, args.img_size, n_train,
                              work))
    peers.append(run_peer(args.peer_python, "ultralytics", folder, args.peer_epochs, "yolov8n-cls", args.img_size,
                          n_train, work))
    for peer in peers:
        ours = next((r for r in rows if r["model"] == peer["model"].split(":")[1]), None)
        if ours and peer.get("peer_img_s") and ours["img_size"] == peer["img_size"]:
            peer["classbench_speedup"] = round(ours["classbench_img_s"] / peer["peer_img_s"], 2)
    print_table(peers, ["model", "img_size", "peer_img_s", "peer_seconds", "classbench_speedup", "note"])
    write_results(name, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "peers": peers})


if __name__ == "__main__":
    main()
