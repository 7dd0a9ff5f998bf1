"""``compress`` and ``rcnn-vs-spp --weights`` run end to end on a tiny checkpoint (random
weights, generated images): documented keys, mAP of each setting recomputed through the
Predictor with ``test.fc_compression``, and the saved checkpoint carries the choice."""

import json
from types import SimpleNamespace

import pytest
import torch

from sppdet.benchmarks import run_benchmark
from sppdet.config import load_config
from sppdet.engine.checkpoint import load_checkpoint, save_checkpoint
from sppdet.engine.infer import load_predictor, run_on_dataset
from sppdet.errors import SppdetError
from sppdet.evaluation import evaluate
from sppdet.modeling.detector import build_detector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sppdet.data.synthetic import SAMPLE_CLASSES, generate_sample_dataset

    root = tmp_path_factory.mktemp("cmp")
    generate_sample_dataset(str(root), num_train=2, num_test=3, seed=5)
    cfg = load_config(
        None,
        [
            f"data.root={root / 'voc'}",
            "data.test_split=test",
            f"data.classes=[{', '.join(SAMPLE_CLASSES)}]",
            "proposals.method=edgeboxes",
            "proposals.max_per_image=100",
            "proposals.workers=0",
            "model.backbone=tiny",
            "model.tiny_width=8",
            "model.fc_dims=[64, 64]",
            "model.spp_levels=[2, 1]",
            "input.test_scales=[160]",
            "input.max_size=320",
            "test.score_thresh=0.0",
            f"output_dir={root / 'out'}",
            "device=cpu",
        ],
    )
    torch.manual_seed(0)
    model = build_detector(cfg, len(SAMPLE_CLASSES))
    path = root / "model.pth"
    save_checkpoint(path, model=model, cfg=cfg, class_names=list(SAMPLE_CLASSES))
    return path


def test_compress_then_rcnn_vs_spp_on_the_choice(checkpoint, tmp_path):
    saved = tmp_path / "chosen.pth"
    args = SimpleNamespace(weights=str(checkpoint), repeat=1, device="cpu", opts=[], save_weights=str(saved))
    r = run_benchmark("compress", args)
    settings = r["settings"]
    assert {"full", "svd:0.25", "int8", "svd:0.25+int8"} <= set(settings)
    assert settings["full"]["map_loss"] == 0.0
    best = r["best_within_0.5pt"]
    assert best["map_loss"] <= 0.005
    assert all(settings[best["name"]]["fc_ms"] <= v["fc_ms"] for v in settings.values() if v["map_loss"] <= 0.005)
    # an independent path: the Predictor built with the option, run over the split, evaluated
    for name in ("svd:0.25+int8", "full"):
        spec = settings[name]["spec"]
        dets = run_on_dataset(str(checkpoint), overrides=[f"test.fc_compression={spec}"], device="cpu")
        predictor = load_predictor(str(checkpoint), [f"test.fc_compression={spec}"], "cpu")
        from sppdet.data.build import build_dataset

        m = evaluate(build_dataset(predictor.cfg, "test"), dets, "voc07")["mAP"]
        assert m == pytest.approx(settings[name]["mAP"], abs=1e-4)
    assert load_checkpoint(saved)["config"]["test"]["fc_compression"] == best["spec"]
    assert load_predictor(str(saved), [], "cpu").cfg.test.fc_compression == best["spec"]

    result = tmp_path / "compress.json"
    result.write_text(json.dumps({"compress": r}))
    q = SimpleNamespace(
        quick=True, repeat=1, device="cpu", weights=str(checkpoint), compress_result=str(result), opts=[]
    )
    t = run_benchmark("rcnn-vs-spp", q)
    assert t["fc_compression"] == best["spec"] and t["map_loss"] == best["map_loss"]
    assert t["speedup_total_equal_accuracy"] == t["speedup_total"]["equal_accuracy_fc"] > 0
    assert t["setup"]["backbone"] == "tiny" and t["setup"]["weights"] == str(checkpoint)
    # the random-weights model of the quick setting with the setting chosen on the trained one
    z = run_benchmark("rcnn-vs-spp", SimpleNamespace(quick=True, repeat=1, device="cpu", compress_result=str(result)))
    assert z["setup"]["weights"].startswith("random") and z["fc_compression"] == best["spec"]
    assert z["speedup_total_equal_accuracy"] > 0


def test_compress_needs_weights_and_a_full_model(checkpoint, tmp_path):
    with pytest.raises(SppdetError, match="--weights"):
        run_benchmark("compress", SimpleNamespace(weights=None, repeat=1, device="cpu"))
    args = SimpleNamespace(weights=str(checkpoint), repeat=1, device="cpu", opts=["test.fc_compression=int8"])
    with pytest.raises(SppdetError, match="already compresses"):
        run_benchmark("compress", args)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    q = SimpleNamespace(quick=True, repeat=1, device="cpu", weights=str(checkpoint), compress_result=str(bad))
    with pytest.raises(SppdetError, match="best_within_0.5pt"):
        run_benchmark("rcnn-vs-spp", q)
