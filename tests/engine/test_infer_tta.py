"""Test-time flip (``test.flip``): the detections equal post-processing of the two views' averaged
outputs, computed here by hand from the model's parts."""

import numpy as np
import torch

from sppdet.config import load_config
from sppdet.engine.infer import Predictor
from sppdet.modeling.detector import build_detector
from sppdet.modeling.postprocess import PostProcess
from sppdet.structures import BoxCoder


def _setup(flip: bool):
    cfg = load_config(
        None,
        [
            "model.backbone=tiny",
            "model.tiny_width=8",
            "model.dropout=0.0",
            "model.fc_dims=[32, 32]",
            "model.spp_levels=[2, 1]",
            "input.test_scales=[200]",
            "test.score_thresh=0.0",
            f"test.flip={str(flip).lower()}",
        ],
    )
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=3).eval()
    with torch.no_grad():  # box deltas far from zero, so a wrong sign of dx shows
        model.head.bbox_pred.bias.uniform_(-0.5, 0.5)
    return cfg, model


def _views_by_hand(model, cfg, image, props):
    width = image.shape[1]
    mirrored = props.clone()
    mirrored[:, 0], mirrored[:, 2] = width - props[:, 2], width - props[:, 0]
    outs = []
    with torch.no_grad():
        for flip, boxes in ((False, props), (True, mirrored)):
            batch = model.prepare([image], cfg.input.test_scales, cfg.input.max_size, [flip])
            feats = model.conv_features(batch)
            rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
            out = model.head(model.pool(feats, batch.factors, rois))
            d = out["bbox_deltas"].clone()
            if flip:
                d[:, 0::4] *= -1
            outs.append((torch.softmax(out["cls_logits"], 1), d))
    return (outs[0][0] + outs[1][0]) / 2, (outs[0][1] + outs[1][1]) / 2, outs


def test_flip_averages_both_views():
    cfg, model = _setup(True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    xy = rng.uniform(0, 150, (40, 2))
    props = torch.tensor(np.concatenate([xy, xy + rng.uniform(20, 100, (40, 2))], 1), dtype=torch.float32)
    props[:, 2].clamp_(max=260)
    props[:, 3].clamp_(max=200)
    scores, deltas, views = _views_by_hand(model, cfg, image, props)
    assert not torch.allclose(views[0][0], views[1][0])  # the two views do differ
    tc = cfg.test
    ref = PostProcess(BoxCoder(cfg.model.box_weights), tc.score_thresh, tc.nms_thresh, tc.max_detections)(
        scores, deltas, props, image.shape[:2]
    )
    got = Predictor(model, cfg, ["a", "b", "c"]).predict(image, props.numpy())
    assert len(got.scores) == len(ref["scores"]) > 0
    np.testing.assert_allclose(got.scores, ref["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.boxes, ref["boxes"].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(got.labels, ref["labels"].numpy())


def test_without_flip_only_the_image_itself_counts():
    cfg, model = _setup(False)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    props = torch.tensor([[10.0, 20, 120, 150], [50, 40, 250, 190], [0, 0, 60, 60]])
    _, _, views = _views_by_hand(model, cfg, image, props)
    tc = cfg.test
    ref = PostProcess(BoxCoder(cfg.model.box_weights), tc.score_thresh, tc.nms_thresh, tc.max_detections)(
        views[0][0], views[0][1], props, image.shape[:2]
    )
    got = Predictor(model, cfg, ["a", "b", "c"]).predict(image, props.numpy())
    np.testing.assert_allclose(got.scores, ref["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.boxes, ref["boxes"].numpy(), rtol=1e-5, atol=1e-3)
