"""Hardened decoding: every bad file becomes a BadSampleError naming it; odd-but-valid modes become RGB."""
from __future__ import annotations

import io
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from hairdiff.core.errors import BadSampleError
from hairdiff.extract.imageio import MAX_PIXELS, check_label_size, load_gray, load_rgb


def _noise(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_noise()).save(buf, fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: what a decompression bomb looks like to the decoder."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _raises_bad(path, *fragments) -> BadSampleError:
    with pytest.raises(BadSampleError) as e:
        load_rgb(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and ". Fix: " in msg
    for f in fragments:
        assert f in msg
    return e.value


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_zero_byte_file(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.write_bytes(b"")
    _raises_bad(p, "empty")


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("PNG", ".png")])
@pytest.mark.parametrize("keep", [0.05, 0.4, 0.8, 0.97])
def test_truncated_file(tmp_path, fmt, ext, keep):
    data = _encoded(fmt)
    p = tmp_path / f"cut{ext}"
    p.write_bytes(data[: int(len(data) * keep)])
    _raises_bad(p, "cannot decode")


def test_truncation_caught_even_if_someone_allowed_it(tmp_path, monkeypatch):
    data = _encoded("JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _raises_bad(p)


def test_not_an_image_missing_and_folder(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a JPEG")
    _raises_bad(p, "cannot decode")
    _raises_bad(tmp_path / "absent.png", "missing")
    (tmp_path / "dir.png").mkdir()
    _raises_bad(tmp_path / "dir.png", "folder")


@pytest.mark.parametrize("side", [15_000, 20_000])  # 225 M px (PIL warns) and 400 M px (PIL refuses)
def test_decompression_bomb(tmp_path, side):
    assert side * side > MAX_PIXELS
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(side, side))
    _raises_bad(p, "too large", "megapixels")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    p = tmp_path / "locked.png"
    Image.fromarray(_noise()).save(p)
    p.chmod(0)
    try:
        _raises_bad(p, "permission denied", "chmod")
    finally:
        p.chmod(0o644)


def test_cmyk_jpeg_to_rgb(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    a = load_rgb(p)
    assert a.shape == (12, 16, 3) and a.dtype == np.uint8
    assert a[..., 0].min() > 230 and a[..., 1:].max() < 25


def test_sixteen_bit_grey_png(tmp_path):
    v = np.array([[0, 257 * 100], [65535, 257 * 7]], np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(v).save(p)
    assert Image.open(p).mode.startswith("I")
    a = load_rgb(p)
    assert a.shape == (2, 2, 3)
    np.testing.assert_array_equal(a[..., 0], [[0, 100], [255, 7]])  # v / 257, not stretched per image
    np.testing.assert_array_equal(a[..., 0], a[..., 2])


def test_palette_png(tmp_path):
    img = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 250, 5] + [0] * (256 * 3 - 9))
    p = tmp_path / "pal.png"
    img.save(p)
    a = load_rgb(p)
    np.testing.assert_array_equal(a[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(a[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(a[1, 0], [0, 250, 5])
    # as a class map the palette indices are the values; as a picture, the colours' brightness
    np.testing.assert_array_equal(load_gray(p, palette_indices=True), [[0, 1], [2, 1]])
    assert load_gray(p)[0, 1] == Image.new("RGB", (1, 1), (200, 0, 0)).convert("L").getpixel((0, 0))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = (90, 60, 30)
    rgba[:2, :, 3] = 0  # fully transparent rows keep their stored colour
    rgba[2:, :, 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    a = load_rgb(p)
    assert a.shape == (4, 5, 3)
    assert (a == (90, 60, 30)).all()


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_greyscale_to_rgb(tmp_path, mode):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    img = Image.fromarray(g, "L") if mode == "L" else Image.merge("LA", [Image.fromarray(g), Image.new("L", (4, 3), 7)])
    p = tmp_path / f"{mode}.png"
    img.save(p)
    a = load_rgb(p)
    assert a.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(a[..., c], g)


def test_exif_orientation_applied(tmp_path):
    # stored 20 wide x 10 high, left half red; orientation 6 = shown rotated 90 degrees clockwise
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)
    stored[:, 10:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    img.save(p, exif=exif, quality=95)
    a = load_rgb(p)
    assert a.shape == (20, 10, 3)  # upright: 10 wide, 20 high
    assert a[:8, :, 0].min() > 200 and a[12:, :, 2].min() > 200  # the left (red) half is now on top


def test_masks_read_as_0_255(tmp_path):
    bits = np.zeros((6, 8), bool)
    bits[:2] = True
    Image.fromarray(bits).convert("1").save(tmp_path / "m.pbm")
    np.testing.assert_array_equal(load_gray(tmp_path / "m.pbm"), bits.astype(np.uint8) * 255)
    three = np.repeat((bits.astype(np.uint8) * 255)[..., None], 3, axis=2)
    Image.fromarray(three).save(tmp_path / "m3.png")
    np.testing.assert_array_equal(load_gray(tmp_path / "m3.png"), bits.astype(np.uint8) * 255)
    (tmp_path / "m0.png").write_bytes(b"")
    with pytest.raises(BadSampleError, match="empty"):
        load_gray(tmp_path / "m0.png")


def test_label_size_rule():
    img = np.zeros((1024, 1024, 3), np.uint8)
    check_label_size(np.zeros((512, 512), np.uint8), img, "m.png")  # CelebAMask-HQ: half resolution
    check_label_size(np.zeros((384, 512), np.uint8), np.zeros((767, 1023, 3), np.uint8), "m.png")  # rounding
    with pytest.raises(BadSampleError) as e:
        check_label_size(np.zeros((512, 400), np.uint8), img, "anno/00001_hair.png")
    assert str(e.value).startswith("anno/00001_hair.png: the mask is 400x512 but its image is 1024x1024")


def test_bad_sample_error_survives_pickling():
    e = BadSampleError("/data/x.jpg", "cannot decode", "re-export it")
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) == "/data/x.jpg: cannot decode. Fix: re-export it"
    assert (e2.path, e2.reason, e2.fix) == ("/data/x.jpg", "cannot decode", "re-export it")
