"""A structural check of MATLAB v5 files, run before ``scipy.io.loadmat`` sees them.

scipy's compiled v5 reader trusts the sizes written in the file: some corrupt files (a
dimensions element of 3 bytes, an element running past the end of the file) crash the
whole process with a segmentation fault instead of raising (found by fuzzing, scipy 1.17).
This walks the element tags the way the format defines them (MATLAB "MAT-File Format",
v5: a 128-byte header, then data elements, each an 8-byte tag ``type, size`` or a 4-byte
"small" tag, ``miMATRIX`` elements holding flags, dimensions, name and data, cells holding
one ``miMATRIX`` per element, ``miCOMPRESSED`` elements holding one zlib-compressed element)
and refuses anything inconsistent. It reads no values and allocates at most ``max_expand``
bytes to look inside a compressed variable.
"""

from __future__ import annotations

import struct
import zlib
from typing import Tuple

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 14, 15
MX_CELL = 1
_MAX_DEPTH = 64
#: Data types of the format (miINT8 .. miDOUBLE, miINT64, miUINT64, miUTF8/16/32); scipy's reader
#: indexes a table with them, so any other value is refused here.
_NUMERIC_TYPES = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18}
#: Array classes whose data is only numeric elements: char, sparse, double .. uint64.
_PLAIN_CLASSES = set(range(4, 16))


class Mat5Error(ValueError):
    """The file is not a consistent MATLAB v5 file; the message says where."""


def is_mat5(raw: bytes) -> bool:
    """True for a v5 header: version 0x0100 and an endian indicator at bytes 124..127."""
    return len(raw) >= 128 and raw[126:128] in (b"IM", b"MI")


def _tag(buf: bytes, pos: int, end: int, e: str) -> Tuple[int, int, int, int]:
    """``(type, size, data start, next element)`` of the element at ``pos``."""
    if pos + 8 > end:
        raise Mat5Error(f"data element tag cut off at byte {pos}")
    first, size = struct.unpack_from(e + "II", buf, pos)
    if first >> 16:  # small element: 2-byte size and 2-byte type, data in the tag's last 4 bytes
        ty, small = first & 0xFFFF, first >> 16
        if small > 4:
            raise Mat5Error(f"small data element at byte {pos} claims {small} bytes (at most 4)")
        return ty, small, pos + 4, pos + 8
    if pos + 8 + size > end:
        raise Mat5Error(f"data element at byte {pos} claims {size} bytes, past the end of its container")
    padding = 0 if first == MI_COMPRESSED else -size % 8  # compressed elements are not padded
    return first, size, pos + 8, pos + 8 + size + padding


def _matrix(buf: bytes, start: int, end: int, e: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise Mat5Error("cell arrays nested too deeply")
    if end == start:  # an empty miMATRIX element (e.g. an empty cell entry)
        return
    ty, size, data, pos = _tag(buf, start, end, e)
    if ty != MI_UINT32 or size != 8:
        raise Mat5Error(f"array at byte {start}: bad array-flags element")
    (flags,) = struct.unpack_from(e + "I", buf, data)
    ty, size, data, pos = _tag(buf, pos, end, e)
    if ty != MI_INT32 or size % 4 or size < 8:
        raise Mat5Error(f"array at byte {start}: bad dimensions element ({size} bytes)")
    dims = struct.unpack_from(e + f"{size // 4}i", buf, data)
    if min(dims) < 0:
        raise Mat5Error(f"array at byte {start}: negative dimension {min(dims)}")
    ty, size, data, pos = _tag(buf, pos, end, e)
    if ty not in (MI_INT8, MI_UINT8):
        raise Mat5Error(f"array at byte {start}: bad name element")
    cls = flags & 0xFF
    if cls == MX_CELL:
        count = 1
        for d in dims:
            count *= d
        for _ in range(count):
            ty, size, data, pos = _tag(buf, pos, end, e)
            if ty != MI_MATRIX:
                raise Mat5Error(f"cell at byte {start}: element at byte {data - 8} is not an array")
            _matrix(buf, data, data + size, e, depth + 1)
    elif cls in _PLAIN_CLASSES:  # real, imaginary (sparse: ir, jc, pr, pi) parts: known types only
        while pos < end:
            ty, size, data, pos = _tag(buf, pos, end, e)
            if ty not in _NUMERIC_TYPES:
                raise Mat5Error(f"array at byte {start}: data element of unknown type {ty}")


def check_mat5(raw: bytes, max_expand: int = 1 << 30) -> None:
    """Raise :class:`Mat5Error` when ``raw`` (a whole v5 file) is structurally inconsistent."""
    e = "<" if raw[126:128] == b"IM" else ">"
    pos = 128
    while pos < len(raw):
        ty, size, data, nxt = _tag(raw, pos, len(raw), e)
        if ty == MI_COMPRESSED:
            z = zlib.decompressobj()
            try:
                inner = z.decompress(raw[data : data + size], max_expand)
            except zlib.error as err:
                raise Mat5Error(f"compressed variable at byte {pos}: {err}") from None
            if z.unconsumed_tail:
                raise Mat5Error(f"compressed variable at byte {pos} expands past {max_expand} bytes")
            if len(inner) >= 8:
                ty, size, data, _ = _tag(inner, 0, len(inner), e)
                if ty == MI_MATRIX:
                    _matrix(inner, data, data + size, e, 0)
        elif ty == MI_MATRIX:
            _matrix(raw, data, data + size, e, 0)
        pos = nxt
