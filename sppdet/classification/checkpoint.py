"""Classifier checkpoints: one self-describing file, written atomically, read with
``torch.load(weights_only=True)``::

    format  "sppdet-classifier"   version  1
    config  the ClassifierConfig dict     class_names  [...] (label k = class_names[k])
    model   state_dict                    epoch        epochs done

So ``tools/classify.py eval|predict`` need only ``--weights``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

from ..errors import CheckpointError
from ..fileio import torch_load, torch_save
from .config import ClassifierConfig, classifier_config_from_dict, classifier_config_to_dict
from .model import SPPClassifier, build_classifier

FORMAT = "sppdet-classifier"
VERSION = 1


def save_classifier(
    path: Union[str, Path], model: SPPClassifier, cfg: ClassifierConfig, class_names: List[str], epoch: int
) -> None:
    """Write a classifier checkpoint atomically (temp file + rename)."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": classifier_config_to_dict(cfg),
        "class_names": list(class_names),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
    }
    torch_save(state, path)


def load_classifier(
    path: Union[str, Path], device: Union[str, torch.device] = "cpu"
) -> Tuple[SPPClassifier, ClassifierConfig, List[str]]:
    """The model a classifier checkpoint describes, weights loaded, in eval mode."""
    state: Dict[str, Any] = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an sppdet classifier checkpoint (no 'format: {FORMAT}' entry)")
    for key in ("config", "class_names", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'")
    cfg = classifier_config_from_dict(state["config"], source=str(path))
    names = list(state["class_names"])
    # the trained weights replace any pretrained init: do not read (or require) the file
    model = build_classifier(dataclasses.replace(cfg.model, weights="", frozen_bn=False), len(names))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match the model of its config: {lines[-1].strip()[:200]}") from e
    return model.to(device).eval(), cfg, names
