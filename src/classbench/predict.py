"""Load a trained model and classify image files (PyTorch, ONNX Runtime or OpenVINO backend); the predictions files.

Preprocessing is the training contract: ``load_image`` -> ``to_uint8_tensor(img, img_size)`` ->
``normalize(batch, mean, std)``; probabilities are ``softmax(logits / temperature)`` (``classbench.metrics``).
Files are decoded and batched by ``classbench.inference.iter_batches``, the loader ``evaluate`` uses too, and
run by ``classbench.inference``'s ``TorchRunner`` or ``OnnxSession``: this module never imports
``classbench.exporting``. Loading reads only safetensors, JSON and ONNX files; nothing is unpickled.

Also here: ``predictions_to_csv`` / ``predictions_to_json`` (what ``classbench predict`` writes) and
``write_predictions`` / ``read_predictions`` (the per-image ``predictions.csv`` of ``evaluate``, read back exactly
by ``compare``).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.calibration import stored_temperature
from classbench.errors import ClassbenchError, DataError, ModelError
from classbench.runs import atomic_write_text, csv_text, file_sha256

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
    """A loaded model: ``predict``, ``predict_batch``, ``predict_proba``, ``logits``, ``normalise`` and ``explain``.

    ``note`` is None or one line about the backend choice (why PyTorch was used instead of ``model.onnx``, or
    that model.json's temperature replaces the one the ONNX file recorded)."""

    def __init__(self, meta: dict[str, Any], backend: str, runner: Any, path: Path, note: str | None = None) -> None:
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.img_size = int(meta["img_size"])
        self.temperature = stored_temperature(meta)
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
        """Calibrated probabilities ``softmax(logits / temperature)`` (float64) for a normalised batch."""
        from classbench.calibration import softmax

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

    def normalise(self, uint8_batch: Any) -> Any:
        """uint8 ``[B, 3, S, S]`` (or ``[3, S, S]``) -> the model's float32 input, with this model's mean/std."""
        from classbench.data.transforms import normalize

        return normalize(uint8_batch, self.meta["mean"], self.meta["std"])

    def predict(self, image: Any) -> list[tuple[str, float]]:
        """All classes with their probabilities, most likely first, for one image path or PIL image."""
        probs = self.predict_proba(self.normalise(self.preprocess(image).unsqueeze(0)))[0]
        return self._ranked(probs)

    def explain(self, image: Any, method: str = "gradcam", target: str | int | None = None,
                layer: str | None = None) -> np.ndarray:
        """Where the model looked: a class activation map float32 ``[S, S]`` in [0, 1] (S = img_size, the image
        as the model sees it) of ``target`` (a class name or index; default the predicted class) for one image
        path or PIL image. PyTorch backend only; needs ``grad-cam`` (see ``classbench.explain``)."""
        from classbench.explain import explain_images

        return explain_images(self, [image], method=method, target=target, layer=layer)[0].heatmap

    def _ranked(self, probs: np.ndarray, top_k: int | None = None) -> list[tuple[str, float]]:
        order = np.argsort(-probs, kind="stable")[: top_k or len(self.classes)]
        return [(self.classes[i], float(probs[i])) for i in order]

    def predict_batch(self, paths: Sequence[str | os.PathLike], batch_size: int = 32, top_k: int | None = None,
                      reject_below: float | None = None, workers: int | None = None,
                      progress: Callable[[int], None] | None = None) -> list[Prediction]:
        """Predict many files, one ``Prediction`` per path in order; an unreadable file gives a ``Prediction`` with
        ``error`` (its ``ImageLoadError`` reason) and empty ``top`` instead of stopping the batch.

        Files go through ``classbench.inference.iter_batches`` (the loader ``evaluate`` uses): ``workers``
        DataLoader worker processes decode them (default 0: in this process). With ``reject_below``, ``label``
        becomes ``"unknown"`` when the top probability is under it (``top`` keeps the real values).
        ``progress(n)`` is called after each batch with the number of files it held.
        """
        from classbench.inference import iter_batches

        names = [os.fspath(p) for p in paths]
        results: list[Prediction] = []
        for batch in iter_batches(names, self.img_size, max(1, batch_size), num_workers=workers or 0):
            probs = self.predict_proba(self.normalise(batch.images)) if batch.images is not None else []
            rows: dict[int, Prediction] = {i: Prediction(names[i], [], error=err.reason) for i, err in batch.failed}
            for i, row in zip(batch.index, probs):
                top = self._ranked(row, top_k)
                label = UNKNOWN if reject_below is not None and top[0][1] < reject_below else top[0][0]
                rows[i] = Prediction(names[i], top, label=label)
            results += [rows[i] for i in sorted(rows)]
            if progress is not None:
                progress(batch.n_files)
        return results


def load(path: str | os.PathLike, backend: str = "auto", device: str = "cpu", threads: int | None = None) -> Classifier:
    """Load a run folder, ``model.safetensors``, ``model.json`` (or a classbench ``.onnx`` / OpenVINO ``.xml`` file),
    or ``hf-hub:ORG/NAME[@REVISION]``: a model folder ``classbench export --format hf`` wrote and ``push`` uploaded.

    ``backend``: ``auto``, ``torch``, or an export variant of ``classbench.inference.EXPORTS`` that runs on the
    CPU: ``onnx`` (``model.onnx``), ``onnx-fp16``, ``onnx-int8`` (``model.int8.onnx``), ``openvino``
    (``openvino/model.xml``), ``openvino-int8`` (``openvino/model.int8.xml``); each must be up to date as below
    (else ModelError). ``auto`` never picks a reduced-precision file: ask for it by name.
    ``backend="auto"`` uses ``model.onnx`` beside the weights when it is up to date, else PyTorch (``note`` says
    why). Up to date: the weights sha256, classes, image size and precision (float32) recorded in the file match
    ``model.safetensors`` / ``model.json``; otherwise the file is stale and never used (``backend="onnx"``
    raises). The temperature is not part of the graph (it outputs logits), so it does not make the file stale:
    beside the weights, ``model.json``'s temperature (the one ``evaluate`` calibrated) is always applied, and
    when the file recorded another one ``note`` says so (re-export to record it in the file for use on its
    own). A standalone ``.onnx`` file applies its own recorded temperature.
    """
    from classbench.inference import EXPORTS

    choices = ["auto", "torch", *(k for k, v in EXPORTS.items() if v.runtime != "tensorrt")]
    if backend not in choices:
        raise ClassbenchError(f"backend {backend!r}: choose {', '.join(choices)}")
    from classbench.hub import resolve

    path = resolve(path)  # hf-hub:ORG/NAME -> its downloaded folder; a local path as it is
    if not path.exists():
        raise ModelError(f"{path}: not found; pass a run folder, its model.safetensors or a model.onnx")
    if path.suffix in (".onnx", ".xml"):
        return _load_onnx_file(path, device, threads)
    from classbench.models import read_meta

    meta, weights = read_meta(path)
    onnx_path = weights.parent / "model.onnx"
    note = None
    if backend not in ("auto", "torch", "onnx"):
        return _load_onnx_beside(meta, weights, weights.parent / EXPORTS[backend].file, device, threads, backend)
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
    from classbench.inference import TorchRunner
    from classbench.models import load_model

    model, meta = load_model(weights)
    return Classifier(meta, "torch", TorchRunner(model, _torch_device(device)), weights.parent, note)


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
                      threads: int | None, variant: str = "onnx") -> Classifier:
    """The export ``variant`` (ONNX or OpenVINO file) beside the weights: ModelError when missing or stale;
    model.json's temperature applied (see ``load``)."""
    from classbench.inference import EXPORTS, export_command, open_export, stale_reason

    how = export_command(weights.parent, variant)
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: not found; create it with `{how}`")
    session = open_export(variant, onnx_path, threads=threads, device=device)
    recorded = session.metadata
    reason = stale_reason(recorded, file_sha256(weights), meta, EXPORTS[variant].precision)
    if reason:
        raise ModelError(f"{onnx_path}: stale ({reason}); re-run `{how}`")
    note = _temperature_note(recorded, meta, onnx_path, how)
    return Classifier(meta, variant, session.run, weights.parent, note)


def _temperature_note(recorded: dict[str, Any], meta: dict[str, Any], onnx_path: Path, how: str) -> str | None:
    """None when the export recorded model.json's temperature, else a line naming both, the one applied and
    ``how`` to re-export."""
    applied = stored_temperature(meta)
    exported = recorded.get("temperature")
    known = isinstance(exported, (int, float)) and not isinstance(exported, bool)
    if known and math.isclose(float(exported), applied, rel_tol=1e-9):
        return None
    was = f"temperature {float(exported):g}" if known else "no temperature"
    return (f"{onnx_path.name} was exported with {was}; applying T = {applied:g} from model.json "
            f"(re-run `{how}` to record it in the file)")


def _load_onnx_file(path: Path, device: str, threads: int | None) -> Classifier:
    """A standalone classbench ONNX file (or OpenVINO ``.xml``): preprocessing, classes and temperature come from
    its own metadata."""
    from classbench.inference import OnnxSession, OpenVinoModel, variant_of

    session = OpenVinoModel(path, threads) if path.suffix == ".xml" else OnnxSession(path, threads=threads, device=device)
    meta = session.metadata
    missing = [k for k in ("classes", "img_size", "mean", "std") if k not in meta]
    if missing:
        raise ModelError(f"{path}: not a classbench export (no {', '.join(missing)} metadata); "
                         "export it with `classbench export RUN`")
    backend = variant_of("openvino" if path.suffix == ".xml" else "onnxruntime", str(meta.get("precision", "float32")))
    return Classifier(meta, backend, session.run, path.parent)


def expand_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[Prediction]]:
    """Files, folders (recursive) and globs -> ``(image files, problems)``; problems have ``error`` set."""
    from classbench.data.imageio import is_image_file
    from classbench.data.sources import files_under

    def images_under(folder: Path) -> list[str]:
        return [str(p) for p in files_under(folder) if is_image_file(p)]

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
                elif is_image_file(match):
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
    rows = []
    for pred in preds:
        cells: list[Any] = []
        for cls, prob in _top(pred, k):
            cells += [cls, f"{prob:.6f}"]
        cells += [""] * (2 * k - len(cells))
        rows.append([pred.path, pred.label or "", *cells, pred.error or ""])
    return csv_text([header, *rows])


def predictions_to_json(preds: Sequence[Prediction], top_k: int | None = None) -> str:
    """JSON list of ``{"path", "label", "top": [{"class", "prob"}], "error"}``."""
    rows = [{"path": p.path, "label": p.label, "top": [{"class": c, "prob": round(float(q), 6)} for c, q in _top(p, top_k)],
             "error": p.error} for p in preds]
    return json.dumps(rows, indent=2) + "\n"


# ---------------------------------------------------------------- evaluate's per-image predictions.csv
PREDICTION_COLUMNS = ("path", "label", "predicted")


def write_predictions(path: str | Path, paths: Sequence[str | Path], labels: Sequence[str], probs: np.ndarray,
                      classes: Sequence[str]) -> Path:
    """Write (atomically, UTF-8, via the csv module) the per-image CSV ``path,label,predicted,p_<class>...``:
    one probability column per class in ``classes`` order, ``predicted`` the argmax class, floats as ``repr``
    so that ``read_predictions`` gives back exactly these values. Returns ``path``."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(classes))
    if not len(paths) == len(labels) == probs.shape[0]:
        raise ValueError(f"{len(paths)} paths, {len(labels)} labels and {probs.shape[0]} probability rows")
    rows = [[str(p), y, classes[int(np.argmax(r))], *map(repr, r.tolist())] for p, y, r in zip(paths, labels, probs)]
    return atomic_write_text(path, csv_text([[*PREDICTION_COLUMNS, *(f"p_{c}" for c in classes)], *rows]))


def read_predictions(path: str | Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """``(paths, labels, probs [N, C] float64, classes)`` exactly as ``write_predictions`` wrote them;
    DataError when the file is unreadable, not such a CSV, or damaged."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header, *body = list(csv.reader(fh)) or [[]]
        if tuple(header[:3]) != PREDICTION_COLUMNS or not all(h.startswith("p_") for h in header[3:]):
            raise ValueError("expected the columns path,label,predicted,p_<class>...")
        if any(len(r) != len(header) for r in body):
            raise ValueError("a row has the wrong number of columns")
        probs = np.array([[float(x) for x in r[3:]] for r in body], dtype=np.float64).reshape(len(body), len(header) - 3)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise DataError(f"{path}: not a readable classbench predictions CSV ({err})") from err
    return [r[0] for r in body], [r[1] for r in body], probs, [h[2:] for h in header[3:]]
