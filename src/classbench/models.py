"""Model factory and model files: timm architectures by name, safe weight loading, save/load.

A trained model is ``model.safetensors`` (timm state dict, fp32) + ``model.json`` (metadata, see
docs/DESIGN.md). Nothing here ever unpickles a file.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from classbench.errors import ModelError
from classbench.runs import atomic_write_bytes, atomic_write_json

MODEL_FORMAT = "classbench-model/1"

# Familiar names (Keras/ImageAI/torchvision spellings) -> timm names.
ALIASES: dict[str, str] = {
    "mobilenetv2": "mobilenetv2_100",
    "mobilenet_v2": "mobilenetv2_100",
    "mobilenetv3": "mobilenetv3_large_100",
    "inceptionv3": "inception_v3",
    "inception": "inception_v3",
    "densenet": "densenet121",
    "resnet": "resnet50",
    "efficientnet": "efficientnet_b0",
    "efficientnet-lite0": "efficientnet_lite0",
}

# Sizes below which a forward pass fails (measured with a real forward in eval mode).
_KNOWN_MIN_SIZE = {"inception_v3": 75, "densenet121": 29}


def resolve_name(name: str) -> str:
    """Map a familiar alias to its timm name and check that timm knows it."""
    import timm

    key = name.strip()
    resolved = ALIASES.get(key.lower(), key)
    if timm.is_model(resolved):
        return resolved
    close = difflib.get_close_matches(resolved, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see `timm.list_models()` for names"
    raise ModelError(f"unknown model {name!r}; {hint}")


def default_config(name: str) -> dict[str, Any]:
    """The model's own input size and normalisation from its timm pretrained config."""
    import timm

    cfg = timm.get_pretrained_cfg(resolve_name(name))
    if cfg is None:
        return {"img_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    return {"img_size": int(cfg.input_size[-1]), "mean": list(cfg.mean), "std": list(cfg.std)}


@lru_cache(maxsize=64)
def min_input_size(name: str) -> int:
    """Smallest square input size the architecture accepts (binary search on a real forward)."""
    import timm
    import torch

    name = resolve_name(name)
    if name in _KNOWN_MIN_SIZE:
        return _KNOWN_MIN_SIZE[name]
    model = timm.create_model(name, num_classes=2).eval()

    def works(size: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return True
        except (RuntimeError, ValueError, AssertionError):
            return False

    low, high = 8, 512
    if works(low):
        return low
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if works(mid) else (mid + 1, high)
    return low


def check_input_size(name: str, img_size: int) -> None:
    """Refuse a size that is too small for the model, naming the smallest that works."""
    smallest = min_input_size(name)
    if img_size < smallest:
        raise ModelError(f"{name} needs --img-size >= {smallest} (got {img_size}); pass --img-size {smallest} or more")


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str | Path | None = None,
                 drop_rate: float = 0.0) -> Any:
    """A timm model with a new ``num_classes`` head; optionally pretrained (timm's download), or its backbone from
    ``weights``: a local safetensors file, a classbench run folder or ``hf-hub:ORG/NAME`` (see resolve_weights)."""
    import timm

    name = resolve_name(name)
    if pretrained and weights:
        raise ModelError("use either --pretrained (download) or --weights FILE, not both")
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate)
    except (OSError, ConnectionError, RuntimeError) as err:
        if not pretrained:
            raise
        raise ModelError(
            f"could not fetch pretrained weights for {name} ({type(err).__name__}: no network?); "
            f"download them elsewhere and pass --weights FILE.safetensors"
        ) from err
    if weights:
        load_backbone_weights(model, resolve_weights(weights))
    reset_head(model)
    return model


def resolve_weights(weights: str | Path) -> Path:
    """``--weights`` as a local path: a file or run folder as given, or for ``hf-hub:ORG/NAME[@REVISION]`` the local
    snapshot of that Hugging Face Hub repository (:func:`classbench.hub.resolve`; its ``model.safetensors``)."""
    from classbench.hub import is_hub_spec, resolve

    return resolve(str(weights)) if is_hub_spec(str(weights)) else Path(weights)


def reset_head(model: Any) -> None:
    """Small, zero-centred init for the new classifier head.

    Some timm inits scale with 1/sqrt(num_classes) (EfficientNet's Google init gives +-0.45 for 5
    classes), which makes the first logits huge and wastes the first epochs of a fine-tune.
    """
    import torch
    from torch import nn

    head = model.get_classifier()
    for module in head.modules() if isinstance(head, nn.Module) else []:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            with torch.no_grad():
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    module.bias.zero_()


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a weights file without unpickling: safetensors, or a classbench run folder / model.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir() or path.suffix == ".json":
        path = (path if path.is_dir() else path.parent) / "model.safetensors"
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found; pass a .safetensors file or a classbench run folder")
    if path.suffix in {".pt", ".pth", ".bin", ".ckpt", ".pkl"}:
        raise ModelError(
            f"{path}: pickle-based weights are never loaded (they can run code); convert once with "
            f"`python -c \"import torch,safetensors.torch as s; s.save_file(torch.load('{path}', "
            f"weights_only=True), '{path.with_suffix('.safetensors')}')\"` and pass the .safetensors file"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable safetensors file ({err}); re-export the weights") from err
    return {_strip_prefix(k): v for k, v in state.items()}


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def load_backbone_weights(model: Any, weights: str | Path) -> dict[str, int]:
    """Load matching tensors from ``weights`` into ``model``; the classifier head is kept new.

    Tensors whose name or shape differs (the old head) are skipped. Fails when most of the backbone
    did not match: that is the wrong file for this architecture.
    """
    state = read_state_dict(weights)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    backbone = [k for k in own if not k.startswith(_head_prefix(model))]
    loaded = sum(1 for k in backbone if k in matched)
    if not backbone or loaded < 0.5 * len(backbone):
        raise ModelError(
            f"{weights}: only {loaded} of {len(backbone)} backbone tensors match {type(model).__name__}; "
            "is it the same architecture?"
        )
    model.load_state_dict(matched, strict=False)
    return {"loaded": len(matched), "backbone": len(backbone), "skipped": len(state) - len(matched)}


def _head_prefix(model: Any) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(classifier, (list, tuple)):
        classifier = classifier[0]
    return f"{classifier}." if classifier else "\0"


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model: Any, meta: dict[str, Any], folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``model.json`` atomically into ``folder``."""
    from safetensors.torch import save

    folder = Path(folder)
    state = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / "model.safetensors", save(state))
    atomic_write_json(folder / "model.json", {"format": MODEL_FORMAT, **meta})
    return folder


def read_meta(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read ``model.json`` for a run folder, a ``model.json`` or a ``model.safetensors`` path."""
    path = Path(path)
    if path.is_dir():
        folder = path
    elif path.suffix in {".json", ".safetensors"}:
        folder = path.parent
    else:
        raise ModelError(f"{path}: not a classbench model; pass a run folder or its model.safetensors")
    meta_path, weights_path = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{folder}: no model.json + model.safetensors here; has training finished?")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{meta_path}: damaged model.json ({err}); re-run training or restore it") from err
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{meta_path}: not a {MODEL_FORMAT} file")
    return meta, weights_path


def load_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Build the architecture from ``model.json`` and load its safetensors weights (eval mode, fp32)."""
    import timm

    meta, weights_path = read_meta(path)
    model = timm.create_model(meta["architecture"], num_classes=len(meta["classes"]))
    state = read_state_dict(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(f"{weights_path}: weights do not fit {meta['architecture']} ({str(err)[:200]})") from err
    return model.eval().float(), meta
