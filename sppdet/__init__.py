"""sppdet: SPP-net object detection in PyTorch.

Pipeline (one sub-package per stage, in data-flow order):
data -> proposals -> modeling (backbone, features, spp head) -> engine (train/infer) -> evaluation.

Box convention used everywhere inside sppdet: see :mod:`sppdet.structures`.
"""

__version__ = "0.1.0"

__all__ = ["Detector", "DetectionResult", "__version__"]


def __getattr__(name: str):
    """``from sppdet import Detector`` loads the API (and torch) only when asked: importing the
    package itself stays light."""
    if name in ("Detector", "DetectionResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sppdet' has no attribute {name!r}")
