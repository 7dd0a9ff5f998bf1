"""fc compression (test.fc_compression): spec parsing, truncated SVD against a numpy reference,
int8 dynamic quantisation close to float, the Predictor option and its bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from sppdet.config import load_config
from sppdet.errors import ConfigError
from sppdet.modeling.compress import (
    FcCompression,
    checked_fc_compression,
    compress_head,
    parse_fc_compression,
    svd_ranks,
)
from sppdet.modeling.head import SPPHead


def _head(in_dim=96, dims=(64, 48)):
    torch.manual_seed(0)
    head = SPPHead(in_dim, 3, dims, dropout=0.5).eval()
    with torch.no_grad():
        for m in head.fc:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-0.1, 0.1)
    return head


def test_parse_round_trip_and_bad_specs():
    assert parse_fc_compression("") == FcCompression() and parse_fc_compression("none").is_identity
    c = parse_fc_compression("svd:0.25+int8")
    assert c == FcCompression((0.25,), True) and c.spec() == "svd:0.25+int8"
    assert parse_fc_compression("svd:0.5,0.125").svd_fractions == (0.5, 0.125)
    assert parse_fc_compression(" INT8 ").spec() == "int8"
    for bad in ("svd:0", "svd:1.5", "svd:x", "svd:", "int4", "int8+svd:0.5", "int8+int8", "svd:0.5+svd:0.25"):
        with pytest.raises(ConfigError, match="test.fc_compression"):
            parse_fc_compression(bad)


def test_ranks_from_fractions_skip_layers_svd_would_not_speed_up():
    head = _head(96, (64, 48))
    assert svd_ranks(head, [0.25]) == [16, 12]  # round(0.25 * min(in, out))
    # rank 48 of a 64x48 layer: 48 * 112 > 64 * 48, no saving -> left full (0)
    assert svd_ranks(head, [0.5, 1.0]) == [32, 0]
    with pytest.raises(ConfigError, match="rank fractions"):
        svd_ranks(head, [0.5, 0.5, 0.5])


def test_svd_matches_numpy_truncated_reconstruction():
    head = _head()
    out = compress_head(head, "svd:0.25")
    x = torch.randn(20, 96)
    # reference: each fc weight replaced by its rank-r numpy SVD reconstruction
    ref = x.double().numpy()
    for lin, rank in zip([m for m in head.fc if isinstance(m, nn.Linear)], [16, 12]):
        u, s, vt = np.linalg.svd(lin.weight.detach().double().numpy(), full_matrices=False)
        w = (u[:, :rank] * s[:rank]) @ vt[:rank]
        ref = np.maximum(ref @ w.T + lin.bias.detach().double().numpy(), 0.0)
    with torch.no_grad():
        got = out.features(x)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert head.fc[0].weight.shape == (64, 96)  # the input head is left alone


def test_int8_close_to_float_and_only_the_trunk_is_quantised():
    head = _head()
    q = compress_head(head, "svd:0.5+int8")
    names = {type(m).__module__ for m in q.fc.modules()}
    assert any("quantized" in n for n in names)
    assert isinstance(q.cls_score, nn.Linear) and isinstance(q.bbox_pred, nn.Linear)
    x = torch.randn(50, 96)
    with torch.no_grad():
        ref, got = compress_head(head, "svd:0.5").features(x), q.features(x)
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.05, rel  # 8-bit weights and activations: about 1% relative error


def test_checked_against_other_test_settings():
    cfg = load_config(None, ["test.fc_compression=svd:0.25", "test.svd_rank_fc6=128"])
    with pytest.raises(ConfigError, match="not both"):
        checked_fc_compression(cfg.test)
    cfg = load_config(None, ["test.fc_compression=int8"])
    with pytest.raises(ConfigError, match="CPU only"):
        checked_fc_compression(cfg.test, "cuda")
    assert checked_fc_compression(cfg.test).int8
