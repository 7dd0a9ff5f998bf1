"""Reading images: one function, one output format, clear errors.

:func:`read_image` returns an ``H x W x 3`` RGB ``uint8`` array for every image a dataset may
hold. The choices, made once here:

* **EXIF orientation is ignored.** The pixels are returned in the order they are stored
  (``cv2.IMREAD_IGNORE_ORIENTATION``). PASCAL VOC and COCO annotations refer to the stored
  pixel grid, and so do their ``width``/``height`` fields; rotating a photo that carries an
  orientation tag would move every box. :func:`image_size` reads the stored size too.
* **Grayscale** images (and gray + alpha) are repeated to 3 channels.
* **Alpha is dropped**, not composited: the colour channels are kept as stored, as
  ``PIL.Image.convert("RGB")``, torchvision and ``cv2.IMREAD_COLOR`` do, so sppdet sees the same
  pixels as other tools and annotators.
* **16-bit** images are scaled to the full 8-bit range (``round(v / 257)``, so 65535 -> 255);
  float images are taken to be in ``[0, 1]``.
* **Size guard.** The size is read from the file header before decoding; an image with more
  than ``max_pixels`` pixels (default 100e6, ``input.max_image_pixels`` in the config) is
  refused with :class:`~sppdet.errors.DataError` instead of exhausting memory.
* A missing, empty, truncated or undecodable file is a :class:`~sppdet.errors.DataError`
  naming the file. A JPEG whose data stops before its end-of-image marker counts as
  truncated (some libjpeg builds would silently decode it with a grey bottom).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np

# OpenCV's own decoder limit (default 2**30 pixels); our header check runs first, this only
# backs it up for formats whose header we do not parse. Must be set before cv2 decodes.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**30))
import cv2  # noqa: E402

from ..errors import DataError  # noqa: E402

PathLike = Union[str, os.PathLike]

#: Images with more pixels than this are refused (same default as ``input.max_image_pixels``).
DEFAULT_MAX_PIXELS = 100_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not C4/C8/CC.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD8} | set(range(0xD0, 0xD8))
_SOS = 0xDA


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: image file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty")


def _jpeg_header(f: BinaryIO, path: Path) -> Tuple[Optional[Tuple[int, int]], Optional[int]]:
    """Walk JPEG markers: ((width, height) or None, offset of the first SOS or None)."""
    f.seek(2)
    size = None
    while True:
        byte = f.read(1)
        if not byte:
            raise DataError(f"{path}: truncated JPEG header")
        if byte != b"\xff":
            raise DataError(f"{path}: corrupt JPEG header (bad marker at byte {f.tell() - 1})")
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            raise DataError(f"{path}: truncated JPEG header")
        m = marker[0]
        if m in _JPEG_STANDALONE:
            continue
        if m == 0xD9:
            raise DataError(f"{path}: JPEG ends before any image data")
        raw = f.read(2)
        if len(raw) < 2:
            raise DataError(f"{path}: truncated JPEG header")
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            raise DataError(f"{path}: corrupt JPEG header (segment length {length})")
        if m == _SOS:
            return size, f.tell() - 4
        if m in _SOF_MARKERS:
            seg = f.read(5)
            if len(seg) < 5:
                raise DataError(f"{path}: truncated JPEG header")
            _, h, w = struct.unpack(">BHH", seg)
            size = (w, h) if w > 0 and h > 0 else None  # h == 0: height in a DNL marker
            f.seek(length - 7, 1)
        else:
            f.seek(length - 2, 1)


def _header_size(path: Path) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """(format, (width, height)) from the file header; size None when not known from it."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:2] == b"\xff\xd8":
            size, _ = _jpeg_header(f, path)
            return "jpeg", size
        if head[:8] == _PNG_SIGNATURE:
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise DataError(f"{path}: corrupt PNG header")
            w, h = struct.unpack(">II", head[16:24])
            return "png", (w, h) if w > 0 and h > 0 else None
    return None, None


def _check_pixels(path: Path, width: int, height: int, max_pixels: Optional[int]) -> None:
    if max_pixels and width * height > max_pixels:
        raise DataError(
            f"{path}: image is {width}x{height} = {width * height / 1e6:.0f} megapixels, "
            f"more than the limit of {max_pixels / 1e6:.0f} (input.max_image_pixels)"
        )


def _decode(path: Path, data: bytes) -> np.ndarray:
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:
        raise DataError(f"{path}: cannot decode image ({str(e).strip().splitlines()[-1][:120]})") from e
    if img is None or img.size == 0:
        raise DataError(f"{path}: cannot decode image (corrupt, truncated or unsupported format)")
    return img


def image_size(path: PathLike) -> Tuple[int, int]:
    """``(width, height)`` of the stored pixel grid (EXIF orientation ignored).

    JPEG and PNG sizes come from the header (a few hundred bytes read); other formats are
    decoded. Raises :class:`DataError` for a missing, empty or corrupt file.
    """
    path = Path(path)
    _check_file(path)
    _, size = _header_size(path)
    if size is not None:
        return size
    img = _decode(path, path.read_bytes())
    return int(img.shape[1]), int(img.shape[0])


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype.kind == "f":
        return (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.dtype == np.int8:
        return (img.astype(np.int16) + 128).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {img.dtype}")


def _to_rgb(img: np.ndarray, path: Path) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels in (1, 2):  # gray, gray + alpha
        return np.repeat(img[:, :, :1], 3, axis=2)
    if channels in (3, 4):  # BGR, BGRA: drop alpha, reverse to RGB
        return np.ascontiguousarray(img[:, :, 2::-1])
    raise DataError(f"{path}: unsupported number of channels ({channels})")


def read_image(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as an ``H x W x 3`` RGB ``uint8`` array (see the module notes).

    Args:
        path: image file (JPEG, PNG or anything OpenCV decodes).
        max_pixels: refuse images with more pixels than this (None or 0: no limit).
    """
    path = Path(path)
    _check_file(path)
    fmt, size = _header_size(path)
    if size is not None:
        _check_pixels(path, size[0], size[1], max_pixels)
    data = path.read_bytes()
    if fmt == "jpeg":
        _, sos = _jpeg_header(io.BytesIO(data), path)
        if sos is None or data.find(b"\xff\xd9", sos) < 0:
            raise DataError(f"{path}: truncated JPEG (no end-of-image marker after the image data)")
    img = _decode(path, data)
    _check_pixels(path, img.shape[1], img.shape[0], max_pixels)
    return _to_rgb(_to_uint8(img, path), path)
