"""sppdet.layers: image-level and region spatial pyramid pooling."""

from .spp import (
    RoISpatialPyramidPool,
    SpatialPyramidPool,
    paper_pool_params,
    project_rois,
    pyramid_length,
    roi_spp,
    spatial_pyramid_pool,
)

__all__ = [
    "RoISpatialPyramidPool",
    "SpatialPyramidPool",
    "paper_pool_params",
    "project_rois",
    "pyramid_length",
    "roi_spp",
    "spatial_pyramid_pool",
]
