"""``classbench export``'s terminal output: what was written and its parity, in lines that wrap within 80 columns."""

from __future__ import annotations

import textwrap
from typing import Any

from classbench import formatting


def percent(value: float | None) -> str:
    """``formatting.percent``; ``-`` for None."""
    return "-" if value is None else formatting.percent(value)


def per_class_line(parity: dict[str, Any]) -> str:
    """``boat 93.3% (28/30), car 100% (30/30), ...``: worst first, so the class a user must look at comes first."""
    rows = [r for r in parity.get("per_class", []) if r.get("agreement") is not None]
    rows.sort(key=lambda r: (r["agreement"], r["class"]))
    return ", ".join(f"{r['class']} {percent(r['agreement'])} ({round(r['agreement'] * r['images'])}/{r['images']})"
                     for r in rows)


def parity_lines(parity: dict[str, Any]) -> list[str]:
    """The parity report as plain text lines (no markup): agreement, per class, macro-F1, probability difference."""
    images = parity["images"]
    source = f"{parity['samples']} {images} images" if images != "random" else f"{parity['samples']} random images"
    limit = f" (limit {percent(parity['min_agreement'])})" if parity.get("enforced") else ""
    lines = [f"top-1 agreement with PyTorch fp32 on {source}: {percent(parity['top1_agreement'])}{limit}"]
    if parity.get("available", 0) > parity["samples"] + parity.get("unreadable", 0):
        lines.append(f"  (a seeded sample of the {parity['available']} {images} images)")
    if parity.get("unreadable"):
        lines.append(f"  ({parity['unreadable']} unreadable images left out)")
    by = "true class" if parity.get("grouped_by") == "label" else "PyTorch's predicted class"
    lines.append(f"per {by}: {per_class_line(parity)}")
    if "macro_f1_torch" in parity:
        lines.append(f"macro-F1 on these images: PyTorch {parity['macro_f1_torch']:.3f}, "
                     f"export {parity['macro_f1_export']:.3f}")
    tol = f" (limit {parity['tolerance']:.0e})" if parity.get("tolerance") else ""
    lines.append(f"max |Δp| {parity['max_abs_prob_diff']:.1e}{tol}, max |Δlogit| {parity['max_abs_logit_diff']:.1e}")
    return lines


def render_export(result: Any, console: Any) -> None:
    """Print what ``export`` wrote (an ``ExportResult``), the graph's IO and the parity report."""
    from rich.markup import escape

    shape = "x".join(str(d) for d in result.input_shape) or "?"
    how = f"{result.exporter} exporter{f', opset {result.opset}' if result.opset else ''}"
    console.print(f"[bold green]Exported[/] {escape(str(result.path))} ({result.variant}, "
                  f"{result.size_bytes / 1e6:.1f} MB, {formatting.duration(result.seconds)})")
    console.print(f"  input  [bold]{result.input_name}[/] {shape} float32, NCHW, normalised")
    console.print(f"  output [bold]{result.output_name}[/] (probabilities = softmax(logits / temperature))")
    console.print(f"  from the fp32 ONNX graph ({how})")
    if result.runtime_precision:
        console.print(f"  OpenVINO runs it with inference precision {result.runtime_precision} here "
                      f"{'(int8 layers in int8) ' if result.precision == 'int8' else ''}(parity measured so)")
    if result.calibration:
        cal = result.calibration
        console.print(f"  INT8: {escape(cal['description'])}; calibrated on {cal['images']} {cal['split']} images")
    width = max(40, (console.width or 80) - 1)
    for line in parity_lines(result.parity):
        console.print(escape(textwrap.fill(line, width, initial_indent="  ", subsequent_indent="      ")))
    if result.parity.get("below_min_agreement"):
        console.print(f"  [yellow]agreement is under {percent(result.parity['min_agreement'])}:[/] check the "
                      "classes above before deploying this file")
    for note in result.notes:
        console.print(f"  [yellow]note:[/] fell back after {escape(note)}", soft_wrap=True)
    if result.export_json:
        console.print(f"  recorded in {escape(str(result.export_json))}")
