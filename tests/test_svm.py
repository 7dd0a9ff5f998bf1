"""Per-class SVMs with hard negative mining, ridge box regression, and the paper scorer."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sppdet.svm import (
    ClassSVM,
    MiningImage,
    PaperScorer,
    RidgeAccumulator,
    SVMParams,
    feature_scale,
    fit_ridge,
    scorer_state,
    train_svms,
)


def toy_problem(seed=0, dim=8, num_images=30, per_image=100):
    """Two classes of positives around +-mu; negatives around 0, all far from both."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(dim, np.float32)
    mu[0] = 6.0
    pos = [
        mu + rng.normal(0, 0.5, (40, dim)).astype(np.float32),
        -mu + rng.normal(0, 0.5, (40, dim)).astype(np.float32),
    ]
    images = []
    for i in range(num_images):
        x = rng.normal(0, 0.7, (per_image, dim)).astype(np.float32)
        images.append(MiningImage(x, np.ones((per_image, 2), bool), np.arange(per_image) + i * 1000))
    return pos, images


def test_first_negatives_all_hard_and_never_cached_twice():
    svm = ClassSVM(np.ones((3, 4), np.float32), SVMParams(retrain_limit=100))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert not svm.add_negatives(x, np.arange(5))  # w = 0: every score 0 > -1.0001
    assert len(svm.neg) == 5
    svm.add_negatives(x, np.arange(5))
    assert len(svm.neg) == 5 and svm.new_since_train == 5


@pytest.mark.slow  # 17 s measured (load 13-19 on 2 cores)
def test_mining_separates_toy_data_and_bounds_the_cache():
    pos, images = toy_problem()
    params = SVMParams(C=1.0, retrain_limit=300, evict_thresh=-1.2)
    svms = train_svms(pos, images, params, epochs=2)
    all_neg = np.concatenate([im.x for im in images])
    for k, svm in enumerate(svms):
        ps, ns = svm.score(pos[k]), svm.score(all_neg)
        assert ps.min() > 0 and ns.max() < 0, (k, ps.min(), ns.max())
        # hard margin on separable data: every positive and negative outside the margin (up to tol)
        assert ps.min() >= 1 - 0.05 and ns.max() <= -1 + 0.05
        # the other class's positives are not its negatives here, but it still scores them low
        assert svm.score(pos[1 - k]).max() < 0
        # eviction: no easy negative left in the cache, and the cache is a small part of the data
        assert len(svm.neg) > 0 and svm.score(svm.neg).min() >= params.evict_thresh
        assert len(svm.neg) < len(all_neg) // 5
        assert svm.num_retrains >= 2 and len(set(svm.neg_keys.tolist())) == len(svm.neg_keys)


def test_class_without_positives_never_fires():
    pos, images = toy_problem(num_images=3)
    svms = train_svms([pos[0], np.zeros((0, 8), np.float32)], images, SVMParams(C=1.0))
    assert (svms[1].score(pos[0]) < -10).all()


def test_feature_scale():
    x = np.random.default_rng(0).normal(size=(100, 16))
    s = feature_scale(x, 20.0)
    assert np.linalg.norm(x * s, axis=1).mean() == pytest.approx(20.0)


def test_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 12)) + 3.0  # not centred: the bias must come out right
    w_true = rng.normal(size=(12, 4))
    b_true = rng.normal(size=4)
    y = x @ w_true + b_true
    w, b = fit_ridge(x, y, lam=1e-6)
    assert np.allclose(w, w_true, atol=1e-5) and np.allclose(b, b_true, atol=1e-4)
    # chunked float32 accumulation gives the same answer
    acc = RidgeAccumulator(12, 4)
    for i in range(0, 600, 128):
        acc.add(torch.from_numpy(x[i : i + 128]).float(), torch.from_numpy(y[i : i + 128]).float())
    w2, b2 = acc.solve(1e-6)
    assert np.allclose(w2.numpy(), w_true, atol=1e-3) and np.allclose(b2.numpy(), b_true, atol=1e-2)
    # buffering rows before each X^T X (any gram_rows) gives the same sums
    for rows in (1, 200, 10_000):
        buf = RidgeAccumulator(12, 4, gram_rows=rows)
        for i in range(0, 600, 128):
            buf.add(torch.from_numpy(x[i : i + 128]), torch.from_numpy(y[i : i + 128]))
        w4, b4 = buf.solve(1e-6)
        assert np.allclose(w4.numpy(), w, atol=1e-8) and np.allclose(b4.numpy(), b, atol=1e-8)
    # a huge lambda shrinks W to 0 and leaves the (unregularised) bias at the mean target
    w3, b3 = fit_ridge(x, y, lam=1e12)
    assert np.abs(w3).max() < 1e-6 and np.allclose(b3, y.mean(0), atol=1e-4)


def test_gram_upper_matches_matmul():
    from sppdet.svm import gram_upper

    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        x = torch.randn(37, 19, generator=g, dtype=dtype)
        for inp in (x, x.T.contiguous().T, x[::2]):  # contiguous, column-major, strided rows
            ref = (inp.double().T @ inp.double()).numpy()
            got = gram_upper(inp).numpy()
            iu = np.triu_indices(19)
            assert got.dtype == np.float64
            assert np.allclose(got[iu], ref[iu], rtol=tol, atol=tol)
    # other dtypes take the matmul path and give the full product
    h = torch.randn(8, 5, generator=g).bfloat16()
    assert torch.allclose(gram_upper(h), (h.T @ h).double())


def test_paper_scorer_from_state():
    from sppdet.modeling.head import SPPHead

    torch.manual_seed(0)
    head = SPPHead(10, num_classes=2, fc_dims=(6, 5), dropout=0.5).eval()
    model = SimpleNamespace(head=head)
    sw, sb = np.random.randn(2, 5).astype(np.float32), np.array([0.5, -0.5], np.float32)
    bw, bb = np.random.randn(10, 8).astype(np.float32), np.zeros(8, np.float32)
    state = scorer_state(sw, sb, 2.0, bw, bb, 0.5)
    assert all(isinstance(v, (torch.Tensor, float, int, str)) for v in state.values())
    scorer = PaperScorer.from_state(state, None, "cpu")
    pooled = torch.rand(7, 10)
    scores, deltas = scorer(model, pooled, torch.zeros(7, 4))
    assert scores.shape == (7, 3) and deltas.shape == (7, 8)
    assert (scores[:, 0] == 0).all() and ((scores >= 0) & (scores <= 1)).all()
    margin = (head.features(pooled) * 2.0) @ torch.from_numpy(sw).T + torch.from_numpy(sb)
    assert torch.allclose(scores[:, 1:], torch.sigmoid(margin), atol=1e-6)
    assert torch.allclose(deltas, pooled * 0.5 @ torch.from_numpy(bw), atol=1e-5)
    no_bbox = PaperScorer.from_state(scorer_state(sw, sb, 2.0), None, "cpu")
    assert no_bbox(model, pooled, torch.zeros(7, 4))[1] is None
