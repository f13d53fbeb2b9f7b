"""Hugging Face Hub model folders: a trained run in the layout timm loads as a pretrained model.

A folder from :func:`export_hf` holds

* ``config.json``: timm's model config (``architecture``, ``num_classes``, ``label_names`` and ``pretrained_cfg``
  with the run's ``input_size``, ``mean``, ``std``; ``crop_pct`` 1.0: classbench resizes the whole image to the
  square input, it never crops), so ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` (or
  ``"local-dir:FOLDER"`` with timm >= 1.0.16) builds the architecture with the run's head and loads its weights;
* ``model.safetensors``: the run's weights (timm state dict, fp32);
* ``model.json``: classbench's metadata (classes, size, normalisation, temperature), so the folder is also a
  classbench model folder that ``classbench.load(FOLDER)`` reads;
* ``README.md``: a model card (front matter for the Hub, the classes, the evaluation table of the run's
  ``eval.json`` when it has one, how to load it); every name from the data is escaped.

:func:`push` exports and uploads one (``HfApi.create_repo`` + ``upload_folder``); :func:`resolve` turns
``hf-hub:ORG/NAME[@REVISION]`` into a local folder (``snapshot_download``; only JSON, safetensors and the card are
fetched, never a pickle). ``huggingface_hub`` is needed only by those two: ``pip install "classbench[hub]"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from classbench.errors import ClassbenchError, ModelError, first_line, import_optional
from classbench.formatting import METRIC_LABELS, md
from classbench.intervals import interval_text
from classbench.runs import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

HUB_PREFIX = "hf-hub:"
HUB_FILES = ["config.json", "model.json", "model.safetensors", "README.md"]
_SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture", "tag",
                "label_names", "label_descriptions", "label_offset", "test_input_size", "test_crop_pct",
                "test_pool_size", "pool_size", "license", "description", "origin_url", "paper_ids", "paper_name",
                "notes")


def is_hub_spec(spec: str | os.PathLike | None) -> bool:
    """True for ``hf-hub:ORG/NAME`` (optionally ``@REVISION``)."""
    return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def timm_config(meta: dict[str, Any], model: Any) -> dict[str, Any]:
    """timm's ``config.json`` for a classbench model: the architecture's own pretrained config without its source
    and ImageNet labels, with the run's classes, input size and normalisation."""
    base = dict(getattr(model, "pretrained_cfg", None) or {})
    size = int(meta["img_size"])
    cfg = {k: v for k, v in base.items() if k not in _SOURCE_KEYS and v is not None}
    cfg.update(input_size=[3, size, size], mean=[float(x) for x in meta["mean"]], std=[float(x) for x in meta["std"]],
               interpolation="bilinear", crop_pct=1.0, crop_mode="center", num_classes=len(meta["classes"]),
               custom_load=False)
    config: dict[str, Any] = {"architecture": meta["architecture"], "num_classes": len(meta["classes"]),
                              "num_features": int(getattr(model, "num_features", 0) or 0),
                              "label_names": list(meta["classes"]), "pretrained_cfg": cfg}
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", pool)
    if isinstance(pool_type, str) and pool_type:
        config["global_pool"] = pool_type
    return config


def export_hf(run_dir: str | os.PathLike, out_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write ``run_dir``'s model as a Hub model folder into ``out_dir`` (see the module docstring); ``repo_id``
    names the repository in the card's usage lines (``ORG/NAME`` when None). Returns ``out_dir``.

    Files are written atomically; other files in ``out_dir`` are left alone. Raises ``ModelError`` when
    ``run_dir`` holds no finished model."""
    from safetensors.torch import save

    from classbench.models import load_model

    model, meta = load_model(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.detach().contiguous()
             for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", save(state, metadata={"format": "pt"}))
    atomic_write_json(out / "config.json", timm_config(meta, model))
    atomic_write_json(out / "model.json", _portable(meta))
    eval_path = Path(run_dir) / "eval.json"
    evaluation = read_json(eval_path) if eval_path.is_file() else None
    atomic_write_text(out / "README.md", model_card(meta, evaluation, repo_id))
    return out


CARD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "worst_class_recall", "ece", "nll")


def model_card(meta: dict[str, Any], evaluation: dict[str, Any] | None, repo_id: str | None = None) -> str:
    """The README.md of a Hub model folder: front matter, what the model is, its classes, the evaluation table
    (from ``eval.json``; a line saying there is none otherwise) and how to load it with timm and classbench."""
    import yaml

    from classbench.calibration import stored_temperature

    repo = repo_id or "ORG/NAME"
    size, n = int(meta["img_size"]), len(meta["classes"])
    front = yaml.safe_dump({"library_name": "timm", "pipeline_tag": "image-classification",
                            "tags": ["image-classification", "timm", "classbench"]}, sort_keys=False)
    lines = [f"---\n{front}---", f"# {md(repo_id or meta['architecture'])}", "",
             f"A `{meta['architecture']}` image classifier for {n} classes, trained with classbench "
             f"({md(meta.get('num_params', '?'))} parameters, {size}x{size} px input, checkpoint of epoch "
             f"{md(meta.get('epoch', '?'))} chosen on {md(meta.get('monitor', 'validation'))}).", "",
             "## Classes", "", ", ".join(md(c) for c in meta["classes"]), ""]
    lines += _eval_section(evaluation)
    lines += ["## Use", "", "```python", "import timm", "",
              f'model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()', "```", "",
              f"Preprocessing: resize the whole image to {size}x{size} (bilinear, no crop), scale to [0, 1] and "
              f"normalise with mean {[round(x, 4) for x in meta['mean']]} and std {[round(x, 4) for x in meta['std']]}; "
              f"probabilities are softmax(logits / {stored_temperature(meta):.4g}) (the calibrated "
              "temperature). With classbench: `classbench predict` on this folder, or start a new training from "
              f"these weights with `classbench train DATA --weights hf-hub:{repo}`.", ""]
    return "\n".join(lines)


def _eval_section(evaluation: dict[str, Any] | None) -> list[str]:
    """The card's evaluation: headline metrics with their 95% intervals, then per class (``eval.json``)."""
    if not evaluation:
        return ["## Evaluation", "", "No evaluation was run before the export (`classbench evaluate RUN`, then export "
                "again, puts the test-split table here).", ""]
    metrics, ci = evaluation.get("metrics", {}), evaluation.get("ci95", {})
    lines = ["## Evaluation", "", f"On the run's {md(evaluation.get('split', 'test'))} split "
             f"({md(evaluation.get('n_images', '?'))} images{', with TTA' if evaluation.get('tta') else ''}), "
             "never used to choose the checkpoint:", "", "| metric | value | 95% CI |", "|---|---|---|"]
    for key in CARD_METRICS:
        if isinstance(metrics.get(key), (int, float)):
            label = METRIC_LABELS[key]
            interval = interval_text(ci.get(key), 3, "–")
            extra = f" ({md(metrics['worst_class'])})" if key == "worst_class_recall" and metrics.get("worst_class") else ""
            lines.append(f"| {label}{extra} | {metrics[key]:.3f} | {interval} |")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in evaluation.get("per_class", []):
        values = " | ".join(f"{row[k]:.3f}" if isinstance(row.get(k), (int, float)) else "" for k in
                            ("precision", "recall", "f1"))
        lines.append(f"| {md(row.get('class', ''))} | {values} | {md(row.get('support', ''))} |")
    lines += [""] + [f"- {md(w)}" for w in evaluation.get("warnings", [])] + [""]
    return lines


def _portable(meta: dict[str, Any]) -> dict[str, Any]:
    """``model.json`` for sharing: where the starting weights came from without a local path."""
    shared = dict(meta)
    source = shared.get("pretrained")
    if source and source != "hub" and not is_hub_spec(source):
        shared["pretrained"] = f"local file {Path(str(source)).name}"
    return shared


def push(run_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
         out_dir: str | os.PathLike | None = None) -> str:
    """Export ``run_dir`` (into ``out_dir``, default ``RUN/hf``) and upload the folder to the Hub model repository
    ``repo_id`` (created when missing; ``private`` applies to a new one). Returns the repository's URL.

    No token (none given, none saved by ``hf auth login``, no ``HF_TOKEN``), or a failed create/upload (no
    network, a repository the token cannot write): one-line ``ClassbenchError``; the local export is kept."""
    hub = import_optional("huggingface_hub", "hub", "the Hugging Face Hub")
    if "/" not in repo_id.strip("/"):
        raise ClassbenchError(f"{repo_id!r}: give the repository as ORG/NAME (or USER/NAME)")
    folder = export_hf(run_dir, Path(out_dir) if out_dir else Path(run_dir) / "hf", repo_id=repo_id)
    token = token or hub.get_token()
    if not token:
        raise ClassbenchError(f"no Hugging Face token: run `hf auth login` or set HF_TOKEN (or pass --token); "
                              f"the export is kept in {folder}")
    api = hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), allow_patterns=HUB_FILES,
                          commit_message="classbench: upload model folder")
    except Exception as err:  # HTTP errors (401/403/404), no network: one line, the export stays
        first = first_line(err)
        raise ClassbenchError(f"push to {repo_id} failed ({type(err).__name__}: {first}); check that your token can "
                              f"write there; the export is kept in {folder}") from err
    return str(url) if url else f"https://huggingface.co/{repo_id}"


def resolve(spec: str | os.PathLike, token: str | None = None) -> Path:
    """``hf-hub:ORG/NAME[@REVISION]`` -> the local folder of its snapshot (``config.json``, ``model.json``,
    ``*.safetensors``, ``README.md``; downloaded once into the Hugging Face cache). Anything else is returned as
    a ``Path`` unchanged. A repository without ``model.safetensors`` or that cannot be fetched: ``ModelError``."""
    if not is_hub_spec(spec):
        return Path(spec)
    repo, _, revision = str(spec)[len(HUB_PREFIX):].partition("@")
    hub = import_optional("huggingface_hub", "hub", "the Hugging Face Hub")
    try:
        folder = Path(hub.snapshot_download(repo_id=repo, revision=revision or None, token=token,
                                            allow_patterns=["*.json", "*.safetensors", "README.md"]))
    except Exception as err:  # not found, gated, no network: one line
        first = first_line(err)
        raise ModelError(f"{spec}: could not fetch it from the Hugging Face Hub ({type(err).__name__}: {first})") from err
    if not (folder / "model.safetensors").is_file():
        raise ModelError(f"{spec}: the repository has no model.safetensors (classbench never loads pickled weights)")
    return folder
