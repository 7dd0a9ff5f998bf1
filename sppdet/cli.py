"""Shared plumbing for the command-line tools in ``tools/``.

Tools stay thin: they parse arguments and call the package. :func:`run_tool` turns user
errors into one clear line on stderr and a non-zero exit, never a bare traceback.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

from .errors import SppdetError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def setup_logging(verbose: bool = False, rank: int = 0) -> None:
    """Configure a concise log format; only rank 0 logs at INFO level."""
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)


def run_tool(main: Callable[[Optional[list]], Optional[int]], argv: Optional[list] = None) -> int:
    """Run a tool's ``main`` and map user errors to a one-line message and exit code 2."""
    try:
        code = main(argv)
        return int(code or 0)
    except SppdetError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as e:
        print(f"error: file not found: {e.filename or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except PermissionError as e:
        print(f"error: permission denied: {e.filename or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        if os.environ.get("SPPDET_DEBUG"):
            raise
        import traceback
        traceback.print_exc()
        print("error: internal error (the traceback above is a bug in sppdet; please report it)",
              file=sys.stderr)
        return 1
