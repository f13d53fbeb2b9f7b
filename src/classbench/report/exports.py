"""The run report's "Export parity" rows, read from the run's ``export.json`` (written by ``classbench export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _percent(value: Any) -> str:
    """A fraction from export.json as ``formatting.percent`` shows it; ``-`` when it is not a number."""
    from classbench.formatting import percent

    return percent(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def export_rows(data: Any, run_dir: Path | None) -> list[dict[str, Any]]:
    """One row per export variant of ``export.json`` (``data``; anything else gives no rows): variant, file,
    precision, size, overall and per-class agreement (worst first), macro-F1 of PyTorch and the export, whether it
    is under its ``min_agreement`` and ``stale``: why it no longer matches the run's weights
    (``inference.stale_reason``), None when it does or the run has no weights to compare."""
    from classbench.exporting.render import per_class_line
    from classbench.inference import stale_reason
    from classbench.runs import file_sha256

    if not isinstance(data, dict):
        return []
    weights = run_dir / "model.safetensors" if run_dir is not None else None
    sha = file_sha256(weights) if weights is not None and weights.is_file() else None
    rows = []
    for variant, entry in sorted(data.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("parity"), dict):
            continue
        parity = entry["parity"]
        f1 = [parity.get("macro_f1_torch"), parity.get("macro_f1_export")]
        rows.append({
            "variant": str(variant), "file": str(entry.get("file", "")), "precision": str(entry.get("precision", "")),
            "runtime_precision": entry.get("runtime_precision"),
            "size_mb": (entry.get("size_bytes") or 0) / 1e6, "agreement": _percent(parity.get("top1_agreement")),
            "images": f"{parity.get('samples', '?')} {parity.get('images', '')}".strip(),
            "per_class": per_class_line({"per_class": [r for r in parity.get("per_class") or [] if isinstance(r, dict)]}),
            "macro_f1": " / ".join(f"{x:.3f}" for x in f1) if all(isinstance(x, (int, float)) for x in f1) else "-",
            "below": bool(parity.get("below_min_agreement")), "min_agreement": _percent(parity.get("min_agreement")),
            "stale": stale_reason(entry, sha) if sha is not None else None,
        })
    return rows
