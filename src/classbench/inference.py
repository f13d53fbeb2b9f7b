"""The one inference path shared by ``evaluate`` and ``predict``: image files -> batches -> logits.

* ``iter_batches(paths, img_size, batch_size)`` decodes files through ``classbench.data.dataset.ImageDataset``
  (``load_image`` -> ``to_uint8_tensor``, the training contract) and a ``torch.utils.data.DataLoader``
  (``num_workers=0`` by default: decoding in this process, no worker start-up cost). It yields ``ImageBatch``es
  of uint8 ``[B, 3, S, S]`` tensors; an unreadable file does not stop its batch but is reported in the batch's
  ``failed`` with its ``ImageLoadError`` (``str(err)`` names the file, ``err.reason`` says what is wrong).
* ``TorchRunner`` (fp32, eval mode, ``inference_mode``, any enclosing autocast disabled), ``OnnxSession``
  (ONNX Runtime) and ``OpenVinoModel`` (an OpenVINO IR compiled for the CPU) turn a normalised float batch into
  float32 logits; ``Classifier`` (``classbench.predict``) wraps any of them. Probabilities are
  ``classbench.metrics.softmax(logits, temperature)``, the one softmax.
* ``EXPORTS``: each export variant's file in the run folder and recorded precision; the variant names are also
  ``predict``'s backend names and ``export.json``'s keys. ``open_export(variant, path)`` runs one;
  ``export_command`` / ``export_hint`` are the command that writes one, ``stale_reason`` says when one no longer
  matches its run (predict refuses it, the report marks it).

Heavy libraries (torch, onnxruntime, openvino) are imported inside the functions: importing this module stays
cheap. A missing optional extra is one ``ClassbenchError`` line naming its ``pip install``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classbench.errors import ClassbenchError, ImageLoadError, ModelError, first_line, import_optional

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

__all__ = ["EXPORTS", "ImageBatch", "OnnxSession", "OpenVinoModel", "TorchRunner", "export_command", "export_hint",
           "import_optional", "iter_batches", "no_autocast", "open_export", "parse_metadata", "physical_cores",
           "stale_reason", "variant_of"]


@dataclass(frozen=True)
class ExportKind:
    """One export variant: its ``file`` relative to the run folder, the ``precision`` recorded in its metadata
    and the ``runtime`` that runs it (``onnxruntime``, ``openvino`` or ``tensorrt``)."""

    file: str
    precision: str
    runtime: str


EXPORTS: dict[str, ExportKind] = {
    "onnx": ExportKind("model.onnx", "float32", "onnxruntime"),
    "onnx-fp16": ExportKind("model.fp16.onnx", "float16", "onnxruntime"),
    "onnx-int8": ExportKind("model.int8.onnx", "int8", "onnxruntime"),
    "openvino": ExportKind("openvino/model.xml", "float32", "openvino"),
    "openvino-int8": ExportKind("openvino/model.int8.xml", "int8", "openvino"),
    "tensorrt-fp16": ExportKind("model.fp16.plan", "float16", "tensorrt"),
    "tensorrt-int8": ExportKind("model.int8.plan", "int8", "tensorrt"),
}


def export_command(run: str | os.PathLike, variant: str = "onnx") -> str:
    """The ``classbench export`` command line that writes export ``variant`` (a key of ``EXPORTS``) for ``run``."""
    fmt, _, flag = variant.partition("-")
    return f"classbench export {run}" + (f" --format {fmt}" if fmt != "onnx" else "") + (f" --{flag}" if flag else "")


def export_hint(path: str | os.PathLike) -> str:
    """The ``classbench export`` command that rewrites the export file ``path``: its variant and run folder come from
    the file's name in ``EXPORTS`` (``run/openvino/model.int8.xml`` -> ``... --format openvino --int8``); a file
    named otherwise gets the generic ``classbench export RUN``."""
    posix = Path(path).as_posix()
    for variant, kind in EXPORTS.items():
        if posix == kind.file or posix.endswith("/" + kind.file):
            return export_command(Path(path).parents[len(Path(kind.file).parts) - 1], variant)
    return "classbench export RUN"


def variant_of(runtime: str, precision: str) -> str:
    """The export variant that ``runtime`` runs at the recorded ``precision`` (``onnxruntime`` + ``float16`` ->
    ``onnx-fp16``); the runtime's float32 variant for a precision no variant records."""
    matches = [v for v, kind in EXPORTS.items() if kind.runtime == runtime]
    return next((v for v in matches if EXPORTS[v].precision == precision), matches[0])


def stale_reason(recorded: dict[str, Any], weights_sha256: str, meta: dict[str, Any] | None = None,
                 precision: str | None = None) -> str | None:
    """Why an export no longer matches its run (``"exported from other weights"``, ...), None when it does.

    ``recorded`` is the export's metadata (``parse_metadata``) or its ``export.json`` entry. It matches when it
    records the run's ``weights_sha256`` and, where given, model.json's classes and image size (``meta``) and the
    variant's ``precision``. The temperature is deliberately not compared: the graph outputs logits, and
    ``predict`` applies model.json's temperature, saying so when the file recorded another."""
    if recorded.get("weights_sha256") != weights_sha256:
        return "exported from other weights"
    if meta is not None and recorded.get("classes") != list(meta["classes"]):
        return "exported for other classes"
    if meta is not None and str(recorded.get("img_size")) != str(meta["img_size"]):
        return "exported at another image size"
    if precision is not None and recorded.get("precision", "float32") != precision:
        return f"recorded precision {recorded.get('precision')}, not {precision}"
    return None


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
    from classbench.runs import cpu_info, usable_cores

    usable = usable_cores()
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
        fix = f"re-run `{export_hint(self.path)}`"
        if model_bytes is None and not self.path.is_file():
            raise ModelError(f"{self.path}: no ONNX file here; create it with `{export_hint(self.path)}`")
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
            first = first_line(err, 160)
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


# ---------------------------------------------------------------- OpenVINO
class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Restore the calling thread's alternate signal stack (``sigaltstack``) after the body, on Linux.

    OpenVINO 2026.4's CPU plugin sets its own alternate signal stack on the thread that compiles a model and frees
    it with the compiled model: a later signal (a child process ending, under a handler Python installed with
    SA_ONSTACK) then lands on freed memory and the kernel kills the process with SIGSEGV. Measured here: two
    models compiled, then any ``subprocess.run`` after a DataLoader with workers crashed the process."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    saved = _SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(saved), None)


class OpenVinoModel:
    """An OpenVINO IR (``model.xml`` + its ``.bin``) compiled for ``device`` (default CPU): ``run(batch) -> logits``.

    ``metadata`` is classbench's metadata from the IR's ``rt_info["classbench"]`` (the ONNX file's keys);
    ``precision`` is the inference precision OpenVINO chose (``bf16`` on CPUs with AMX/AVX512-BF16, else
    ``f32``; an INT8 IR runs its quantized layers in int8). ``model`` runs an in-memory ``openvino.Model``
    (``path`` then only names it). A missing package: one line naming ``pip install "classbench[openvino]"``.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, device: str = "CPU", model: Any = None) -> None:
        ov = import_optional("openvino", "openvino")
        self.path = Path(path)
        if model is None and not self.path.is_file():
            raise ModelError(f"{self.path}: no OpenVINO IR here; create it with `{export_hint(self.path)}`")
        core = ov.Core()
        try:
            model = model if model is not None else core.read_model(str(self.path))
            config = {"INFERENCE_NUM_THREADS": int(threads or physical_cores())}
            with keep_signal_stack():
                self.compiled = core.compile_model(model, "CPU" if device in ("cpu", "auto") else device, config)
        except Exception as err:
            first = first_line(err, 160)
            raise ModelError(f"{self.path}: damaged OpenVINO IR ({first}); re-run `{export_hint(self.path)}`") from err
        self.output = self.compiled.output(0)
        self.input_shape: list[int | str] = [str(d) if d.is_dynamic else d.get_length()
                                             for d in self.compiled.input(0).get_partial_shape()]
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        info = model.get_rt_info()
        props = info["classbench"] if "classbench" in info else {}  # noqa: SIM401 - RTMap has no .get
        self.metadata = parse_metadata({k: v.astype(str) for k, v in props.items()})

    def run(self, batch: Any) -> np.ndarray:
        """Logits for an already-normalised NCHW float batch (numpy array or torch tensor)."""
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().numpy()
        array = np.ascontiguousarray(batch, dtype=np.float32)
        return np.array(self.compiled(array)[self.output], dtype=np.float32)


def open_export(variant: str, path: str | os.PathLike, threads: int | None = None, device: str = "cpu") -> Any:
    """A runner (``.run(batch)``, ``.metadata``) for the file of export ``variant`` (a key of ``EXPORTS``)."""
    runtime = EXPORTS[variant].runtime
    if runtime == "onnxruntime":
        return OnnxSession(path, threads=threads, device=device)
    if runtime == "openvino":
        return OpenVinoModel(path, threads=threads)
    raise ClassbenchError(f"{variant}: TensorRT engines are run by TensorRT itself (trtexec or your own code, "
                          "docs/deploy.md); predict runs onnx, onnx-int8, openvino and openvino-int8")
