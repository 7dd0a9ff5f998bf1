"""Bottom-layer data structures: boxes (:mod:`.boxes`) and detection results (:mod:`.detections`).

Box convention used everywhere inside sppdet: see :mod:`sppdet.structures.boxes`.
"""

from .boxes import (
    BBOX_XFORM_CLIP,
    DEFAULT_BOX_WEIGHTS,
    ArrayLike,
    BoxCoder,
    as_boxes_tensor,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    hflip_boxes,
    rcnn_mat_to_xyxy,
    remove_small_boxes,
    valid_boxes_mask,
    voc_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_rcnn_mat,
    xyxy_to_voc,
    xyxy_to_xywh,
    zero_based_inclusive_to_xyxy,
)
from .detections import Detections, ImageDetections

__all__ = [
    "ArrayLike",
    "BBOX_XFORM_CLIP",
    "BoxCoder",
    "DEFAULT_BOX_WEIGHTS",
    "Detections",
    "ImageDetections",
    "as_boxes_tensor",
    "box_area",
    "box_iou",
    "clip_boxes",
    "cxcywh_to_xyxy",
    "hflip_boxes",
    "rcnn_mat_to_xyxy",
    "remove_small_boxes",
    "valid_boxes_mask",
    "voc_to_xyxy",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_rcnn_mat",
    "xyxy_to_voc",
    "xyxy_to_xywh",
    "zero_based_inclusive_to_xyxy",
]
