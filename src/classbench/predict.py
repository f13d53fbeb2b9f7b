"""Load a trained model and classify image files (PyTorch or ONNX Runtime backend).

Preprocessing is the training contract: ``load_image`` -> ``to_uint8_tensor(img, img_size)`` ->
``normalize(batch, mean, std)``; probabilities are ``softmax(logits / temperature)``. Loading reads
only safetensors, JSON and ONNX files; nothing is unpickled.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.errors import ClassbenchError, ModelError

UNKNOWN = "unknown"
_GLOB_CHARS = set("*?[")


@dataclass
class Prediction:
    """One file's result: ``top`` is ``[(class, probability), ...]`` best first; ``label`` is the
    decision (``"unknown"`` when rejected); ``error`` is set (and ``top`` empty) for unreadable files."""

    path: str
    top: list[tuple[str, float]]
    error: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.label is None and self.top:
            self.label = self.top[0][0]


class Classifier:
    """A loaded model: ``predict``, ``predict_batch``, ``predict_proba`` and ``logits``."""

    def __init__(self, meta: dict[str, Any], backend: str, runner: Any, path: Path, note: str | None = None) -> None:
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.img_size = int(meta["img_size"])
        self.temperature = float(meta.get("temperature", 1.0) or 1.0)
        self.backend = backend
        self.path = path
        self.note = note
        self._runner = runner

    def __repr__(self) -> str:
        return f"Classifier({self.meta.get('architecture')}, {len(self.classes)} classes, backend={self.backend})"

    def logits(self, batch: Any) -> np.ndarray:
        """Raw logits ``[N, C]`` for an already-normalised NCHW float batch (tensor or array)."""
        return self._runner(batch)

    def predict_proba(self, batch: Any) -> np.ndarray:
        """Calibrated probabilities ``softmax(logits / temperature)`` for a normalised batch."""
        from classbench.exporting import softmax

        return softmax(self.logits(batch), self.temperature)

    def preprocess(self, image: Any) -> Any:
        """A path or PIL image -> uint8 tensor ``[3, S, S]`` (raises ``ImageLoadError`` for bad files)."""
        from classbench.data.imageio import load_image
        from classbench.data.transforms import to_uint8_tensor

        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        elif getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        return to_uint8_tensor(image, self.img_size)

    def _normalise(self, uint8_batch: Any) -> Any:
        from classbench.data.transforms import normalize

        return normalize(uint8_batch, self.meta["mean"], self.meta["std"])

    def predict(self, image: Any) -> list[tuple[str, float]]:
        """All classes with their probabilities, most likely first, for one image path or PIL image."""
        probs = self.predict_proba(self._normalise(self.preprocess(image).unsqueeze(0)))[0]
        return self._ranked(probs)

    def _ranked(self, probs: np.ndarray, top_k: int | None = None) -> list[tuple[str, float]]:
        order = np.argsort(-probs, kind="stable")[: top_k or len(self.classes)]
        return [(self.classes[i], float(probs[i])) for i in order]

    def predict_batch(self, paths: Sequence[str | os.PathLike], batch_size: int = 32, top_k: int | None = None,
                      reject_below: float | None = None, workers: int | None = None,
                      progress: Callable[[int], None] | None = None) -> list[Prediction]:
        """Predict many files; unreadable ones give a ``Prediction`` with ``error`` set instead of stopping.

        Images are decoded by a small thread pool one batch ahead of inference. With ``reject_below``,
        ``label`` becomes ``"unknown"`` when the top probability is under it (``top`` keeps the real values).
        ``progress(n)`` is called after each batch with the number of files it held.
        """
        import torch

        from classbench.errors import ImageLoadError

        def load(path: str) -> Any:
            try:
                return self.preprocess(path)
            except ImageLoadError as err:
                return err.reason
            except ClassbenchError as err:
                return str(err)
            except Exception as err:  # noqa: BLE001 - one odd file must not stop a batch of thousands
                return f"cannot be processed ({type(err).__name__}: {err})"

        names = [os.fspath(p) for p in paths]
        results: list[Prediction] = []
        workers = workers or min(4, (os.cpu_count() or 2))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classbench-decode") as pool:
            for chunk, futures in _prefetch(names, max(1, batch_size), pool, load):
                decoded = [f.result() for f in futures]
                good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
                probs = self.predict_proba(self._normalise(torch.stack([decoded[i] for i in good]))) if good else []
                row = dict(zip(good, probs))
                for i, path in enumerate(chunk):
                    if i not in row:
                        results.append(Prediction(path, [], error=decoded[i]))
                        continue
                    top = self._ranked(row[i], top_k)
                    label = UNKNOWN if reject_below is not None and top[0][1] < reject_below else top[0][0]
                    results.append(Prediction(path, top, label=label))
                if progress is not None:
                    progress(len(chunk))
        return results


def _prefetch(names: list[str], batch_size: int, pool: ThreadPoolExecutor, load: Any,
              depth: int = 2) -> Iterator[tuple[list[str], list[Future[Any]]]]:
    """Yield ``(chunk, futures)`` while the next ``depth - 1`` chunks are already decoding."""
    pending: deque[tuple[list[str], list[Future[Any]]]] = deque()
    for start in range(0, len(names), batch_size):
        chunk = names[start:start + batch_size]
        pending.append((chunk, [pool.submit(load, p) for p in chunk]))
        if len(pending) >= depth:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


class _TorchRunner:
    """fp32 eval-mode PyTorch forward under ``torch.inference_mode``."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model.float().eval().to(device)
        self.device = device

    def __call__(self, batch: Any) -> np.ndarray:
        import torch

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        with torch.inference_mode():
            return self.model(x).float().cpu().numpy()


def load(path: str | os.PathLike, backend: str = "auto", device: str = "cpu", threads: int | None = None) -> Classifier:
    """Load a run folder, ``model.safetensors``, ``model.json`` (or a classbench ``.onnx`` file).

    ``backend="auto"`` uses ``model.onnx`` beside the weights when its recorded weights hash, classes
    and size match ``model.json`` (a stale export is never used), else PyTorch.
    """
    if backend not in {"auto", "torch", "onnx"}:
        raise ClassbenchError(f"backend {backend!r}: choose auto, torch or onnx")
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: not found; pass a run folder, its model.safetensors or a model.onnx")
    if path.suffix == ".onnx":
        return _load_onnx_file(path, device, threads)
    from classbench.models import read_meta

    meta, weights = read_meta(path)
    onnx_path = weights.parent / "model.onnx"
    note = None
    if backend == "onnx" or (backend == "auto" and onnx_path.is_file() and _onnx_usable(device)):
        try:
            return _load_onnx_beside(meta, weights, onnx_path, device, threads)
        except ClassbenchError as err:
            if backend == "onnx":
                raise
            note = f"using PyTorch: {err}"
    if threads:
        import torch

        torch.set_num_threads(threads)
    from classbench.models import load_model

    model, meta = load_model(weights)
    return Classifier(meta, "torch", _TorchRunner(model, _torch_device(device)), weights.parent, note)


def _torch_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _onnx_usable(device: str) -> bool:
    """ORT beats PyTorch on CPU; on a GPU only when ORT has the CUDA provider."""
    if device == "cpu":
        return True
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _load_onnx_beside(meta: dict[str, Any], weights: Path, onnx_path: Path, device: str,
                      threads: int | None) -> Classifier:
    from classbench.exporting import OnnxSession
    from classbench.runs import file_sha256

    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: not found; create it with `classbench export {weights.parent}`")
    session = OnnxSession(onnx_path, threads=threads, device=device)
    recorded = session.metadata
    stale = (recorded.get("weights_sha256") != file_sha256(weights)
             or recorded.get("classes") != list(meta["classes"])
             or str(recorded.get("img_size")) != str(meta["img_size"])
             or recorded.get("precision", "float32") != "float32")
    if stale:
        raise ModelError(f"{onnx_path}: exported from other weights or settings than model.json (stale); "
                         f"re-run `classbench export {weights.parent}`")
    return Classifier(meta, "onnx", session.run, weights.parent)


def _load_onnx_file(path: Path, device: str, threads: int | None) -> Classifier:
    """A standalone classbench ONNX file: preprocessing and classes come from its own metadata."""
    from classbench.exporting import OnnxSession

    session = OnnxSession(path, threads=threads, device=device)
    meta = session.metadata
    missing = [k for k in ("classes", "img_size", "mean", "std") if k not in meta]
    if missing:
        raise ModelError(f"{path}: not a classbench export (no {', '.join(missing)} metadata); "
                         "export it with `classbench export RUN`")
    return Classifier(meta, "onnx", session.run, path.parent)


def expand_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[Prediction]]:
    """Files, folders (recursive) and globs -> ``(image files, problems)``; problems have ``error`` set."""
    from classbench.data.imageio import IMAGE_EXTENSIONS

    def images_under(folder: Path) -> list[str]:
        found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        return sorted(str(p) for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))

    files: list[str] = []
    problems: list[Prediction] = []
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_file():
            found = [text]
        elif path.is_dir():
            found = images_under(path)
            if not found:
                problems.append(Prediction(text, [], error="folder contains no image files"))
        elif _GLOB_CHARS & set(text):
            found = []
            for match in sorted(glob.glob(text, recursive=True)):
                if Path(match).is_dir():
                    found += images_under(Path(match))
                elif Path(match).suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(match)
            if not found:
                problems.append(Prediction(text, [], error="pattern matches no image files"))
        else:
            problems.append(Prediction(text, [], error="not found; check the path"))
            continue
        files += found
    return list(dict.fromkeys(files)), problems


def _top(pred: Prediction, top_k: int | None) -> list[tuple[str, float]]:
    return pred.top[:top_k] if top_k else pred.top


def render_predictions(preds: Sequence[Prediction], console: Any, top_k: int | None = 3) -> None:
    """A rich table: file, predicted label, top-k ``class (p)``; errors in red."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("file", overflow="fold")
    table.add_column("prediction")
    table.add_column(f"top {top_k}" if top_k else "probabilities")
    for pred in preds:
        if pred.error:
            table.add_row(escape(pred.path), "[red]error[/]", f"[red]{escape(pred.error)}[/]")
            continue
        label = f"[yellow]{pred.label}[/]" if pred.label == UNKNOWN else f"[bold]{escape(str(pred.label))}[/]"
        table.add_row(escape(pred.path), label, escape(", ".join(f"{c} ({p:.3f})" for c, p in _top(pred, top_k))))
    console.print(table)
    bad = sum(1 for p in preds if p.error)
    if bad:
        console.print(f"[yellow]{bad} of {len(preds)} inputs could not be predicted[/]")


def predictions_to_csv(preds: Sequence[Prediction], top_k: int | None = None) -> str:
    """CSV: ``path,label,class_1,prob_1,...,class_k,prob_k,error`` (k = top_k or all classes)."""
    k = top_k or max((len(p.top) for p in preds), default=0)
    header = ["path", "label"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "prob")] + ["error"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for pred in preds:
        cells: list[Any] = []
        for cls, prob in _top(pred, k):
            cells += [cls, f"{prob:.6f}"]
        cells += [""] * (2 * k - len(cells))
        writer.writerow([pred.path, pred.label or "", *cells, pred.error or ""])
    return buf.getvalue()


def predictions_to_json(preds: Sequence[Prediction], top_k: int | None = None) -> str:
    """JSON list of ``{"path", "label", "top": [{"class", "prob"}], "error"}``."""
    rows = [{"path": p.path, "label": p.label, "top": [{"class": c, "prob": round(float(q), 6)} for c, q in _top(p, top_k)],
             "error": p.error} for p in preds]
    return json.dumps(rows, indent=2) + "\n"
