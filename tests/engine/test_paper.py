"""The paper recipe on a tiny generated set: feature cache integrity, the four stages, detection.

The set: coloured rectangles and discs (one colour per class) on a noisy grey background,
written as a real VOC folder; proposals are jittered ground-truth boxes plus random boxes.
A random-init ``tiny`` backbone, frozen, is enough for the SVMs to tell the colours apart.
"""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sppdet.config import load_config
from sppdet.data.dataset import DetectionDataset, ImageRecord

#: Colours a random-init backbone tells apart well (dark saturated red, for one, it does not).
CLASSES = ["magenta", "cyan", "yellow"]
COLOURS = {1: (240, 60, 240), 2: (40, 220, 220), 3: (240, 230, 40)}
W, H = 160, 120


class DictStore:
    """Minimal proposal store: ``boxes(image_id) -> (N, 4) float32``."""

    def __init__(self, boxes):
        self._boxes = dict(boxes)

    def boxes(self, image_id):
        return self._boxes[image_id]


def _make_image(rng):
    img = np.clip(rng.normal(110, 20, (H, W, 3)), 0, 255).astype(np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            s = float(rng.integers(26, 50))
            w, h = s * rng.uniform(0.8, 1.25), s
            x1, y1 = rng.uniform(0, W - w), rng.uniform(0, H - h)
            b = np.array([x1, y1, x1 + w, y1 + h])
            if all(min(b[2], o[2]) <= max(b[0], o[0]) or min(b[3], o[3]) <= max(b[1], o[1]) for o in boxes):
                break
        else:
            continue
        b = np.round(b)
        k = int(rng.integers(1, 4))
        p1, p2 = (int(b[0]), int(b[1])), (int(b[2]) - 1, int(b[3]) - 1)
        # a dark outline makes the whole object look unlike a part of it
        if k == 2:
            centre = ((p1[0] + p2[0]) // 2, (p1[1] + p2[1]) // 2)
            axes = ((p2[0] - p1[0]) // 2, (p2[1] - p1[1]) // 2)
            cv2.ellipse(img, centre, axes, 0, 0, 360, COLOURS[k], -1)
            cv2.ellipse(img, centre, axes, 0, 0, 360, (0, 0, 0), 3)
        else:
            cv2.rectangle(img, p1, p2, (0, 0, 0), -1)
            cv2.rectangle(img, (p1[0] + 3, p1[1] + 3), (p2[0] - 3, p2[1] - 3), COLOURS[k], -1)
        boxes.append(b)
        labels.append(k)
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _proposals(rng, gt):
    out = []
    for b in gt:
        w, h = b[2] - b[0], b[3] - b[1]
        for _ in range(10):
            d = rng.uniform(-0.25, 0.25, 4) * np.array([w, h, w, h])
            out.append(b + d)
    for _ in range(40):
        x1, y1 = rng.uniform(0, W - 20), rng.uniform(0, H - 20)
        out.append([x1, y1, x1 + rng.uniform(15, 70), y1 + rng.uniform(15, 60)])
    out = np.array(out, np.float32)
    return out[rng.permutation(len(out))]


def make_set(root: Path, num_train=16, num_test=8, seed=0):
    """Write a VOC folder under ``root`` and return (train set, test set, proposal store)."""
    from sppdet.data.voc import write_voc_annotation

    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    recs, props = [], {}
    for i in range(num_train + num_test):
        img, boxes, labels = _make_image(rng)
        iid = f"{i:04d}"
        path = root / "JPEGImages" / f"{iid}.png"
        cv2.imwrite(str(path), img[:, :, ::-1])
        rec = ImageRecord(iid, str(path), W, H, boxes, labels)
        write_voc_annotation(root / "Annotations" / f"{iid}.xml", rec, CLASSES)
        recs.append(rec)
        props[iid] = _proposals(rng, boxes)
    ids = [r.image_id for r in recs]
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids[:num_train]) + "\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids[num_train:]) + "\n")
    return (
        DetectionDataset(recs[:num_train], CLASSES, "train"),
        DetectionDataset(recs[num_train:], CLASSES, "test"),
        DictStore(props),
    )


# every test trains the paper recipe on a small set: 165 s for the module under load ~19 on 2 cores
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: OpenMP threads only add overhead (a lot on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("paperset") / "voc"
    train, test, store = make_set(root)
    return root, train, test, store


def paper_cfg(root: Path, out: Path, *extra):
    return load_config(
        None,
        [
            f"data.root={root}",
            "data.train_split=train",
            "data.test_split=test",
            f"data.classes=[{', '.join(CLASSES)}]",
            "proposals.max_per_image=100",
            "model.backbone=tiny",
            "model.tiny_width=8",
            "model.spp_levels=[2, 1]",
            "model.fc_dims=[256, 256]",
            "model.dropout=0.0",
            "input.train_scales=[240]",
            "input.test_scales=[240]",
            "input.max_size=400",
            "train.recipe=paper",
            "train.paper.finetune_iters=100",
            "train.paper.finetune_lr=0.01",
            "train.paper.finetune_lr_steps=[80]",
            "train.paper.finetune_batch=64",
            "train.paper.svm_c=0.1",
            "train.paper.svm_retrain_limit=200",
            "train.paper.bbox_reg_lambda=10",
            "train.checkpoint_period=20",
            "train.log_period=0",
            "train.workers=0",
            "test.score_thresh=0.01",
            "device=cpu",
            f"output_dir={out}",
            *extra,
        ],
    )


def _trainer(cfg, out, train, store):
    from sppdet.engine.paper import PaperTrainer

    return PaperTrainer(cfg, out, train, store, "cpu", progress=False)


# ---------------------------------------------------------------------------------------
# Feature cache


def test_cache_contents_reuse_and_integrity(tiny_set, tmp_path):
    from sppdet.engine.feature_cache import FeatureCache, build_feature_cache

    root, train, _, store = tiny_set
    cfg = paper_cfg(root, tmp_path, "train.paper.flip=true")
    t = _trainer(cfg, tmp_path, train, store)
    folder = tmp_path / "cache"
    cache = build_feature_cache(t.model, train, store, cfg, folder, progress=False)
    assert len(cache) == 2 * len(train) and not cache.reused
    assert cache.channels == 32 and t.model.spp_dim == 32 * 5
    # ground truth first, flagged; its own IoU is 1 and its label is the object's
    w0, w1 = cache.windows(0), cache.windows(1)
    g = len(train[0].boxes)
    assert w0["is_gt"][:g].all() and not w0["is_gt"][g:].any()
    assert np.allclose(w0["max_iou"][:g], 1) and (w0["gt_label"][:g] == train[0].labels).all()
    # second view: mirrored boxes, same overlaps, different maps
    assert cache.shards[1].flip and np.allclose(w1["boxes"][:, 0], W - w0["boxes"][:, 2])
    assert np.allclose(w1["max_iou"], w0["max_iou"])
    (m0,) = cache.maps(0)
    # the conv map (channels last, float16) of the 240-px view: 320x240 pixels, stride-16 tiny backbone
    assert m0.dtype == np.float16 and m0.shape == (15, 20, 32)
    assert not np.array_equal(np.asarray(m0), np.asarray(cache.maps(1)[0]))
    # pooled from the cached map == pooled from the live map, both views (float16 tolerance)
    from sppdet.data.image_io import read_image

    image = read_image(train[0].file_name)
    for view, flip in ((0, False), (1, True)):
        batch = t.model.prepare([image], cfg.input.train_scales, cfg.input.max_size, flips=[flip])
        boxes = cache.windows(view)["boxes"]
        with torch.no_grad():
            feats = t.model.conv_features(batch)
            rois = torch.cat([torch.zeros(len(boxes), 1), torch.from_numpy(boxes)], 1)
            live = t.model.pool(feats, batch.factors, rois)
        assert np.allclose(
            np.asarray(cache.maps(view)[0], np.float32), feats[0][0].permute(1, 2, 0).numpy(), rtol=1e-3, atol=1e-3
        )
        cached = cache.pool_view(t.model, view)
        assert cached.shape == live.shape == (len(boxes), 160)
        assert torch.allclose(cached, live, rtol=2e-3, atol=2e-3)
    # pooling windows of several views at once keeps the requested order
    picks = np.array([len(w0["boxes"]) + 3, 2, 0])
    got = cache.pool(t.model, picks)
    assert torch.equal(got[1], cache.pool_view(t.model, 0, np.array([2]))[0])
    assert torch.equal(got[0], cache.pool_view(t.model, 1, np.array([3]))[0])

    again = build_feature_cache(t.model, train, store, cfg, folder, progress=False)
    assert again.reused and again.fingerprint == cache.fingerprint
    stamp = os.path.getmtime(folder / "shards" / f"{cache.shards[3].name}.npy")

    # corrupt one feature file in place (same size): the full check sees it, the rebuild fixes it
    victim = folder / "shards" / f"{cache.shards[5].name}.npy"
    data = bytearray(victim.read_bytes())
    data[-7:] = b"\x00" * 7
    victim.write_bytes(bytes(data))
    with pytest.raises(Exception, match="damaged"):
        FeatureCache.open(folder, cache.fingerprint, verify="full")
    rebuilt = build_feature_cache(t.model, train, store, cfg, folder, resume=True, progress=False)
    assert not rebuilt.reused
    FeatureCache.open(folder, cache.fingerprint, verify="full")
    assert os.path.getmtime(folder / "shards" / f"{cache.shards[3].name}.npy") == stamp  # valid shards reused

    # truncated file (a killed copy) and a missing meta.json (a killed build)
    victim = folder / "shards" / f"{cache.shards[2].name}.npy"
    victim.write_bytes(victim.read_bytes()[:100])
    (folder / "meta.json").unlink()
    rebuilt = build_feature_cache(t.model, train, store, cfg, folder, resume=True, progress=False)
    assert not rebuilt.reused and np.array_equal(np.asarray(rebuilt.maps(2)[0]), np.asarray(cache.maps(2)[0]))

    # stale: other proposals for one image, or another backbone -> rebuilt
    props = dict(store._boxes)
    props[train[0].image_id] = props[train[0].image_id][:50]
    stale = build_feature_cache(t.model, train, DictStore(props), cfg, folder, progress=False)
    assert not stale.reused and stale.fingerprint != cache.fingerprint and len(stale.windows(0)["boxes"]) == g + 50
    cfg2 = paper_cfg(root, tmp_path, "train.paper.flip=true", "model.tiny_width=4")
    t2 = _trainer(cfg2, tmp_path, train, store)
    other = build_feature_cache(t2.model, train, store, cfg2, folder, progress=False)
    assert other.channels == 16 and not other.reused
    assert len(list((folder / "shards").glob("*.npy"))) == len(other)  # stray shards removed


def test_multiscale_cache_pools_each_window_at_its_hand_computed_scale(tiny_set, tmp_path):
    """Two scales: the 160x120 image at shorter side 120 (factor 1) and 240 (factor 2); target 64,
    so a window of area A goes to the scale whose |A * f^2 - 64^2| is smaller."""
    from sppdet.engine.feature_cache import build_feature_cache

    root, train, _, _ = tiny_set
    boxes = np.array(
        [
            [10, 10, 50, 50],  # 1600: |1600 - 4096| = 2496 > |6400 - 4096| = 2304 -> scale 1
            [20, 30, 80, 90],  # 3600: 496 < |14400 - 4096| -> scale 0
            [100, 50, 120, 70],  # 400: 3696 > |1600 - 4096| = 2496 -> scale 1
            [40, 20, 140, 100],  # 8000: 3904 < |32000 - 4096| -> scale 0
        ],
        np.float32,
    )
    one = train.subset([train[0].image_id])
    store = DictStore({train[0].image_id: boxes})
    cfg = paper_cfg(root, tmp_path, "input.train_scales=[120, 240]", "input.target_size=64")
    t = _trainer(cfg, tmp_path, one, store)
    cache = build_feature_cache(t.model, one, store, cfg, tmp_path / "cache", progress=False)
    g = len(train[0].boxes)
    rows = np.arange(g, g + 4)
    assert cache.scales == 2 and np.allclose(cache.windows(0)["factors"], [1.0, 2.0])
    assert [m.shape[:2] for m in cache.maps(0)] == [(8, 10), (15, 20)]  # stride 16, height padded to 128
    assert cache.index["scale"][rows].tolist() == [1, 0, 1, 0]
    # each pooled vector equals region SPP on the live map of its scale alone
    from sppdet.data.image_io import read_image

    batch = t.model.prepare([read_image(train[0].file_name)], [120, 240], cfg.input.max_size)
    with torch.no_grad():
        feats = t.model.conv_features(batch)
        expect = []
        for b, s in zip(boxes, [1, 0, 1, 0]):
            roi = torch.tensor([[0.0, *(b * (s + 1.0))]])  # factor 1 or 2
            expect.append(t.model.spp(feats[s], roi)[0])
    got = cache.pool(t.model, rows)
    assert torch.allclose(got, torch.stack(expect), rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------------------------------
# All four stages


def test_four_stages_detect_and_resume(tiny_set, tmp_path):
    from sppdet.data.image_io import read_image
    from sppdet.engine.checkpoint import load_checkpoint
    from sppdet.engine.infer import load_predictor
    from sppdet.evaluation import evaluate

    root, train, test, store = tiny_set
    out = tmp_path / "run"
    cfg = paper_cfg(root, out)
    summary = _trainer(cfg, out, train, store).run("all")
    assert summary["stages_run"] == ["cache", "finetune", "svm", "bbox"]
    assert set(summary["stage_seconds"]) == {"cache", "finetune", "svm", "bbox"}
    assert summary["finetune"]["final_loss"] < summary["finetune"]["first_loss"]
    final = Path(summary["checkpoint"])
    assert final.name == "model_final.pth"
    state = torch.load(final, weights_only=True)  # tensors and plain values only
    paper = load_checkpoint(final)["extras"]["paper"]
    assert paper["svm_weight"].shape == (3, 256) and paper["bbox_weight"].shape == (160, 12)

    predictor = load_predictor(str(final), device="cpu")
    assert predictor.scorer is not None
    dets = {r.image_id: predictor.predict(read_image(r.file_name), store.boxes(r.image_id)) for r in test}
    m = evaluate(test, dets, "voc07")
    assert m["mAP"] > 0.6, m  # chance (an untrained scorer) is ~0.03
    soft = load_predictor(str(final), ["train.paper.scorer=softmax"], device="cpu")
    assert soft.scorer is None

    # everything is current: a second run skips every stage
    again = _trainer(cfg, out, train, store).run("all")
    assert again["stages_run"] == [] and again["checkpoint"] == str(final)
    assert again["stage_seconds"]["svm"] == 0 and all(v > 0 for v in again["stage_seconds_recorded"].values())
    # a changed SVM setting redoes only the SVMs (and the final model)
    cfg_c = paper_cfg(root, out, "train.paper.svm_c=0.01")
    redo = _trainer(cfg_c, out, train, store).run("all")
    assert redo["stages_run"] == ["svm"]
    del state


def test_finetune_resume_is_exact_and_stages_need_their_inputs(tiny_set, tmp_path):
    from sppdet.engine.checkpoint import load_checkpoint
    from sppdet.errors import SppdetError

    root, train, _, store = tiny_set
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = paper_cfg(root, full, "train.paper.finetune_iters=30", "train.paper.finetune_bbox=false")
    with pytest.raises(SppdetError, match="cache stage first"):
        _trainer(cfg, full, train, store).run("finetune")
    _trainer(cfg, full, train, store).run("cache")
    with pytest.raises(SppdetError, match="stage finetune first"):
        _trainer(cfg, full, train, store).run("svm")
    s = _trainer(cfg, full, train, store).run("finetune")
    assert s["stages_run"] == ["finetune"] and s["checkpoint"].endswith("finetune.pth")

    # interrupted after the iteration-20 checkpoint: emulate by keeping finetune_last.pth only
    pcfg = paper_cfg(
        root,
        part,
        "train.paper.finetune_iters=30",
        "train.paper.finetune_bbox=false",
        f"train.paper.cache_dir={full / 'feature_cache'}",
    )
    t = _trainer(pcfg, part, train, store)
    t.run("cache")
    orig = t._save
    saved = []

    def stop_after_checkpoint(name, iteration, rec, optimizer=None):
        orig(name, iteration, rec, optimizer)
        saved.append(name)
        if name == "finetune_last.pth":
            raise KeyboardInterrupt

    t._save = stop_after_checkpoint
    with pytest.raises(KeyboardInterrupt):
        t.run("finetune")
    assert load_checkpoint(part / "finetune_last.pth")["iteration"] == 20
    r = _trainer(pcfg, part, train, store).run("finetune", resume=True)
    assert r["stages_run"] == ["finetune"] and not (part / "finetune_last.pth").exists()
    a, b = load_checkpoint(full / "finetune.pth")["model"], load_checkpoint(part / "finetune.pth")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_train_paper_from_config(tiny_set, tmp_path):
    """The public entry point with a native proposal file, as tools/train.py runs it."""
    pytest.importorskip("sppdet.proposals.build")
    from sppdet.engine.run import run_training
    from sppdet.proposals.store import save_proposals

    root, train, test, store = tiny_set
    ids = train.ids + test.ids
    pfile = tmp_path / "props.npz"
    save_proposals(pfile, ids, [store.boxes(i) for i in ids])
    out = tmp_path / "job"
    cfg = paper_cfg(
        root,
        out,
        "proposals.method=file",
        f"proposals.train_file={pfile}",
        f"proposals.test_file={pfile}",
        "train.paper.finetune_iters=30",
    )
    summary = run_training(cfg, str(out), stage="all", evaluate=True)
    assert Path(summary["checkpoint"]).name == "model_final.pth"
    assert summary["metrics"]["mAP"] > 0.6, summary["metrics"]
