"""sppdet.modeling: backbone (conv features + projection geometry), multi-scale features, SPP head."""

from .backbone import Backbone, build_backbone, feature_geometry, load_weights, normalize_image

__all__ = ["Backbone", "build_backbone", "feature_geometry", "load_weights", "normalize_image"]
