"""torch.distributed helpers: the same code runs single-process or under ``torchrun``.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) :func:`init_distributed` starts the process
group (NCCL with CUDA, gloo on CPU); without it every helper degrades to the single-process case.

Failure handling: a rank that hits an error exits non-zero and ``torchrun`` then stops the other
ranks. Collectives also time out after ``SPPDET_DIST_TIMEOUT_S`` seconds (default 1800), so a
job started by another launcher that does not watch its workers fails instead of hanging.
:func:`shutdown_distributed` (called by :func:`sppdet.cli.run_tool` when a tool returns) waits
for every rank and then destroys the process group.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, List

import torch
import torch.distributed as dist

from ..errors import ConfigError


def is_dist() -> bool:
    """Whether ``torch.distributed`` is initialised (running under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 when single-process)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes (1 when single-process)."""
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Whether this is rank 0 (the one that writes files and logs)."""
    return get_rank() == 0


def init_distributed(device: str = "auto") -> bool:
    """Initialise the default process group when launched by torchrun; returns True if so."""
    if is_dist():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    use_cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=dist_timeout_s()))
    return True


def dist_timeout_s() -> float:
    """Collective timeout in seconds: env ``SPPDET_DIST_TIMEOUT_S``, default 1800 (30 minutes)."""
    raw = os.environ.get("SPPDET_DIST_TIMEOUT_S", "1800")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"SPPDET_DIST_TIMEOUT_S={raw!r}: expected a positive number of seconds")
    return value


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the default process group (no-op single-process).

    The barrier matters when ranks finish at different times (``tools/eval.py``: rank 0 computes
    the metrics alone): a gloo rank that tears down while its peers still hold open connections
    can abort with "terminate called without an active exception" (seen once in CI)."""
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()


def shard(n: int) -> range:
    """This rank's share of ``range(n)``: ``rank, rank + world, ...`` (all of it single-process)."""
    return range(get_rank(), n, get_world_size())


def barrier() -> None:
    """Wait for every rank (no-op when single-process)."""
    if is_dist():
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Gather a picklable object from every rank (a one-element list when single-process)."""
    if not is_dist():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (unchanged when single-process); returns it."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself when single-process)."""
    if not is_dist():
        return obj
    buf = [obj]
    dist.broadcast_object_list(buf, src=src)
    return buf[0]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> this rank's CUDA device when available, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", "0")) if is_dist() else torch.cuda.current_device()
            )
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available (use device=cpu or auto)")
    return torch.device(name)
