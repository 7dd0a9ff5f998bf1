"""Spatial pyramid pooling: image-level SPP and region SPP (SPP-net, He et al. 2014).

One file per part:

* :mod:`.common` -- argument checks, :func:`pyramid_length`, the binning rule, chunked output.
* :mod:`.image` -- image-level SPP (:func:`spatial_pyramid_pool`, :class:`SpatialPyramidPool`).
* :mod:`.projection` -- windows in image pixels -> feature cells (:func:`project_rois`).
* :mod:`.region` -- region SPP (:func:`roi_spp`, :class:`RoISpatialPyramidPool`), which picks
  a backend: :mod:`.max_numba` (max on CPU float32 maps, with and without autograd),
  :mod:`.max_tables` (no autograd), :mod:`.max_train`, :mod:`.max_roi_pool` and
  :mod:`.max_rank` (differentiable max), :mod:`.avg` (average).

Shape shorthand
---------------
``N`` images, ``C`` channels, ``H x W`` feature map, ``K`` regions, ``levels`` = the pyramid,
level ``n`` = ``n x n`` bins. Every pooled vector has ``C * sum(n * n)`` numbers laid out level
by level in the given order, each level as ``(C, n, n)`` flattened (channel-major), i.e. what
``torch.cat([p.reshape(len(p), -1) for p in per_level], 1)`` gives for ``p`` of shape
``(*, C, n, n)``.

Binning
-------
A segment of ``a`` cells starting at ``s`` is split into ``n`` bins; bin ``i`` covers cells
``[s + floor(i*a/n), s + ceil((i+1)*a/n))``. Bins are never empty (even when ``a < n``; then
cells repeat) and, over the image, this is exactly ``AdaptiveMaxPool2d``/``AdaptiveAvgPool2d``.
A level-``m`` bin is the union of the level-``k*m`` bins ``k*i .. k*i+k-1`` (their first start
is ``floor(k*i*a/(k*m)) = floor(i*a/m)``, their last end ``ceil((i+1)*a/m)``, and consecutive
bins touch or overlap), so for max pooling coarser levels are reduced from a finer grid.

Region projection (SPP-net, Appendix A)
---------------------------------------
Feature cell ``j`` is centred at image coordinate ``stride * j + offset``. A window
``(x1, y1, x2, y2)`` in image pixels maps to the inclusive cells
``x1' = floor((x1 - offset) / stride) + 1`` .. ``x2' = ceil((x2 - offset) / stride) - 1``
(same for ``y``); see :func:`project_rois`.
"""

from .common import pyramid_length
from .image import SpatialPyramidPool, paper_pool_params, spatial_pyramid_pool
from .projection import project_rois
from .region import RoISpatialPyramidPool, roi_spp

__all__ = [
    "pyramid_length",
    "paper_pool_params",
    "spatial_pyramid_pool",
    "SpatialPyramidPool",
    "project_rois",
    "roi_spp",
    "RoISpatialPyramidPool",
]
