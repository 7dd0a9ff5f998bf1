"""Region proposals: the native store, foreign formats, generators, recall.

* :mod:`.store` -- the native per-dataset ``.npz`` store (:func:`save_proposals`, :class:`ProposalStore`).
* :mod:`.io` -- foreign formats (R-CNN ``.mat``, per-image files, Detectron/detectron2/mmdet
  pickles, COCO json) converted to our box convention; :func:`sanitize_proposals`.
* :mod:`.selective_search`, :mod:`.edge_boxes` -- built-in generators (opencv-contrib). Their
  functions are not re-exported here, so that ``sppdet.proposals.edge_boxes`` stays the module:
  ``from sppdet.proposals.edge_boxes import edge_boxes``.
* :mod:`.build` -- :func:`get_proposals` (cached, resumable) used by training and inference.
* :mod:`.recall` -- recall / average recall against ground truth.
"""

from .build import METHODS, compute_dataset_proposals, compute_proposals, get_proposals
from .io import convert_to_store, load_proposals, sanitize_proposals, write_store
from .recall import evaluate_recall, format_recall_table, save_recall_report
from .store import ProposalStore, save_proposals

__all__ = [
    "METHODS",
    "ProposalStore",
    "compute_dataset_proposals",
    "compute_proposals",
    "convert_to_store",
    "evaluate_recall",
    "format_recall_table",
    "get_proposals",
    "load_proposals",
    "sanitize_proposals",
    "save_proposals",
    "save_recall_report",
    "write_store",
]
