"""Image sheets, drawn with Pillow and written atomically as PNG.

* ``contact_sheet(items, path, ..., heatmaps=None)``: a grid of captioned thumbnails (evaluate's misclassified
  images; the label check's images to look at). Given ``heatmaps``, a tile's class activation map is drawn as an
  overlay under its image: every row holding a heatmap grows by one thumbnail (the heatmap row).
* ``heatmap_pair(image, heatmap, lines, path)``: one image and its overlay side by side, caption lines below
  (``classbench explain``'s output).
* ``heat_overlay(image, heatmap)``: a map (float, any ``h x w``, values in [0, 1]) stretched over the whole image
  and blended over it in the jet colours (red = strongest evidence). Stretching is exact for classbench maps:
  the model sees the whole image squashed to a square, so the map's corners are the image's corners.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from classbench.formatting import finite
from classbench.report.style import VERMILLION
from classbench.runs import atomic_write_bytes

HEAT_CMAP = "jet"
HEAT_ALPHA = 0.5
GREY = (170, 170, 170)


@lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (OSError, ImportError):  # pragma: no cover - no FreeType or no font file
        return ImageFont.load_default()


def _thumbnail(path: Any, size: int) -> Any:
    """The image fitted into ``size`` x ``size`` (decoded like training does), or None when it cannot be read."""
    from PIL import Image, ImageOps

    from classbench.data.imageio import decode_image
    from classbench.errors import ImageLoadError

    try:
        im = decode_image(path, draft=(size, size))[0]
    except ImageLoadError:  # unreadable/truncated/not an image/too large: a grey tile
        return None
    method = Image.Resampling.NEAREST if max(im.size) < size / 2 else Image.Resampling.LANCZOS
    return ImageOps.contain(im, (size, size), method)


def _fit(draw: Any, prefix: str, name: str, suffix: str, font: Any, width: int) -> str:
    """``prefix + name + suffix`` with ``name`` shortened (ellipsis) until it fits ``width`` pixels."""
    text = prefix + name + suffix
    while draw.textlength(text, font=font) > width and name:
        name = name[:-1]
        text = prefix + name + "\u2026" + suffix
    return text


def heat_overlay(image: Any, heatmap: Any, alpha: float = HEAT_ALPHA) -> Any:
    """A new RGB PIL image: ``heatmap`` (float ``[h, w]`` in [0, 1]) resized to ``image`` and blended over it."""
    import matplotlib
    from PIL import Image

    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    big = np.asarray(Image.fromarray(heat).resize(image.size, Image.Resampling.BILINEAR))
    colours = matplotlib.colormaps[HEAT_CMAP](np.clip(big, 0.0, 1.0))[..., :3] * 255.0
    blend = (1.0 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colours
    return Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8))


def _paste_centred(sheet: Any, draw: Any, img: Any, x0: int, y0: int, inner: int, thumb: int, font: Any) -> None:
    """``img`` centred in the ``inner x thumb`` box at (x0, y0); None: a grey "unreadable" square."""
    if img is None:
        draw.rectangle([x0 + (inner - thumb) // 2, y0, x0 + (inner + thumb) // 2 - 1, y0 + thumb - 1], fill=GREY)
        draw.text((x0 + inner // 2, y0 + thumb // 2), "unreadable", fill="white", font=font, anchor="mm")
    else:
        sheet.paste(img, (x0 + (inner - img.width) // 2, y0 + (thumb - img.height) // 2))


def contact_sheet(items: Sequence[tuple[Any, str, str, float]], path: str | Path, thumb: int = 96,
                  cols: int = 6, captions: tuple[str, str] = ("true", "pred"), empty: str = "no misclassified images",
                  heatmaps: Sequence[Any] | None = None) -> Path:
    """PNG grid of (image path, class A, class B, probability) tiles captioned ``captions`` (by default the
    true and the predicted class of a mistake; the label check passes ("given", "suggested")).

    ``heatmaps[k]`` (a float map in [0, 1], or None; the list may be shorter than ``items``) is overlaid on tile
    k's image and drawn under it; rows without any heatmap keep their height (no heatmaps: the plain sheet)."""
    from PIL import Image, ImageDraw

    font = _font(max(9, thumb // 9))
    line, pad = int(getattr(font, "size", 11)) + 3, 5
    tile_w, tile_h, heat_h = max(thumb, 128) + 2 * pad, thumb + 2 * line + 3 * pad, thumb + pad
    cols = max(1, min(cols, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    maps = [*list(heatmaps or [])[: len(items)], *[None] * len(items)][: len(items)]
    heat_rows = [any(m is not None for m in maps[r * cols:(r + 1) * cols]) for r in range(rows)]
    tops = np.cumsum([0] + [tile_h + (heat_h if h else 0) for h in heat_rows]).tolist()
    sheet = Image.new("RGB", (cols * tile_w, int(tops[-1])), "white")
    draw = ImageDraw.Draw(sheet)
    if not items:
        draw.text((pad, pad), empty, fill="black", font=font)
    inner = tile_w - 2 * pad
    for k, (img_path, true, pred, prob) in enumerate(items):
        x0, y0 = (k % cols) * tile_w + pad, int(tops[k // cols]) + pad
        img = _thumbnail(img_path, thumb)
        _paste_centred(sheet, draw, img, x0, y0, inner, thumb, font)
        if maps[k] is not None and img is not None:
            _paste_centred(sheet, draw, heat_overlay(img, maps[k]), x0, y0 + heat_h, inner, thumb, font)
        p = finite(prob)
        y_text = y0 + thumb + pad + (heat_h if heat_rows[k // cols] else 0)
        draw.text((x0, y_text), _fit(draw, f"{captions[0]}: ", str(true), "", font, inner), fill="black", font=font)
        draw.text((x0, y_text + line), _fit(draw, f"{captions[1]}: ", str(pred), "" if p is None else f" (p={p:.2f})",
                                            font, inner), fill=VERMILLION, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def heatmap_pair(image: Any, heatmap: Any, lines: Sequence[tuple[str, str, str, str]], path: str | Path,
                 size: int = 224) -> Path:
    """PNG: ``image`` (a path; None or unreadable: grey) and ``heatmap`` over it side by side, each fitted in
    ``size`` px, then one caption line per ``(prefix, name, suffix, colour)`` (``name`` shortened to fit)."""
    from PIL import Image, ImageDraw

    font, pad = _font(13), 6
    line = int(getattr(font, "size", 13)) + 5
    img = _thumbnail(image, size) if image is not None else None
    img = img if img is not None else Image.new("RGB", (size, size), GREY)
    sheet = Image.new("RGB", (2 * size + 3 * pad, size + 2 * pad + len(lines) * line), "white")
    dx, dy = (size - img.width) // 2, pad + (size - img.height) // 2
    sheet.paste(img, (pad + dx, dy))
    sheet.paste(heat_overlay(img, heatmap), (2 * pad + size + dx, dy))
    draw = ImageDraw.Draw(sheet)
    for k, (prefix, name, suffix, colour) in enumerate(lines):
        text = _fit(draw, prefix, str(name), suffix, font, 2 * size + pad)
        draw.text((pad, size + 2 * pad + k * line), text, fill=colour, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
