"""SPPClassifier: any input size gives the fixed length C * sum(l*l); a list of mixed sizes
gives the same scores as each image alone."""

import pytest
import torch

from sppdet.classification.model import build_classifier
from sppdet.config import ModelConfig
from sppdet.data.transforms import normalize_image


def _tiny(levels=(4, 2, 1), mode="max", fc=(16,)):
    cfg = ModelConfig(backbone="tiny", tiny_width=8, spp_levels=list(levels), spp_mode=mode, fc_dims=list(fc))
    torch.manual_seed(0)
    return build_classifier(cfg, 3).eval()


@pytest.mark.parametrize("levels", [(4, 2, 1), (6, 3, 2, 1), (1,)])
@pytest.mark.parametrize("size", [(1, 1), (9, 7), (17, 23), (64, 48), (40, 150)])
def test_any_size_gives_fixed_length(levels, size):
    model = _tiny(levels)
    channels = model.backbone.out_channels
    expected = channels * sum(n * n for n in levels)  # the paper's C * sum(l*l)
    with torch.no_grad():
        pooled = model.pooled(torch.rand(2, 3, *size) * 255)
        logits = model(torch.rand(2, 3, *size) * 255)
    assert pooled.shape == (2, expected)
    assert model.feature_length == expected
    assert logits.shape == (2, 3)


def test_list_of_sizes_matches_single_images():
    model = _tiny()
    images = [torch.rand(3, h, w) * 255 for h, w in [(30, 40), (64, 64), (30, 40), (100, 21)]]
    with torch.no_grad():
        together = model(images)
        alone = torch.cat([model(im.unsqueeze(0)) for im in images])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_global_pooling_baseline_is_spatial_mean():
    model = _tiny(levels=(1,), mode="avg", fc=())
    x = torch.rand(2, 3, 48, 64) * 255
    with torch.no_grad():
        feats = model.backbone(normalize_image(x, model.backbone.normalization))
        torch.testing.assert_close(model.pooled(x), feats.mean((2, 3)))
    assert [type(m).__name__ for m in model.head] == ["Linear"]


def test_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_classifier(ModelConfig(backbone="tiny", tiny_width=8), 1)
