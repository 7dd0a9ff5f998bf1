"""sppdet.modeling: backbone (conv features + projection geometry), multi-scale features, SPP head."""

from ..data.transforms import normalize_image
from .backbone import Backbone, build_backbone, feature_geometry, load_weights

__all__ = ["Backbone", "build_backbone", "feature_geometry", "load_weights", "normalize_image"]
