"""Checkpoints: one self-describing file per save, written atomically.

A checkpoint is a dict of tensors and plain values (loadable with ``weights_only=True``)::

    format       "sppdet-checkpoint"        version     1
    config       the full config dict used   class_names ["RBC", ...] (label k = class_names[k-1])
    model        model state_dict            iteration   int (training iterations done)
    optimizer, scheduler, rng                (training state, for an exact --resume)
    extras       optional dict, e.g. the paper recipe's SVMs and box regressors

So ``tools/detect.py`` and ``tools/eval.py`` need only ``--weights``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..config import Config, apply_overrides, config_from_dict, config_to_dict
from ..errors import CheckpointError, ConfigError
from ..fileio import torch_load, torch_save

FORMAT = "sppdet-checkpoint"
VERSION = 1


def save_checkpoint(
    path: Union[str, Path],
    *,
    model: torch.nn.Module,
    cfg: Config,
    class_names: Sequence[str],
    iteration: int = 0,
    optimizer=None,
    scheduler=None,
    extras: Optional[Dict[str, Any]] = None,
) -> None:
    """Write a checkpoint atomically (temp file + rename)."""
    state: Dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(cfg),
        "class_names": list(class_names),
        "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "iteration": int(iteration),
        "rng": {"torch": torch.get_rng_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if extras:
        state["extras"] = extras
    torch_save(state, path)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Load and validate a checkpoint (``weights_only=True``)."""
    state = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an sppdet checkpoint (no 'format: {FORMAT}' entry)")
    for key in ("config", "class_names", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'")
    names = state["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: 'class_names' must be a list of class names, got {type(names).__name__}")
    for key in ("config", "model"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{path}: '{key}' must be a mapping, got {type(state[key]).__name__}")
    return state


def checkpoint_config(state: Dict[str, Any], overrides: Sequence[str] = (), source: str = "checkpoint") -> Config:
    """The config stored in a checkpoint, with ``key=value`` overrides applied."""
    data = copy.deepcopy(state["config"])
    if overrides:
        data = apply_overrides(data, overrides)
    return config_from_dict(data, source)


def restore_model(model: torch.nn.Module, state: Dict[str, Any], path: Union[str, Path] = "checkpoint") -> None:
    """Load ``state["model"]`` into ``model``; a mismatch is a clear CheckpointError."""
    try:
        _unwrap(model).load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(
            f"{path}: weights do not match the model built from the config "
            f"(another config or class list?): {detail[:200]}"
        ) from e


def restore_rng(state: Dict[str, Any]) -> None:
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    return inner if isinstance(inner, torch.nn.Module) else model


def load_model_from_checkpoint(
    path: Union[str, Path], overrides: Sequence[str] = (), device: Union[str, torch.device] = "cpu"
) -> Tuple[torch.nn.Module, Config, list, Dict]:
    """Build the detector a checkpoint describes and load its weights (eval mode)."""
    from ..modeling.detector import build_detector

    state = load_checkpoint(path)
    cfg = checkpoint_config(state, overrides, source=f"{path} + overrides")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=""))  # trained weights replace any init
    try:
        model = build_detector(cfg, len(state["class_names"]), weights_follow=True)
    except (ConfigError, ValueError, RuntimeError) as e:
        # A value checked only when the model is built (or not at all: a negative fc size reaches
        # torch): the config comes from the file, so say so.
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: the config stored in this checkpoint (+ overrides) is invalid: {first}") from e
    restore_model(model, state, path)
    model.to(device).eval()
    return model, cfg, list(state["class_names"]), state
