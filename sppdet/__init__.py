"""sppdet: SPP-net object detection in PyTorch.

Pipeline (one sub-package per stage, in data-flow order):
data -> proposals -> modeling (backbone, features, spp head) -> engine (train/infer) -> evaluation.

Box convention used everywhere inside sppdet: see :mod:`sppdet.structures`.
"""

__version__ = "0.1.0"
