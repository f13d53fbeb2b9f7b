"""load_image on real files: every mode to RGB, EXIF, and every failure as a clear ImageLoadError."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classbench.data.imageio import IMAGE_EXTENSIONS, decode_image, is_image_file, load_image, phash
from classbench.errors import ClassbenchError, ImageLoadError
from tests.conftest import noise_array, write_image


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


@pytest.mark.parametrize("name", ["a.jpg", "b.JPEG", "c.png", "d.bmp", "e.tif", "f.TIFF", "g.webp"])
def test_supported_types_load_as_rgb(tmp_path, name):
    path = write_image(tmp_path / name, seed=1, size=(30, 20))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (30, 20)
    assert is_image_file(path)


def test_extensions_are_the_documented_set():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} == IMAGE_EXTENSIONS
    assert not is_image_file("notes.txt")


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    px = _pixels(load_image(tmp_path / "anim.gif"))
    assert px[0, 0, 0] > 200 and px[0, 0, 2] < 50


def test_cmyk_jpeg(tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    r, g, b = _pixels(load_image(tmp_path / "cmyk.jpg"))[8, 8].astype(int)
    assert r > 150 and g < 80 and b < 80


def test_16bit_png_is_scaled_not_white(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    px = _pixels(load_image(tmp_path / "g16.png"))
    assert px.min() == 0 and px.max() == 255 and 100 < px.mean() < 155
    assert (px[..., 0] == px[..., 1]).all()


@pytest.mark.parametrize("mode,values", [("F", np.linspace(0, 1, 256)), ("I", np.arange(256) * 1000)])
def test_float_and_int32_tiff_scaled(tmp_path, mode, values):
    arr = values.reshape(16, 16).astype(np.float32 if mode == "F" else np.int32)
    Image.fromarray(arr).save(tmp_path / "x.tif")
    assert Image.open(tmp_path / "x.tif").mode == mode
    px = _pixels(load_image(tmp_path / "x.tif"))
    assert px.min() == 0 and px.max() == 255


def test_rgba_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.save(tmp_path / "rgba.png")
    px = _pixels(load_image(tmp_path / "rgba.png"))
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[4, 4]) == (255, 0, 0)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.save(tmp_path / "p.png", transparency=0)
    px = _pixels(load_image(tmp_path / "p.png"))
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[3, 3]) == (0, 128, 0)


def test_la_and_l_and_1bit(tmp_path):
    la = Image.new("LA", (8, 8), (50, 255))
    la.putpixel((0, 0), (0, 0))
    la.save(tmp_path / "la.png")
    px = _pixels(load_image(tmp_path / "la.png"))
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[5, 5]) == (50, 50, 50)
    Image.new("L", (8, 8), 77).save(tmp_path / "l.png")
    assert tuple(_pixels(load_image(tmp_path / "l.png"))[1, 1]) == (77, 77, 77)
    Image.new("1", (8, 8), 1).save(tmp_path / "bw.bmp")
    assert tuple(_pixels(load_image(tmp_path / "bw.bmp"))[1, 1]) == (255, 255, 255)


def test_exif_orientation_6_swaps_width_and_height(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(noise_array(3, (40, 20))).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)
    img, size = decode_image(tmp_path / "rot.jpg", draft=(8, 8))
    assert size == (20, 40) and img.size[0] < img.size[1]


def _assert_bad(path, reason):
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert info.value.path == str(path) and isinstance(info.value, ClassbenchError)
    return message


def test_truncated_jpeg_and_png(tmp_path):
    for name in ("t.jpg", "t.png"):
        good = write_image(tmp_path / f"good_{name}", seed=4, size=(64, 64))
        data = good.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        message = _assert_bad(tmp_path / name, "truncated image file")
        assert "re-export it or remove it" in message
        assert load_image(good).size == (64, 64)  # the good file still loads
        with pytest.raises(ImageLoadError, match="truncated"):
            decode_image(tmp_path / name, draft=(8, 8))


def test_zero_byte_not_an_image_corrupt_missing(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    _assert_bad(tmp_path / "zero.png", "zero-byte file")
    (tmp_path / "notes.jpg").write_text("this is text, not a JPEG")
    _assert_bad(tmp_path / "notes.jpg", "not an image (cannot identify format)")
    head = write_image(tmp_path / "src.png", seed=5).read_bytes()[:60]
    (tmp_path / "corrupt.png").write_bytes(head + bytes(range(256)) * 4)
    _assert_bad(tmp_path / "corrupt.png", "re-export it or remove it")
    _assert_bad(tmp_path / "missing.png", "file not found")
    assert load_image(tmp_path / "src.png").mode == "RGB"


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", seed=6, size=(100, 100))
    with pytest.raises(ImageLoadError) as info:
        load_image(path, max_pixels=5_000)
    assert str(path) in str(info.value) and "10,000 pixels" in str(info.value)
    assert "CLASSBENCH_MAX_PIXELS" in str(info.value)
    monkeypatch.setenv("CLASSBENCH_MAX_PIXELS", "5000")
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)
    assert load_image(path, max_pixels=20_000).size == (100, 100)


def test_phash_robust_to_resize_but_separates_images(tmp_path):
    base = Image.fromarray(noise_array(7, (64, 64))).resize((16, 16)).resize((64, 64))
    h1 = phash(base)
    h2 = phash(base.resize((48, 48)))
    h3 = phash(Image.fromarray(noise_array(8, (64, 64))).resize((16, 16)).resize((64, 64)))
    assert (h1 ^ h2).bit_count() <= 4
    assert (h1 ^ h3).bit_count() > 10
