"""Export a trained checkpoint to ONNX or TorchScript (:func:`export_model`).

Both files hold :class:`sppdet.export.graph.ExportableDetector`: inputs ``image`` (uint8
``H x W x 3`` RGB) and ``proposals`` (float32 ``P x 4``, ``(x1, y1, x2, y2)`` pixels), outputs
``boxes`` (float32 ``N x 4``), ``scores`` (float32 ``N``), ``labels`` (int64 ``N``, 1..K), with
``H``, ``W``, ``P`` and ``N`` dynamic. The TorchScript file needs ``import torchvision`` before
``torch.jit.load`` (it calls torchvision's ``roi_pool`` and ``nms``).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Sequence, Tuple, Union, cast

import numpy as np
import torch

from ..engine.infer import Predictor, load_predictor
from ..errors import ConfigError, SppdetError
from ..fileio import atomic_write
from ..modeling.detector import SPPDetector
from .graph import ExportableDetector
from .spp_onnx import check_levels, plan_levels

FORMATS = ("onnx", "torchscript")
#: ONNX opset: MaxRoiPool and NonMaxSuppression are in every opset >= 11.
OPSET = 17
INPUT_NAMES = ["image", "proposals"]
OUTPUT_NAMES = ["boxes", "scores", "labels"]
#: Window sizes (in feature cells) checked for exact ``roi_pool`` bins: beyond any real map.
_MAX_CELLS = 4096


def build_exportable(predictor: Predictor) -> ExportableDetector:
    """The traceable twin of ``predictor``; a config that cannot be exported is a ConfigError."""
    cfg = predictor.cfg
    if not isinstance(predictor.model, SPPDetector):
        raise ConfigError(f"only SPP-net detectors can be exported, not {type(predictor.model).__name__}")
    if predictor.scorer is not None:
        raise ConfigError(
            "train.paper.scorer: the paper recipe's SVM scorer cannot be exported; "
            "export the fine-tuned softmax head with the override train.paper.scorer=softmax"
        )
    if cfg.model.spp_mode != "max":
        raise ConfigError(f"model.spp_mode: only 'max' region SPP can be exported, not {cfg.model.spp_mode!r}")
    bad = check_levels([n for n, src in plan_levels(cfg.model.spp_levels).items() if src is None], _MAX_CELLS)
    if bad:
        raise ConfigError(
            f"model.spp_levels: level(s) {list(bad)} cannot be exported exactly "
            "(ONNX MaxRoiPool's float32 bins differ from SPP-net's for some window sizes)"
        )
    return ExportableDetector(predictor.model, cfg).eval()


def example_inputs(seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A random image and proposals to trace with (any sizes work afterwards)."""
    rng = np.random.default_rng(seed)
    h, w = 150, 200
    image = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    xy = rng.uniform(0, 120, (32, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 80, (32, 2))], 1)
    return image, torch.from_numpy(boxes.astype(np.float32))


def export_model(weights: Union[str, Path], fmt: str, out: Union[str, Path], overrides: Sequence[str] = ()) -> Path:
    """Write checkpoint ``weights`` as an ``fmt`` ("onnx" or "torchscript") file ``out``."""
    if fmt not in FORMATS:
        raise SppdetError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    predictor = load_predictor(str(weights), overrides, "cpu")
    module = build_exportable(predictor)
    example = example_inputs()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: all of it is traced
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, example, check_trace=False), buf)
        else:
            torch.onnx.export(
                module,
                example,
                cast(Any, buf),  # a file object works; the annotation says path only
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes={
                    "image": {0: "height", 1: "width"},
                    "proposals": {0: "num_proposals"},
                    "boxes": {0: "num_detections"},
                    "scores": {0: "num_detections"},
                    "labels": {0: "num_detections"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
    out = Path(out)
    with atomic_write(out, "wb") as f:
        f.write(buf.getvalue())
    return out
