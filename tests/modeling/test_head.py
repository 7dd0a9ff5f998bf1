import torch

from sppdet.modeling.head import SPPHead
from sppdet.modeling.loss import FastRCNNLoss
from sppdet.modeling.postprocess import PostProcess
from sppdet.structures import BoxCoder


def test_head_shapes_and_svd_exact_at_full_rank():
    torch.manual_seed(0)
    head = SPPHead(50, num_classes=3, fc_dims=(40, 30), dropout=0.0).eval()
    x = torch.rand(7, 50)
    out = head(x)
    assert out["cls_logits"].shape == (7, 4) and out["bbox_deltas"].shape == (7, 12) and out["fc7"].shape == (7, 30)
    ref = {k: v.clone() for k, v in out.items()}
    # rank = min(in, out) - 1 keeps almost everything; full SVD of a rank-deficient layer is exact
    with torch.no_grad():
        w = head.fc[0].weight
        w.copy_(torch.rand(40, 5) @ torch.rand(5, 50))  # rank 5
    ref = head(x)
    head.compress_svd([5, 0])
    assert isinstance(head.fc[0], torch.nn.Sequential)
    out = head(x)
    assert torch.allclose(out["cls_logits"], ref["cls_logits"], atol=1e-4)


def test_loss_hand_value():
    outputs = {"cls_logits": torch.zeros(2, 3), "bbox_deltas": torch.zeros(2, 8)}
    labels = torch.tensor([0, 2])
    targets = torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0.5]])
    losses = FastRCNNLoss()(outputs, labels, targets)
    assert torch.isclose(losses["loss_cls"], torch.log(torch.tensor(3.0)))
    # smooth-L1(beta=1) of (1, 0, 0, 0.5) = 0.5 + 0.125, divided by 2 windows
    assert torch.isclose(losses["loss_box"], torch.tensor(0.625 / 2))


def test_postprocess_nms_and_threshold():
    pp = PostProcess(BoxCoder(), score_thresh=0.1, nms_thresh=0.3, max_detections=10)
    props = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.95, 0.0, 0.05]])
    out = pp(scores, torch.zeros(3, 8), props, (100, 100))
    # box 1 suppressed by box 0 (IoU 0.68 > 0.3); box 2 below threshold
    assert out["labels"].tolist() == [1] and torch.allclose(out["boxes"], props[:1])


def test_fold_input_affine_equals_standardized_input():
    # head(raw x) after folding == head((x - mean) / std) before, for every output
    torch.manual_seed(0)
    head = SPPHead(50, num_classes=3, fc_dims=(40, 30), dropout=0.5).eval()
    x = torch.randn(9, 50) * 3 + 2
    mean, std = torch.randn(50), torch.rand(50) + 0.5
    ref = head((x - mean) / std)
    head.fold_input_affine(mean, std)
    out = head(x)
    for k in ("cls_logits", "bbox_deltas", "fc7"):
        assert torch.allclose(out[k], ref[k], atol=1e-5), k
    head.compress_svd([10, 0])
    try:
        head.fold_input_affine(mean, std)
    except ValueError as e:
        assert "plain Linear" in str(e)
    else:
        raise AssertionError("folding into an SVD pair must be refused")
