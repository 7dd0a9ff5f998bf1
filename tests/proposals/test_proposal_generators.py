"""Built-in generators on a real photo: sane boxes, reproducible, right conventions."""

import cv2
import numpy as np
import pytest

from sppdet.config import ProposalConfig
from sppdet.errors import ConfigError, DataError
from sppdet.proposals import compute_proposals
from sppdet.proposals.edge_boxes import edge_boxes, edges_nms, gradient_edges
from sppdet.proposals.selective_search import rects_to_boxes, selective_search


@pytest.fixture
def photo(demo_dir):
    img = cv2.imread(str(demo_dir / "001551.jpg"))
    assert img is not None and img.shape[:2] == (375, 500)
    return np.ascontiguousarray(img[:, :, ::-1])


def _sane(boxes, w, h):
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) > 100
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2] - boxes[:, 0]) >= 2).all() and ((boxes[:, 3] - boxes[:, 1]) >= 2).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    # boxes come back in original pixels: some reach well beyond the small working size
    assert boxes[:, 2].max() > 0.9 * w


def test_selective_search_fast_small(photo):
    boxes = selective_search(photo, mode="fast", max_side=160, max_boxes=2000)
    _sane(boxes, 500, 375)
    again = selective_search(photo, mode="fast", max_side=160, max_boxes=2000)
    np.testing.assert_array_equal(boxes, again)  # ranking's random factor is seeded
    top = selective_search(photo, mode="fast", max_side=160, max_boxes=50)
    np.testing.assert_array_equal(top, boxes[:50])


def test_selective_search_quality_mode_runs(photo):
    small = cv2.resize(photo, (100, 75), interpolation=cv2.INTER_AREA)
    boxes = selective_search(small, mode="quality", max_side=0, max_boxes=0, min_size=1)
    assert len(boxes) > 50 and boxes[:, 2].max() <= 100 and boxes[:, 3].max() <= 75
    with pytest.raises(ValueError, match="mode"):
        selective_search(small, mode="slow")


def test_edge_boxes_gradient_edges(photo):
    boxes, scores = edge_boxes(photo, max_boxes=2000)
    _sane(boxes, 500, 375)
    assert scores.shape == (len(boxes),) and np.all(np.diff(scores) <= 1e-6)  # best first
    b2, _ = edge_boxes(photo, max_boxes=300, max_side=250)
    _sane(b2, 500, 375)


def test_missing_structured_edge_model_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="nope.yml.gz: structured-edge model file not found"):
        edge_boxes(np.zeros((50, 50, 3), np.uint8), model_path=str(tmp_path / "nope.yml.gz"))


def test_gradient_edges_and_nms_on_a_step():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 255  # vertical step edge between columns 19 and 20
    edges, orient = gradient_edges(img)
    assert edges.dtype == np.float32 and 0 <= edges.min() and edges.max() <= 1.0
    assert abs(float(np.median(orient[10:30, 19:21])) % np.pi) < 0.1  # gradient across x: angle 0
    thin = edges_nms(edges, orient)
    row = thin[20]
    assert (row > 0.5).sum() <= 2 and row[18:22].max() == edges[20, 18:22].max()


def test_rects_to_boxes_maps_back_to_original_pixels():
    rects = np.array([[0, 0, 50, 25], [10, 5, 1, 1]])  # opencv (x, y, w, h), pixels x..x+w-1
    boxes = rects_to_boxes(rects, 0.5, 0.5, 100, 50)
    np.testing.assert_array_equal(boxes, [[0, 0, 100, 50], [20, 10, 22, 12]])


def test_compute_proposals_dispatch(photo):
    cfg = ProposalConfig(max_side=120, max_per_image=200)
    small = cv2.resize(photo, (200, 150))
    boxes, scores = compute_proposals(small, "ss-fast", cfg)
    assert scores is None and 0 < len(boxes) <= 200
    boxes, scores = compute_proposals(small, "edgeboxes", cfg)
    assert scores is not None and len(scores) == len(boxes) > 0
    with pytest.raises(ConfigError, match="unknown method 'rpn'"):
        compute_proposals(small, "rpn", cfg)
