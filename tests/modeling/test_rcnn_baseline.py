import numpy as np
import pytest
import torch

from sppdet.config import load_config
from sppdet.modeling.detector import build_detector
from sppdet.modeling.rcnn_baseline import RCNNBaseline, context_boxes, warp_windows


def _model(backbone: str):
    cfg = load_config(
        None,
        [
            f"model.backbone={backbone}",
            "model.tiny_width=8",
            "model.dropout=0.0",
            "model.fc_dims=[64, 32]",
            "input.test_scales=[224]",
        ],
    )
    torch.manual_seed(0)
    return build_detector(cfg, num_classes=3).eval()


@pytest.mark.parametrize("backbone", ["tiny", "zf5"])
def test_whole_image_window_same_features_in_both_modes(backbone):
    """A 224x224 image and the window (0, 0, 224, 224), no context: SPP mode == R-CNN mode."""
    model = _model(backbone)
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    window = torch.tensor([[0.0, 0.0, 224.0, 224.0]])
    with torch.no_grad():
        batch = model.prepare([image], [224], 2000)
        spp = model.pool(model.conv_features(batch), batch.factors, torch.cat([torch.zeros(1, 1), window], 1))
        rcnn = RCNNBaseline(model, context=0)
        vec = rcnn.window_features(rcnn.prepare(image), window)
        assert vec.shape == spp.shape == (1, model.spp_dim)
        assert torch.allclose(vec, spp, rtol=1e-5, atol=1e-5)
        # the head sees the same input, so the outputs agree as well
        out, ref = rcnn(rcnn.prepare(image), window), model.head(spp)
        assert torch.allclose(out["cls_logits"], ref["cls_logits"], rtol=1e-4, atol=1e-5)


def test_context_padding_hand_checked():
    # 192 x 96 window: 16 px of context in the 224 warped frame = 16 * 192/192 = 16 px in x,
    # 16 * 96/192 = 8 px in y of the original image on each side.
    out = context_boxes(torch.tensor([[100.0, 50.0, 292.0, 146.0]]))
    assert torch.allclose(out, torch.tensor([[84.0, 42.0, 308.0, 154.0]]))
    assert torch.equal(
        context_boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), context=0), torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32: cv2 path, float64: roi_align
def test_warp_geometry_hand_checked(dtype):
    """Bilinear warp of a linear ramp is exact: crop pixel (r, c) reads image point
    (x1 + (c + 0.5) * w / 224, y1 + (r + 0.5) * h / 224), and 0 outside the image."""
    H, W = 200, 400
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    image = torch.stack([xs + 0.5, ys + 0.5, torch.ones(H, W, dtype=dtype)])  # value = continuous pixel centre
    box = torch.tensor([[100.0, 50.0, 292.0, 146.0]])  # with context: (84, 42, 308, 154)
    crop = warp_windows(image, box)
    assert crop.shape == (1, 3, 224, 224) and crop.dtype == dtype
    c = torch.arange(224, dtype=dtype)
    tol = 1 / 32  # cv2 quantises sample positions to 1/32 px
    assert torch.allclose(crop[0, 0, 0], 84.0 + (c + 0.5) * 224 / 224, atol=tol)  # x: 1 image px per crop px
    assert torch.allclose(crop[0, 0, 100], 84.0 + (c + 0.5), atol=tol)
    assert torch.allclose(crop[0, 1, :, 0], 42.0 + (c + 0.5) * 112 / 224, atol=tol)  # y: half a px per crop px
    # the original window lands 16 px inside the crop on each side
    assert float(crop[0, 0, 0, 16]) == pytest.approx(100.5, abs=tol)
    assert float(crop[0, 1, 16, 0]) == pytest.approx(50.25, abs=tol)
    # a window hanging over the left/top border: the outside reads 0 (the mean after normalisation)
    crop = warp_windows(image, torch.tensor([[-112.0, -112.0, 112.0, 112.0], [0.0, 0.0, 8.0, 8.0]]), context=0)
    assert crop[0, 2, :100, :100].abs().max() == 0 and crop[0, 2, 120:, 120:].min() == 1.0
    assert float(crop[0, 0, 200, 150]) == pytest.approx(-112 + 150.5, abs=tol)
    assert float(crop[1, 0, 0, 223]) == pytest.approx(8 - 0.5 * 8 / 224, abs=tol)  # second window of the batch


def test_rcnn_outputs_batched_like_single():
    model = _model("tiny")
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = torch.tensor([[0.0, 0.0, 50.0, 40.0], [30.0, 20.0, 160.0, 120.0], [-10.0, 5.0, 20.0, 90.0]])
    with torch.no_grad():
        rcnn = RCNNBaseline(model, batch_size=2)
        im = rcnn.prepare(image)
        out = rcnn(im, boxes)
        assert out["cls_logits"].shape == (3, 4) and out["bbox_deltas"].shape == (3, 12)
        one = RCNNBaseline(model, batch_size=1).window_features(im, boxes[1:2])
        assert torch.allclose(rcnn.window_features(im, boxes)[1:2], one, rtol=1e-4, atol=1e-5)
        assert rcnn.window_features(im, boxes[:0]).shape == (0, model.spp_dim)
        assert rcnn(im, boxes[:0])["cls_logits"].shape == (0, 4)


def test_channels_last_inference_same_features_and_training_unaffected():
    """CPU inference feeds the convs channels-last (SPPDetector.conv_features): same numbers;
    training (autograd on) keeps the plain layout."""
    model = _model("tiny")
    image = np.random.default_rng(2).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    batch = model.prepare([image], [224], 2000)
    rois = torch.tensor([[0.0, 10.0, 10.0, 120.0, 90.0], [0.0, 0.0, 0.0, 140.0, 100.0]])
    with torch.no_grad():
        ref = model.backbone(batch.images[0])
        ref_pooled = model.pool([ref], batch.factors, rois)
    with torch.inference_mode():
        (feats,) = model.conv_features(batch)
        pooled = model.pool([feats], batch.factors, rois)
    assert feats.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(feats, ref, rtol=1e-4, atol=1e-5)
    assert torch.allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-5)
    model.train()
    (train_feats,) = model.conv_features(batch)
    assert train_feats.is_contiguous()
    model(batch, rois)["cls_logits"].sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_inference_backbone_folds_batch_norm_and_follows_weight_changes():
    from sppdet.modeling.detector import inference_backbone

    model = _model("tiny")
    for m in model.backbone.modules():  # non-trivial batch-norm statistics to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    batch = model.prepare([np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)], [224], 2000)
    x = batch.images[0]

    def check():
        with torch.no_grad():
            ref = model.backbone(x)
        with torch.inference_mode():
            (out,) = model.conv_features(batch)
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)

    check()
    fast = inference_backbone(model.backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert inference_backbone(model.backbone) is fast  # cached
    conv = model.backbone.stage1[0]
    with torch.no_grad():
        conv.weight.mul_(0.5)  # in place: version counter changes
    check()
    conv.weight.data[0] += 1.0  # through .data: only the weights' sum tells
    check()
    model.backbone.load_state_dict(
        {k: v * 1.1 for k, v in model.backbone.state_dict().items() if v.is_floating_point()}, strict=False
    )
    check()
    assert inference_backbone(model.backbone) is not fast


def test_conv_features_of_a_model_built_in_inference_mode():
    with torch.inference_mode():
        model = _model("tiny")
        batch = model.prepare([np.zeros((40, 60, 3), np.uint8)], [224], 2000)
        (feats,) = model.conv_features(batch)
        assert torch.allclose(feats, model.backbone(batch.images[0]), rtol=1e-4, atol=1e-5)
