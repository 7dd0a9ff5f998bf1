"""Atomic file writes and safe loading.

Every checkpoint, cache, proposal store and output is written to a temporary file in the
same folder and renamed into place, so a crash never leaves a half-written file under the
final name. Nothing is unpickled from disk without an explicit opt-in.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

import torch

from .errors import CheckpointError, SppdetError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_output_dir(path: PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) up front, so a long run never fails at its last write.

    A path under a regular file, or one without write permission, is a one-line SppdetError.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise SppdetError(f"{what} {path}: cannot create it (permission denied)") from e
    except OSError as e:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file" if blocker is not None else e.strerror
        raise SppdetError(f"{what} {path}: cannot create it ({reason})") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise SppdetError(f"{what} {path}: cannot write here (permission denied)")
    return path


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success fsync and rename it to ``path``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except PermissionError as e:
        raise SppdetError(f"{folder}: cannot write here (permission denied)") from e
    except OSError as e:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise SppdetError(f"{folder}: cannot create output folder ({blocker} is a file)") from e
        raise SppdetError(f"{folder}: cannot create output folder ({e.strerror})") from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give normal permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:  # the disk, not the caller's code
            raise SppdetError(f"{path}: cannot write ({e.strerror}); nothing was written under this name") from e
        raise


#: Errors of writing itself (disk full, quota, read-only or failing file system, file too large).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


def save_json(obj: Any, path: PathLike, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def save_text(text: str, path: PathLike) -> None:
    """Write ``text`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def is_file(path: PathLike) -> bool:
    """``Path.is_file`` that says False (instead of raising) for a name the OS cannot hold.

    Names come from annotation files: one too long for the file system, or holding a NUL,
    is simply not there.
    """
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


#: Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def decode_text(raw: bytes, path: PathLike, what: str = "file") -> str:
    """Text of a file's bytes: UTF-8, or UTF-16/32 with a byte-order mark (Windows tools).

    UTF-16 without a mark is recognised from its NUL bytes (ASCII-range text). Anything else
    that is not valid UTF-8 is a one-line :class:`SppdetError` naming the file and the byte.
    """
    bom, encoding = next(((b, e) for b, e in _BOMS if raw.startswith(b)), (b"", ""))
    raw = raw[len(bom) :]
    if not encoding and len(raw) >= 2 and len(raw) % 2 == 0 and raw.count(0) * 4 >= len(raw):
        # No mark but many NULs: UTF-16 text in the ASCII range has a NUL in every other byte.
        encoding = "utf-16-le" if raw[1::2].count(0) > raw[0::2].count(0) else "utf-16-be"
    encoding = encoding or "utf-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1 if encoding == "utf-8" else None
        where = f"line {line}, " if line else ""
        raise SppdetError(
            f"{path}: {what} is not valid {encoding.upper()} text ({where}byte {e.start}: "
            f"{raw[e.start : e.start + 1].hex() or 'end of file'}); save it as UTF-8"
        ) from None


def read_text(path: PathLike, what: str = "file") -> str:
    """Read a text file with :func:`decode_text`; missing or unreadable is a one-line SppdetError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SppdetError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise SppdetError(f"{path}: {what} expected, found a folder") from None
    except OSError as e:
        raise SppdetError(f"{path}: cannot read {what} ({e.strerror})") from None
    return decode_text(raw, path, what)


def parse_json_text(text: str, path: PathLike) -> Any:
    """``json.loads`` with every failure as one line naming ``path``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SppdetError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise SppdetError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise SppdetError(f"{path}: not valid JSON ({str(e).splitlines()[0][:120]})") from None


def load_json(path: PathLike) -> Any:
    """Read a JSON file (UTF-8, or UTF-16/32 with a BOM); any failure is a one-line :class:`SppdetError`."""
    path = Path(path)
    if not path.is_file():
        raise SppdetError(f"{path}: file not found")
    return parse_json_text(read_text(path, "JSON file"), path)


def torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` atomically (temp file + rename)."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def torch_load(path: PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(f"{path}: {_load_failure(path, e)}") from e


def _load_failure(path: Path, e: Exception) -> str:
    """A one-line reason why ``torch.load(weights_only=True)`` failed (torch's own text is long)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (
            f"refusing to load: the file holds a Python object ({unsafe.group(1)}) besides tensors and "
            "plain containers, and unpickling it could run code (only weights are loaded)"
        )
    if not zipfile.is_zipfile(path):
        return "not a readable PyTorch checkpoint (truncated, corrupt or another kind of file)"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"cannot load checkpoint ({first[:160]}); the file may be truncated or corrupt"
