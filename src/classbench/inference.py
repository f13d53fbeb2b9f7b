"""The one inference path shared by ``evaluate`` and ``predict``: image files -> batches -> logits.

* ``iter_batches(paths, img_size, batch_size)`` decodes files through ``classbench.data.dataset.ImageDataset``
  (``load_image`` -> ``to_uint8_tensor``, the training contract) and a ``torch.utils.data.DataLoader``
  (``num_workers=0`` by default: decoding in this process, no worker start-up cost). It yields ``ImageBatch``es
  of uint8 ``[B, 3, S, S]`` tensors; an unreadable file does not stop its batch but is reported in the batch's
  ``failed`` with its ``ImageLoadError`` (``str(err)`` names the file, ``err.reason`` says what is wrong).
* ``TorchRunner`` (fp32, eval mode, ``inference_mode``, any enclosing autocast disabled) and ``OnnxSession``
  (ONNX Runtime) turn a normalised float batch into float32 logits; ``Classifier`` (``classbench.predict``) wraps
  either. Probabilities are ``classbench.metrics.softmax(logits, temperature)``, the one softmax.

Heavy libraries (torch, onnxruntime) are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classbench.errors import ClassbenchError, ImageLoadError, ModelError
from classbench.metrics import softmax

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

__all__ = ["ImageBatch", "OnnxSession", "TorchRunner", "iter_batches", "no_autocast", "parse_metadata",
           "physical_cores", "softmax"]


# ---------------------------------------------------------------- image files -> uint8 batches
@dataclass
class ImageBatch:
    """One batch of ``iter_batches``: ``images`` is uint8 ``[B, 3, S, S]`` of the readable files (None when no
    file of the batch could be read), ``index`` their positions in the input list (row ``i`` is
    ``paths[index[i]]``), ``failed`` the ``(position, ImageLoadError)`` of the unreadable ones."""

    images: Any
    index: list[int] = field(default_factory=list)
    failed: list[tuple[int, ImageLoadError]] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        """Files this batch covered, readable or not."""
        return len(self.index) + len(self.failed)


class _Tolerant:
    """Map-style dataset over an ``ImageDataset``: ``(position, uint8 tensor | ImageLoadError)``; any failure of
    one file (also an unexpected one) becomes that file's ``ImageLoadError`` instead of stopping the loader."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        try:
            return index, self.dataset[index][0]
        except ImageLoadError as err:
            return index, err
        except ClassbenchError as err:
            return index, ImageLoadError(self.dataset.paths[index], str(err))
        except Exception as err:  # noqa: BLE001 - one odd file must not stop a batch of thousands
            return index, ImageLoadError(self.dataset.paths[index], f"cannot be processed ({type(err).__name__}: {err})")


def _collate(items: list[tuple[int, Any]]) -> ImageBatch:
    import torch

    good = [(i, x) for i, x in items if not isinstance(x, ImageLoadError)]
    failed = [(i, x) for i, x in items if isinstance(x, ImageLoadError)]
    images = torch.stack([x for _, x in good]) if good else None
    return ImageBatch(images, [i for i, _ in good], failed)


def iter_batches(paths: Sequence[str | os.PathLike], img_size: int, batch_size: int = 32,
                 num_workers: int = 0) -> DataLoader[ImageBatch]:
    """``ImageBatch``es of ``batch_size`` consecutive files of ``paths`` (in order), each decoded and squashed to
    ``img_size`` exactly as in training (uint8; ``normalize`` is the caller's, on the batch).

    ``num_workers > 0`` decodes in that many DataLoader worker processes (worth it only for large batches of large
    files). ``len()`` of the returned loader is the number of batches.
    """
    from torch.utils.data import DataLoader

    from classbench.data.dataset import ImageDataset
    from classbench.data.manifest import Sample

    if batch_size < 1:
        raise ClassbenchError(f"batch size must be >= 1, got {batch_size}")
    dataset = ImageDataset([Sample(Path(p), "") for p in paths], {"": 0}, int(img_size))
    return DataLoader(_Tolerant(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=_collate)


# ---------------------------------------------------------------- PyTorch
def no_autocast() -> contextlib.ExitStack:
    """Disable autocast on CPU and CUDA (a measured bf16 evaluation once cost 7 accuracy points)."""
    import torch

    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        stack.enter_context(torch.autocast(device, enabled=False))
    return stack


class TorchRunner:
    """fp32 eval-mode PyTorch forward under ``torch.inference_mode`` with any enclosing autocast disabled:
    ``runner(batch) -> float32 logits [N, C]`` (numpy) for a normalised NCHW batch (tensor or array)."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model.float().eval().to(device)
        self.device = device

    def __call__(self, batch: Any) -> np.ndarray:
        import torch

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        with torch.inference_mode(), no_autocast():
            return self.model(x).float().cpu().numpy()


# ---------------------------------------------------------------- ONNX Runtime
def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads do not help ORT's GEMMs)."""
    from classbench.runs import cpu_info

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = cpu_info().physical_cores
    return max(1, min(usable, cores)) if cores else max(1, usable)


def parse_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Decode the string metadata_props of a classbench ONNX file (JSON values where they parse)."""
    def decode(value: str) -> Any:
        try:
            return json.loads(value)
        except (json.JSONDecodeError, TypeError):
            return value

    return {key: decode(value) for key, value in props.items()}


class OnnxSession:
    """An ONNX Runtime session for a classbench ONNX file; ``run(batch) -> logits`` (float32).

    ``metadata`` is the file's decoded metadata (``parse_metadata``); a missing, damaged or truncated file is a
    ``ModelError`` naming it and the fix. ``model_bytes`` runs an in-memory model (``path`` then only names it).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, device: str = "cpu",
                 model_bytes: bytes | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        fix = f"re-run `classbench export {self.path.parent}`"
        if model_bytes is None and not self.path.is_file():
            raise ModelError(f"{self.path}: no ONNX file here; create it with `classbench export {self.path.parent}`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting between runs: decoding the next batch of images needs those cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            source = model_bytes if model_bytes is not None else str(self.path)
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise ModelError(f"{self.path}: damaged or truncated ONNX file ({first}); {fix}") from err
        self.providers = self.session.get_providers()
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape: list[int | str] = list(inp.shape)
        self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: Any) -> np.ndarray:
        """Logits for an already-normalised NCHW float batch (numpy array or torch tensor)."""
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().numpy()
        array = np.ascontiguousarray(batch, dtype=np.float32)
        fixed = self.input_shape[0]
        if isinstance(fixed, int) and array.shape[0] != fixed:  # static-batch export: feed one chunk at a time
            return np.concatenate([self.run(array[i:i + fixed]) for i in range(0, len(array), fixed)])
        return self.session.run([self.output_name], {self.input_name: array})[0].astype(np.float32)
