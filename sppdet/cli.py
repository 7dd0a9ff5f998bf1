"""Shared plumbing for the command-line tools in ``tools/``.

Tools stay thin: they parse arguments and call the package. :func:`run_tool` turns user
errors into one clear line on stderr and a non-zero exit, never a bare traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from typing import Callable, Optional

from .data.dataset import DataWarning
from .errors import SppdetError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def setup_logging(verbose: bool = False, rank: Optional[int] = None) -> None:
    """Configure a concise log format; only rank 0 logs at INFO level.

    ``rank`` defaults to the ``RANK`` environment variable that ``torchrun`` sets (0 without it),
    so a tool may set up logging before it starts the process group.
    """
    if rank is None:
        rank = int(os.environ.get("RANK", "0") or 0)
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(
        level=level, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr, force=True
    )
    warnings.showwarning = _show_warning


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Data warnings (a box dropped, a size repaired...) as one ``warning: ...`` line naming the
    file, without the source line Python's default format adds; others as usual."""
    if issubclass(category, DataWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def run_tool(main: Callable[[Optional[list]], Optional[int]], argv: Optional[list] = None) -> int:
    """Run a tool's ``main`` and map user errors to a one-line message and exit code 2."""
    try:
        code = main(argv)
        _shutdown_distributed()
        return int(code or 0)
    except SppdetError as e:
        return _user_error(str(e))
    except FileNotFoundError as e:
        return _user_error(f"file not found: {e.filename or e}")
    except PermissionError as e:
        return _user_error(f"permission denied: {e.filename or e}")
    except OSError as e:  # not a folder, disk full, read-only file system...: the environment, not a bug
        if e.filename is None or e.strerror is None:
            return _internal_error()
        return _user_error(f"{e.filename}: {e.strerror}")
    except KeyboardInterrupt:
        _close_progress_bars()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        return _internal_error()


def _user_error(message: str) -> int:
    """Print ``error: message`` on a line of its own; exit code 2."""
    _close_progress_bars()
    print(f"error: {_original_message(message)}", file=sys.stderr)
    return EXIT_USER_ERROR


def _original_message(message: str) -> str:
    """The user's message of an error that torch re-raised from a DataLoader worker: torch puts the
    worker's whole traceback into the text ("Caught DataError in DataLoader worker process 0.
    Original Traceback ..."); the last line holds the original ``module.Error: message``."""
    if "\nOriginal Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    name, sep, rest = last.partition(": ")
    return rest if sep and name.replace(".", "").replace("_", "").isalnum() else last


def _close_progress_bars() -> None:
    """Close open tqdm bars, so a message starts on a fresh line, not after a half-drawn bar."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar's own clean-up must never hide the message
            pass


def _internal_error() -> int:
    """Print the traceback of the exception being handled as a bug report; exit code 1."""
    if os.environ.get("SPPDET_DEBUG"):
        raise
    _close_progress_bars()

    traceback.print_exc()
    print("error: internal error (the traceback above is a bug in sppdet; please report it)", file=sys.stderr)
    return 1


def _shutdown_distributed() -> None:
    """Destroy the process group a tool started under torchrun (after a clean return only: a
    failing rank just exits, and torchrun stops the others)."""
    if "sppdet.utils.comm" in sys.modules:
        sys.modules["sppdet.utils.comm"].shutdown_distributed()
