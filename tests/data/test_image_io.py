"""read_image / image_size: formats, channel order, bit depth, EXIF, corrupt files, size guard."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from sppdet.data.image_io import image_size, read_image
from sppdet.errors import DataError


def _write(path, img, params=()):
    assert cv2.imwrite(str(path), img, list(params))
    return path


def test_rgb_order_and_png_exact(tmp_path):
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    img = read_image(_write(tmp_path / "a.png", bgr))
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]
    assert img[0, 0].tolist() == [30, 20, 10]
    assert image_size(tmp_path / "a.png") == (7, 5)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    img = read_image(_write(tmp_path / "g.png", gray))
    assert img.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_rgba_alpha_is_dropped_colour_kept(tmp_path):
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., :3] = (0, 0, 200)  # red in BGR
    bgra[..., 3] = 0  # fully transparent: colour still kept (documented choice)
    img = read_image(_write(tmp_path / "rgba.png", bgra))
    assert img.shape == (4, 4, 3)
    assert img[0, 0].tolist() == [200, 0, 0]


def test_16bit_scaled_to_full_8bit_range(tmp_path):
    gray16 = np.array([[0, 257 * 100, 65535, 257 * 7 + 129]], np.uint16)
    img = read_image(_write(tmp_path / "g16.png", gray16))
    assert img.dtype == np.uint8
    assert img[0, :, 0].tolist() == [0, 100, 255, 8]
    rgb16 = np.full((2, 2, 3), 65535, np.uint16)
    rgb16[..., 0] = 0  # blue channel in BGR
    img = read_image(_write(tmp_path / "c16.png", rgb16))
    assert img[0, 0].tolist() == [255, 255, 0]


def test_jpeg_baseline_and_progressive_size_from_header(tmp_path):
    img = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    base = _write(tmp_path / "b.jpg", img)
    prog = _write(tmp_path / "p.jpg", img, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    for p in (base, prog):
        assert image_size(p) == (53, 37)
        assert read_image(p).shape == (37, 53, 3)


def test_other_formats_fall_back_to_decoding(tmp_path):
    p = _write(tmp_path / "x.bmp", np.zeros((9, 11, 3), np.uint8))
    assert image_size(p) == (11, 9)
    assert read_image(p).shape == (9, 11, 3)


def test_exif_orientation_is_ignored(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(path, exif=exif)
    assert image_size(path) == (40, 20)
    assert read_image(path).shape == (20, 40, 3)  # the stored grid, not the displayed one


@pytest.mark.parametrize(
    "content, what",
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "decode"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
    ],
)
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path, content, what):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match=what) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_truncated_jpeg_and_png(tmp_path):
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    for ext in (".jpg", ".png"):
        data = cv2.imencode(ext, img)[1].tobytes()
        path = tmp_path / f"half{ext}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError) as e:
            read_image(path)
        assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        read_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(e.value)
    with pytest.raises(DataError, match="not found"):
        image_size(tmp_path / "nope.png")


def _png_header_only(path, width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


def test_huge_image_refused_from_header_without_decoding(tmp_path):
    path = _png_header_only(tmp_path / "huge.png", 20000, 20000)  # 400 MP claimed, 33 bytes on disk
    assert image_size(path) == (20000, 20000)
    with pytest.raises(DataError, match="megapixels") as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_pixel_limit_is_configurable(tmp_path):
    path = _write(tmp_path / "s.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(DataError, match="limit"):
        read_image(path, max_pixels=5000)
    assert read_image(path, max_pixels=None).shape == (100, 100, 3)
