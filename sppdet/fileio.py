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


def load_json(path: PathLike) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line :class:`SppdetError`."""
    path = Path(path)
    if not path.is_file():
        raise SppdetError(f"{path}: file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SppdetError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e


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
