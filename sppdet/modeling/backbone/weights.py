"""Backbone weights: torchvision enum names or local state_dict files (nothing downloaded here)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import torch
import torchvision
from torch import nn

from ...errors import CheckpointError, ConfigError
from ...fileio import torch_load

log = logging.getLogger("sppdet.backbone")

#: Backbones with torchvision weights.
TORCHVISION_BACKBONES = ("vgg16", "resnet18", "resnet50", "mobilenet_v2")


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or "\\" in text
        or text.startswith(("~", "."))
        or Path(text).suffix.lower() in (".pth", ".pt", ".bin", ".ckpt", ".tar", ".pkl")
    )


def resolve_weights(arch: str, weights: str):
    """``model.weights`` -> a local :class:`Path` or a torchvision ``WeightsEnum`` member
    (nothing is downloaded here)."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(weights):
        raise CheckpointError(f"{weights}: weights file not found (model.weights)")
    if arch not in TORCHVISION_BACKBONES:
        raise ConfigError(
            f"model.weights: '{weights}' is not a file, and backbone '{arch}' has no "
            f"torchvision weights: give a local state_dict path"
        )
    enum_cls = torchvision.models.get_model_weights(arch)
    prefix, _, name = weights.rpartition(".")
    if prefix and prefix != enum_cls.__name__:
        raise ConfigError(f"model.weights: '{weights}' are not {arch} weights (expected {enum_cls.__name__}.*)")
    try:
        return enum_cls[name]
    except KeyError:
        names = ", ".join([m.name for m in enum_cls] + ["DEFAULT"])
        raise ConfigError(f"model.weights: '{weights}' is neither a file nor a {arch} weights name ({names})") from None


def _unwrap_state_dict(obj, label: str) -> Dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):  # sppdet checkpoints / common training scripts
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{label}: not a state_dict (expected a mapping of parameter names to tensors)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # DataParallel / DDP wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a sppdet detector checkpoint
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _read_torchvision(weights) -> Dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, hash mismatch, disk full...
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot get torchvision weights {weights} ({msg}); offline, give a local state_dict path in model.weights"
        ) from e


def load_weights(module: nn.Module, weights: str):
    """Load ``weights`` (enum name or local path, see module docs) into a backbone.

    Backbone keys absent from the source are a :class:`CheckpointError` (naming a few);
    source keys the backbone does not use are ignored when the truncation explains them
    (classifier, later stages) and logged as a warning otherwise."""
    if not weights:
        return
    arch = getattr(module, "name", "")
    source = resolve_weights(arch, weights)
    if isinstance(source, Path):
        label = str(source)
        state = _unwrap_state_dict(torch_load(source), label)
    else:
        label = f"torchvision {source}"
        state = _unwrap_state_dict(_read_torchvision(source), label)
    own = module.state_dict()
    skip_missing = tuple(getattr(module, "new_prefixes", ()))
    dropped = tuple(getattr(module, "truncated_prefixes", ()))
    matched = {k: v for k, v in state.items() if k in own}
    for k, v in matched.items():
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"{label}: '{k}' has shape {tuple(v.shape)}, backbone {arch} expects {tuple(own[k].shape)}"
            )
    missing = [
        k for k in own if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(skip_missing)
    ]
    if missing:
        seen = ", ".join(list(state)[:2])
        total = sum(not k.endswith("num_batches_tracked") for k in own)
        raise CheckpointError(
            f"{label}: {len(missing)} of {total} {arch} backbone weights missing "
            f"(e.g. {', '.join(missing[:3])}; the file has {seen}, ...)"
        )
    unexpected = [
        k for k in state if k not in own and not k.startswith(dropped) and not k.endswith("num_batches_tracked")
    ]
    if unexpected:
        log.warning(
            "%s: %d keys not used by backbone %s (e.g. %s)", label, len(unexpected), arch, ", ".join(unexpected[:3])
        )
    module.load_state_dict(matched, strict=False)
    log.info("loaded %d tensors into backbone %s from %s", len(matched), arch, label)
    return source


def check_enum_normalization(weights, normalization: str) -> None:
    """Warn when torchvision weights were trained with another input normalisation."""
    try:
        preset = weights.transforms()
        mean, std = [round(float(v), 3) for v in preset.mean], [round(float(v), 3) for v in preset.std]
    except Exception:  # a preset without mean/std: nothing to compare
        return
    imagenet = mean == [0.485, 0.456, 0.406] and std == [0.229, 0.224, 0.225]
    if imagenet != (normalization == "imagenet"):
        log.warning(
            "model.normalization is '%s' but torchvision %s expects RGB (x/255 - %s) / %s",
            normalization,
            weights,
            mean,
            std,
        )
