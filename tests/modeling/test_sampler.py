import torch

from sppdet.modeling.sampler import sample_windows
from sppdet.structures import BoxCoder, box_iou


def _props(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = 10 + torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + wh], 1)


def test_fg_bg_ratios_and_ranges():
    gt = torch.tensor([[20.0, 20.0, 120.0, 100.0], [150.0, 40.0, 220.0, 160.0]])
    labels = torch.tensor([1, 3])
    props = _props(2000)
    s = sample_windows(props, gt, labels, BoxCoder(), 64, 0.25, 0.5, 0.1, 0.5, torch.Generator().manual_seed(1))
    assert len(s.labels) == 64
    fg = s.labels > 0
    assert int(fg.sum()) == 16  # 25% of 64, enough candidates exist
    iou = box_iou(s.boxes, gt).max(1).values
    assert (iou[fg] >= 0.5).all()
    assert ((iou[~fg] >= 0.1) & (iou[~fg] < 0.5)).all()
    # labels follow the best-matching gt; targets decode back to that gt
    best = box_iou(s.boxes[fg], gt).argmax(1)
    assert torch.equal(s.labels[fg], labels[best])
    dec = BoxCoder().decode(s.targets[fg], s.boxes[fg])
    assert torch.allclose(dec, gt[best], atol=1e-3)


def test_no_objects_gives_all_background():
    s = sample_windows(_props(100), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), BoxCoder(), 64)
    assert len(s.labels) == 64 and (s.labels == 0).all()


def test_gt_added_when_no_proposal_overlaps():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    props = torch.tensor([[100.0, 100.0, 150.0, 150.0]])
    s = sample_windows(props, gt, torch.tensor([2]), BoxCoder(), 8)
    assert (s.labels == 2).sum() == 1 and len(s.labels) == 2
