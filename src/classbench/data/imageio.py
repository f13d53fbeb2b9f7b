"""Decode one image file into an 8-bit RGB ``PIL.Image``, or fail with a clear ``ImageLoadError``.

* EXIF orientation is applied (a phone photo tagged "rotate 90" comes back upright).
* Every mode becomes RGB: CMYK, 1, L, P, YCbCr, LAB, HSV convert directly; LA, PA, RGBA and
  palette images with a transparent colour are composited on a white background; 16/32-bit
  integer (``I;16``, ``I``) and float (``F``) images are scaled to 0..255 (see ``_scale_to_uint8``).
* GIF / multi-page TIFF / animated WebP: the first frame.
* Decompression bombs: images over ``max_pixels`` fail with a message that names the limit. The
  default is ``DEFAULT_MAX_PIXELS`` (2 x Pillow's warning limit = Pillow's own hard limit) or the
  ``CLASSBENCH_MAX_PIXELS`` environment variable. A limit above Pillow's hard limit also raises
  ``PIL.Image.MAX_IMAGE_PIXELS`` (process-wide; only ever raised, and only when asked for).
* ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set: a truncated file is an error, not grey pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from classbench.errors import ImageLoadError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # 178,956,970 px, e.g. 13,377 x 13,377
FIX = "re-export it or remove it"
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_DIRECT_MODES = {"1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
# classbench enforces its own limit (``max_pixels``), so Pillow's softer warning is noise. A filter
# set once here, not per call: ``warnings.catch_warnings`` is not thread-safe and check() uses threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit to use: the argument, else ``$CLASSBENCH_MAX_PIXELS``, else the default."""
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get("CLASSBENCH_MAX_PIXELS", "").strip().replace("_", "")
    return int(env) if env.isdigit() else DEFAULT_MAX_PIXELS


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Load ``path`` as an RGB image (EXIF-oriented, alpha on white); every failure is an ``ImageLoadError``."""
    return decode_image(path, max_pixels=max_pixels)[0]


def decode_image(
    path: str | os.PathLike,
    data: bytes | None = None,
    max_pixels: int | None = None,
    draft: tuple[int, int] | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode fully (truncation is detected) and return ``(rgb_image, (width, height))``.

    ``data`` lets a caller that already read the bytes (e.g. to hash them) avoid a second read.
    ``draft`` asks JPEG decoding to scale down by 2/4/8 while decoding (fast thumbnails); the
    returned size is still the full, EXIF-oriented size of the stored image.
    """
    limit = resolve_max_pixels(max_pixels)
    if data is None:
        data = read_image_bytes(path)
    elif not data:
        raise ImageLoadError(path, f"zero-byte file; {FIX}")
    try:
        return _decode(io.BytesIO(data), limit, draft)
    except ImageLoadError as err:  # raised inside _decode without the path
        raise ImageLoadError(path, err.reason) from err
    except Image.DecompressionBombError as err:
        raise ImageLoadError(path, _too_large(None, limit)) from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(path, f"not an image (cannot identify format); {FIX}") from err
    except MemoryError as err:
        raise ImageLoadError(path, "out of memory while decoding; downscale it") from err
    except Exception as err:  # Pillow plugins raise many types (struct.error, ...) on bad data
        raise ImageLoadError(path, f"{_reason(err)}; {FIX}") from err


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; a missing, unreadable or empty file -> ``ImageLoadError``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise ImageLoadError(path, "file not found; check the path (was it moved or deleted?)") from err
    except PermissionError as err:
        raise ImageLoadError(path, "permission denied; make the file readable") from err
    except IsADirectoryError as err:
        raise ImageLoadError(path, "is a folder, not an image file") from err
    except OSError as err:
        raise ImageLoadError(path, f"cannot read file ({err.strerror or err}); check the disk") from err
    if not data:
        raise ImageLoadError(path, f"zero-byte file; {FIX}")
    return data


def _decode(fh: io.BytesIO, limit: int, draft: tuple[int, int] | None) -> tuple[Image.Image, tuple[int, int]]:
    _raise_pillow_limit(limit)
    img = Image.open(fh)
    width, height = img.size
    if width * height > limit:
        raise ImageLoadError("", _too_large(width * height, limit))
    if draft is not None and img.format == "JPEG":
        img.draft(None, draft)
    img.load()  # full decode: raises on truncated data
    loaded = img.size
    oriented = _exif_transpose(img)
    if oriented.size != loaded:  # EXIF rotation by 90/270 degrees swaps width and height
        width, height = height, width
    return to_rgb(oriented), (width, height)


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken metadata must not make a readable image unusable
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        return _on_white(img.convert("RGBA"))
    if mode in _ALPHA_MODES:
        return _on_white(img.convert("RGBA"))
    if mode in _DIRECT_MODES:
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode), "L").convert("RGB")
    return img.convert("RGB")


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map high-bit-depth values to 0..255 instead of clipping them (which turns 16-bit images white).

    16-bit modes use the fixed 0..65535 range; ``I`` uses 0..255 or 0..65535 when the values fit,
    else their min..max; ``F`` uses 0..1 when the values fit, else their min..max.
    """
    arr = arr.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    elif mode == "I" and lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    elif mode == "I" and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    scaled = (np.nan_to_num(arr, nan=lo) - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_DCT = np.cos(np.pi * np.outer(np.arange(32), 2 * np.arange(32) + 1) / 64)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash: DCT of a 32x32 grayscale thumbnail, low 8x8 coefficients vs their median."""
    thumb = img.convert("L").resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)
    coeffs = (_DCT @ np.asarray(thumb, dtype=np.float64) @ _DCT.T)[:8, :8]
    bits = (coeffs > np.median(coeffs)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _too_large(pixels: int | None, limit: int) -> str:
    size = f"{pixels:,} pixels, " if pixels else ""
    return (
        f"image too large ({size}over the limit of {limit:,} pixels that guards against decompression bombs); "
        "downscale it, or raise the limit with CLASSBENCH_MAX_PIXELS=<pixels>"
    )


def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if "truncated" in text.lower() or isinstance(err, EOFError):
        return "truncated image file"
    return f"corrupt or unreadable image ({text.splitlines()[0][:120]})"


def _raise_pillow_limit(limit: int) -> None:
    """Pillow refuses images over 2 x ``Image.MAX_IMAGE_PIXELS`` before we see them; follow a larger limit."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and limit > 2 * current:
        Image.MAX_IMAGE_PIXELS = limit // 2 + 1
