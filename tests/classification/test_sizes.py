"""Size buckets and the multi-size schedule (epoch- or batch-wise alternation)."""

import dataclasses

import numpy as np

from sppdet.classification.config import ClassifierInputConfig
from sppdet.classification.sizes import bucket_batches, make_batch, native_size, plan_epoch, schedule_value


def _native(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(20, 200, size=(n, 2))


def test_native_size_rounds_to_buckets_and_caps():
    icfg = ClassifierInputConfig(mode="native", bucket_step=16, min_side=32, max_side=320)
    assert native_size(100, 57, 1.0, icfg) == (96, 64)  # 100 -> 6.25 steps -> 96; 57 -> 3.56 -> 64
    assert native_size(10, 5, 1.0, icfg) == (32, 32)  # min_side
    assert native_size(640, 320, 1.0, icfg) == (320, 160)  # longer side capped, aspect kept
    assert native_size(100, 57, 0.8, icfg) == (80, 48)  # 80 -> 80; 45.6 -> 2.85 steps -> 48


def test_bucket_batches_cover_every_index_once_in_one_size():
    icfg = ClassifierInputConfig(mode="native", bucket_step=32)
    native = _native()
    sizes = [native_size(h, w, 1.0, icfg) for h, w in native]
    batches = bucket_batches(list(range(len(native))), sizes, 4, np.random.default_rng(1))
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(len(native)))
    for b in batches:
        assert 1 <= len(b.indices) <= 4
        assert all(sizes[i] == b.size for i in b.indices)


def test_multi_size_alternates_by_epoch():
    icfg = ClassifierInputConfig(mode="warp", sizes=[224, 180], alternate="epoch")
    native, rng = _native(), np.random.default_rng(0)
    seen = []
    for epoch in range(4):
        batches = plan_epoch(native, range(len(native)), icfg, 8, epoch, epoch * 5, rng)
        assert len({b.size for b in batches}) == 1
        seen.append(batches[0].size)
    assert seen == [(224, 224), (180, 180), (224, 224), (180, 180)]


def test_multi_size_alternates_by_batch_across_epochs():
    icfg = ClassifierInputConfig(mode="warp", sizes=[224, 180], alternate="batch")
    native, rng = _native(), np.random.default_rng(0)
    first = plan_epoch(native, range(len(native)), icfg, 8, 0, 0, rng)  # 5 batches: 224,180,224,180,224
    second = plan_epoch(native, range(len(native)), icfg, 8, 1, len(first), rng)
    sides = [b.size[0] for b in first + second]
    assert sides == [224, 180] * 5


def test_native_multi_scale_by_batch_keeps_buckets_together():
    icfg = ClassifierInputConfig(mode="native", scales=[1.0, 0.5], alternate="batch", bucket_step=16, min_side=16)
    native = np.array([[64, 64]] * 6 + [[128, 96]] * 6)
    batches = plan_epoch(native, range(12), icfg, 3, 0, 0, np.random.default_rng(0))
    for k, b in enumerate(batches):
        scale = [1.0, 0.5][k % 2]
        h, w = native[b.indices[0]]
        assert all((native[i] == native[b.indices[0]]).all() for i in b.indices)
        assert b.size == (int(h * scale), int(w * scale))
    assert schedule_value(dataclasses.replace(icfg, alternate="epoch"), 3, 0) == 0.5


def test_make_batch_resizes_and_flips():
    crops = [np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)]
    from sppdet.classification.sizes import Batch

    out = make_batch(crops, Batch((0,), (2, 3)))
    assert out.shape == (1, 3, 2, 3) and out.dtype.is_floating_point is False
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), crops[0])
    assert make_batch(crops, Batch((0,), (5, 7))).shape == (1, 3, 5, 7)
