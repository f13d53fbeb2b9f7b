"""Class activation maps: where a trained classifier looked when it decided (``classbench explain``,
``Classifier.explain``, and the heatmap row of ``evaluate``'s misclassified.png).

* ``explain_images(clf, images, method="gradcam", target=None, layer=None) -> list[Explanation]``: the images
  (paths, PIL images or uint8 ``[3, H, W]`` tensors) go through the classifier's own preprocessing
  (``clf.preprocess`` -> ``clf.normalise``: the run's img_size, mean and std), so a map is of what the model sees.
  ``Explanation.heatmap`` is float32 ``[S, S]`` (S = img_size: the whole image, squashed like the input), finite,
  in [0, 1]: 1 where the evidence for class ``target`` (a name or index; default the predicted class) is strongest.
* ``find_layer(model, img_size, name=None) -> TargetLayer``: automatic for timm CNNs (the module whose output is
  ``forward_features``' map, the last before global pooling: ResNet ``layer4``, EfficientNet ``bn2``) and ViTs
  (the last block's ``norm1``, its tokens less the ``num_prefix_tokens`` class/register tokens reshaped to the
  patch grid); ``name`` (``--layer``) overrides it. An unknown name, a layer without a spatial map or a failed
  search: one ``ClassbenchError`` naming ``--layer`` and candidate layers.
* ``explain_files`` is ``classbench explain``: one overlay PNG per image (image | heatmap; predicted class and
  probability; the true class when split.csv or the folder name knows it). ``mistake_heatmaps`` is evaluate's
  bounded share; it never raises (a failure is recorded instead).

The CAM methods are the ``grad-cam`` package's (``pytorch_grad_cam``, MIT; extra ``classbench[explain]``), imported
only when a map is made (missing: one line with the install command). PyTorch classifiers only (CAMs need
gradients): an ONNX one raises.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classbench.errors import ClassbenchError, DataError
from classbench.runs import safe_name

INSTALL = 'pip install "classbench[explain]"'
METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "xgradcam": "XGradCAM",
           "hirescam": "HiResCAM", "gradcam-elementwise": "GradCAMElementWise", "eigencam": "EigenCAM",
           "eigengradcam": "EigenGradCAM", "scorecam": "ScoreCAM"}
N_CANDIDATES = 6
OVERLAY_SIZE = 224


@dataclass
class TargetLayer:
    """Where a map is taken: ``name`` in ``model.named_modules()``, the module, and the function that turns its
    output into NCHW (None when it already is)."""

    name: str
    module: Any
    reshape: Callable[[Any], Any] | None = None


@dataclass
class Explanation:
    """One image's map (``heatmap``: float32 ``[S, S]`` in [0, 1]; None once ``explain_files`` wrote it to its PNG)
    of class ``target``, with the prediction, the method and the layer."""

    heatmap: np.ndarray | None
    predicted: str
    probability: float
    target: str
    target_probability: float
    method: str
    layer: str
    path: str | None = None
    true: str | None = None


@dataclass
class ExplainResult:
    """What ``explain_files`` did: the overlay PNGs written, their explanations, unreadable inputs, the time."""

    out_dir: Path
    files: list[Path]
    explanations: list[Explanation]
    problems: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------- the library
def cam_library() -> Any:
    """The ``pytorch_grad_cam`` module, or one ClassbenchError with the install command."""
    try:
        import pytorch_grad_cam
    except ImportError as err:
        missing = "" if err.name in (None, "pytorch_grad_cam") else f" (it needs {err.name}, which is missing)"
        raise ClassbenchError(f"heatmaps need the grad-cam package{missing}; install it with: {INSTALL}") from None
    return pytorch_grad_cam


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ClassbenchError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    return method


# ---------------------------------------------------------------- the layer
def _trace(model: Any, img_size: int) -> tuple[list[tuple[str, Any]], Any]:
    """``forward_features`` (else the whole forward) of one grey image: ``(name, output)`` of every module in the
    order they finished, and the result."""
    import torch

    from classbench.inference import no_autocast

    finished: list[tuple[str, Any]] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: finished.append((name, out)))
             for name, module in model.named_modules() if name]
    try:
        x = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
        with torch.no_grad(), no_autocast():
            result = model.forward_features(x) if hasattr(model, "forward_features") else model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return [(n, o) for n, o in finished if isinstance(o, torch.Tensor)], result


def _tokens_to_grid(prefix: int, grid: tuple[int, int]) -> Callable[[Any], Any]:
    def reshape(tokens: Any) -> Any:
        patches = tokens[:, prefix:, :]
        return patches.reshape(patches.shape[0], grid[0], grid[1], patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def _reshape_for(model: Any, out: Any) -> Callable[[Any], Any] | None:
    """The reshape that makes ``out`` an NCHW map (None: it is one); ValueError when it has no spatial map."""
    if out.ndim == 4:
        nhwc = out.shape[-1] == getattr(model, "num_features", -1) and out.shape[1] != out.shape[-1]
        return (lambda x: x.permute(0, 3, 1, 2)) if nhwc else None  # NHWC (e.g. Swin) -> NCHW
    if out.ndim == 3:  # tokens [B, N, C]: drop the class/register tokens, the rest is the patch grid
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        n = out.shape[1] - prefix
        grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", None) or (0, 0))
        if len(grid) != 2 or grid[0] * grid[1] != n:
            side = math.isqrt(max(n, 0))
            grid = (side, side)
        if n > 0 and grid[0] * grid[1] == n:
            return _tokens_to_grid(prefix, (int(grid[0]), int(grid[1])))
    raise ValueError(f"its output {list(out.shape)} is not a spatial map")


def _spatial(model: Any, out: Any) -> bool:
    try:
        _reshape_for(model, out)
    except ValueError:
        return False
    return True


def candidates(model: Any, finished: list[tuple[str, Any]], first: str | None = None) -> list[str]:
    """Up to ``N_CANDIDATES`` layer names with a spatial map, ``first`` and then the closest to the output: shallow
    names, no Identity, one name per output (the outermost module that returned it)."""
    from torch import nn

    modules, seen, names = dict(model.named_modules()), set(), [first] if first else []
    for name, out in reversed(finished):
        if id(out) in seen or isinstance(modules[name], nn.Identity) or name.count(".") > 1:
            continue
        seen.add(id(out))
        if _spatial(model, out):
            names.append(name)
    return list(dict.fromkeys(names))[:N_CANDIDATES]


def _auto_layer(model: Any, finished: list[tuple[str, Any]], features: Any) -> str | None:
    """ViT: the last block's ``norm1``; CNN: the last module (not an Identity) whose output is the feature map."""
    from torch import nn

    blocks = getattr(model, "blocks", None)
    if getattr(features, "ndim", 0) == 3 and isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks):
        norm1 = getattr(blocks[-1], "norm1", None)
        return next((n for n, m in model.named_modules() if m is norm1), None) if norm1 is not None else None
    if getattr(features, "ndim", 0) != 4:
        return None
    modules = dict(model.named_modules())
    real = [(n, o) for n, o in finished if not isinstance(modules[n], nn.Identity)]
    same = [n for n, o in real if o is features] or [n for n, o in real if o.shape == features.shape]
    return same[-1] if same else None


def find_layer(model: Any, img_size: int, name: str | None = None, arch: str | None = None) -> TargetLayer:
    """The layer the maps are taken at: ``name`` when given, else picked automatically (see the module doc)."""
    arch = arch or type(model).__name__
    try:
        finished, features = _trace(model, img_size)
    except (RuntimeError, ValueError, AssertionError) as err:
        raise ClassbenchError(f"{arch}: a forward pass at {img_size} px failed ({err}); cannot make heatmaps") from None
    auto = _auto_layer(model, finished, features)
    chosen = auto if name is None else name
    outs = [o for n, o in finished if n == chosen]
    hint = ", ".join(candidates(model, finished, auto)) or "none found"
    if name is not None and not outs:
        raise ClassbenchError(f"--layer {name!r}: {arch} has no such layer before its pooling; "
                              f"pass --layer with one of: {hint}")
    if not outs:
        raise ClassbenchError(f"{arch}: cannot pick the layer to explain automatically; pass --layer NAME, "
                              f"e.g. one of: {hint}")
    try:
        reshape = _reshape_for(model, outs[-1])
    except ValueError as err:
        raise ClassbenchError(f"--layer {chosen!r}: {err}; pass --layer with one of: {hint}") from None
    return TargetLayer(str(chosen), dict(model.named_modules())[chosen], reshape)


# ---------------------------------------------------------------- the maps
def _torch_model(clf: Any) -> Any:
    model = getattr(getattr(clf, "_runner", None), "model", None)
    if getattr(clf, "backend", None) != "torch" or model is None:
        raise ClassbenchError(f"heatmaps need the PyTorch model (this classifier runs on {clf.backend}); "
                              "load the run folder with classbench.load(RUN, backend='torch')")
    return model


def _class_index(classes: Sequence[str], target: str | int) -> int:
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(classes):
        return target
    raise ClassbenchError(f"--class {target!r}: not a class of this model; choose one of: {', '.join(classes)}")


def cam_maps(model: Any, layer: TargetLayer, method: str, x: Any,
             targets: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(maps [B, S, S] float32 in [0, 1], logits [B, C])`` of ``method`` on a normalised batch ``x`` for class
    ``targets[i]`` of image i (None: its predicted class)."""
    import torch

    from classbench.inference import no_autocast
    from classbench.speed import out_of_place_activations

    lib = cam_library()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out_of_place_activations(model)  # an in-place activation would overwrite the saved activations
    # The map needs gradients from the layer on only: the graph starts at its output (the same map, the backward
    # pass through the layers before it is skipped). Registered first, so grad-cam's hooks see the new output.
    begin = layer.module.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_().clone())
    cam = getattr(lib, METHODS[_check_method(method)])(model=model, target_layers=[layer.module],
                                                       reshape_transform=layer.reshape)
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad(), no_autocast():
            wanted = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
            maps = cam(input_tensor=x.clone(), targets=wanted)
            logits = cam.outputs.detach().float().cpu().numpy()
    finally:
        cam.activations_and_grads.release()
        begin.remove()
        for p in frozen:
            p.requires_grad_(True)
    return np.clip(np.nan_to_num(np.asarray(maps, dtype=np.float32)), 0.0, 1.0), logits


def explain_images(clf: Any, images: Sequence[Any], method: str = "gradcam", target: str | int | None = None,
                   layer: str | TargetLayer | None = None, batch_size: int = 16) -> list[Explanation]:
    """One ``Explanation`` per image, in order (see the module doc); an unreadable file raises ImageLoadError."""
    import torch

    from classbench.calibration import softmax
    from classbench.data.transforms import to_uint8_tensor

    _check_method(method)
    model = _torch_model(clf)
    index = None if target is None else _class_index(clf.classes, target)
    if not isinstance(layer, TargetLayer):
        layer = find_layer(model, clf.img_size, layer, clf.meta.get("architecture"))
    results: list[Explanation] = []
    for start in range(0, len(images), max(1, batch_size)):
        part = images[start:start + max(1, batch_size)]
        x = clf.normalise(torch.stack([to_uint8_tensor(im, clf.img_size) if isinstance(im, torch.Tensor)
                                       else clf.preprocess(im) for im in part]))
        maps, logits = cam_maps(model, layer, method, x, None if index is None else [index] * len(part))
        for image, heat, probs in zip(part, maps, softmax(logits, clf.temperature)):
            pred = int(np.argmax(probs))
            shown = pred if index is None else index
            path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
            results.append(Explanation(heat, clf.classes[pred], float(probs[pred]), clf.classes[shown],
                                       float(probs[shown]), method, layer.name, path))
    return results


def _decode(clf: Any, paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[int, Any]], list[tuple[str, str]]]:
    """``(position, uint8 tensor)`` of every readable file, decoded by the one loader of evaluate and predict
    (``inference.iter_batches``), and ``(path, reason)`` of the others."""
    from classbench.inference import iter_batches

    readable, issues = [], []
    for batch in iter_batches(paths, clf.img_size, batch_size=max(len(paths), 1)):
        readable += list(zip(batch.index, batch.images)) if batch.images is not None else []
        issues += [(os.fspath(paths[i]), err.reason) for i, err in batch.failed]
    return readable, issues


def mistake_heatmaps(clf: Any, paths: Sequence[str | os.PathLike], targets: Sequence[int],
                     method: str = "gradcam") -> tuple[list[np.ndarray | None], dict[str, Any] | None]:
    """``evaluate``'s heatmap row: the map of class ``targets[i]`` for ``paths[i]`` (None when unreadable) and
    ``{"method", "layer", "n_images", "seconds"}``; ``([], None)`` when grad-cam is not installed, and
    ``([], {..., "error"})`` when no map could be made (evaluate goes on without them)."""
    import torch

    start = time.perf_counter()
    try:
        cam_library()
    except ClassbenchError:
        return [], None
    info: dict[str, Any] = {"method": method}
    try:
        model = _torch_model(clf)
        layer = find_layer(model, clf.img_size, None, clf.meta.get("architecture"))
        readable, _ = _decode(clf, paths)
        maps: list[np.ndarray | None] = [None] * len(paths)
        if readable:
            x = clf.normalise(torch.stack([t for _, t in readable]))
            for (i, _), heat in zip(readable, cam_maps(model, layer, method, x, [int(targets[i]) for i, _ in readable])[0]):
                maps[i] = heat
        info.update(layer=layer.name, n_images=len(readable))
    except (ClassbenchError, RuntimeError, ValueError) as err:
        maps, info["error"] = [], str(err)
    info["seconds"] = round(time.perf_counter() - start, 3)
    return maps, info


# ---------------------------------------------------------------- classbench explain
def _true_labels(run_dir: Path, paths: Sequence[str], classes: Sequence[str]) -> list[str | None]:
    """Each image's class from the run's split.csv, else its folder's name when that is a class, else None."""
    from classbench.data.manifest import Manifest

    try:
        known = {str(Path(s.path).resolve()): s.label for s in Manifest.load(run_dir / "split.csv").samples}
    except ClassbenchError:  # no split.csv (or an unreadable one)
        known = {}
    found = [known.get(str(Path(p).resolve()), Path(p).parent.name) for p in paths]
    return [label if label in classes else None for label in found]


def overlay_png(exp: Explanation, path: str | Path, size: int = OVERLAY_SIZE) -> Path:
    """One image's PNG: the image and its heatmap overlay side by side, the prediction and the truth below."""
    from classbench.report.sheets import heatmap_pair

    wrong = exp.true is not None and exp.true != exp.predicted
    lines = [("predicted: ", exp.predicted, f" (p={exp.probability:.2f})", "black"),
             ("true: ", exp.true if exp.true is not None else "not known", "", "#D55E00" if wrong else "black"),
             (f"{exp.method} heatmap of ", exp.target, f" (p={exp.target_probability:.2f}) at {exp.layer}", "#555555")]
    return heatmap_pair(exp.path, exp.heatmap, lines, path, size)


def _out_names(paths: Sequence[str], method: str) -> list[str]:
    """``<stem>.<method>.png`` per input, made unique (``<stem>-2...``) when two inputs share a stem."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "", method.replace("++", "pp"))
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = safe_name(Path(path).stem) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}{'' if seen[stem] == 1 else f'-{seen[stem]}'}.{slug}.png")
    return names


def explain_files(run: str | os.PathLike, paths: Sequence[str | os.PathLike], method: str = "gradcam",
                  target: str | None = None, layer: str | None = None, out: str | os.PathLike | None = None,
                  batch_size: int = 16) -> ExplainResult:
    """``classbench explain``: an overlay PNG per image file of ``paths`` (files, folders, globs) in ``out``
    (default ``RUN/explain``), a batch at a time; unreadable inputs are listed in ``problems`` and do not stop
    the others. A written explanation's ``heatmap`` is dropped (None: it is in its PNG), so memory stays flat."""
    from classbench.predict import expand_inputs, load

    start, batch_size = time.perf_counter(), max(1, batch_size)
    cam_library()  # before the model loads: a missing package or a mistyped method fails at once
    _check_method(method)
    clf = load(run, backend="torch")
    chosen = find_layer(_torch_model(clf), clf.img_size, layer, clf.meta.get("architecture"))
    files, problems = expand_inputs(paths)
    issues = [(p.path, str(p.error)) for p in problems]
    names = dict(zip(files, _out_names(files, method)))
    truths = dict(zip(files, _true_labels(Path(clf.path), files, clf.classes)))
    out_dir = Path(out) if out is not None else Path(clf.path) / "explain"
    written, done = [], []
    for first in range(0, len(files), batch_size):
        part = files[first:first + batch_size]
        readable, unreadable = _decode(clf, part)
        issues += unreadable
        for (i, _), exp in zip(readable, explain_images(clf, [t for _, t in readable], method, target, chosen)):
            exp.path, exp.true = part[i], truths[part[i]]
            written.append(overlay_png(exp, out_dir / names[part[i]]))
            exp.heatmap = None
            done.append(exp)
    if not done:
        what = issues[0] if issues else ("(no inputs)", "nothing to explain")
        raise DataError(f"{what[0]}: {what[1]}; give images, folders or globs of images to explain")
    return ExplainResult(out_dir, written, done, issues, time.perf_counter() - start)
