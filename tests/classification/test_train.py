"""A tiny training run beats chance and alternates its input sizes as configured; the tool's
train, eval and predict run once as a user would run them."""

import json

import cv2
import numpy as np
import pytest
import yaml

from sppdet.classification.config import load_classifier_config
from sppdet.classification.data import CropSet, image_folder_samples
from sppdet.classification.evaluate import evaluate_classifier
from sppdet.classification.train import train_classifier

COLOURS = {"red": 0, "green": 1, "blue": 2}


def _write_folder(root, per_class, seed):
    """Noisy images of any size, one colour channel brighter per class."""
    rng = np.random.default_rng(seed)
    for name, channel in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(16, 56, size=2)
            img = rng.integers(0, 150, size=(h, w, 3)).astype(np.uint8)
            img[:, :, channel] += 100
            cv2.imwrite(str(root / name / f"{i}.png"), img[:, :, ::-1])
    return root


def _config(tmp_path, overrides=()):
    data = {
        "device": "cpu",
        "output_dir": str(tmp_path / "out"),
        "data": {"format": "folder", "train_images": str(tmp_path / "train"), "test_images": str(tmp_path / "test")},
        # frozen_bn: batch-norm in train mode on a 1x1 map of a lone image would erase it
        "model": {"backbone": "tiny", "tiny_width": 8, "frozen_bn": True, "spp_levels": [2, 1], "fc_dims": [32]},
        "input": {"mode": "native", "scales": [1.0, 0.75], "alternate": "batch", "bucket_step": 8, "min_side": 16},
        "train": {
            "epochs": 4,
            "batch_size": 8,
            "optimizer": "adamw",
            "base_lr": 0.005,
            "warmup_iters": 3,
            "threads": 1,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_classifier_config(path, overrides), path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    _write_folder(root / "train", 24, seed=0)
    _write_folder(root / "test", 10, seed=1)
    return root


@pytest.mark.slow
def test_tiny_training_beats_chance(folders, tmp_path):
    for sub in ("train", "test"):
        (tmp_path / sub).symlink_to(folders / sub)
    cfg, _ = _config(tmp_path)
    summary = train_classifier(cfg)
    assert len(summary["history"]) == 4
    from sppdet.classification.checkpoint import load_classifier

    model, loaded_cfg, names = load_classifier(summary["weights"])
    assert names == sorted(COLOURS) and loaded_cfg == cfg
    samples, test_names = image_folder_samples(tmp_path / "test")
    metrics = evaluate_classifier(model, CropSet(samples, test_names), cfg.input, tmp_path / "eval")
    assert metrics["top1"] > 0.6, metrics  # chance is 1/3
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved["per_class"]) == set(COLOURS) and saved["top1"] == metrics["top1"]
    assert (tmp_path / "eval" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("alternate", ["epoch", "batch"])
def test_multi_size_run_alternates_as_configured(folders, tmp_path, alternate):
    """Warped multi-size training (the paper's 224/180, here 24/16): the sizes the loop fed."""
    crops = CropSet(*image_folder_samples(folders / "train"))
    overrides = ["train.epochs=3", "input.mode=warp", "input.sizes=[24, 16]", f"input.alternate={alternate}"]
    cfg, _ = _config(tmp_path, overrides)
    history = train_classifier(cfg, crops=crops)["history"]
    per_epoch = [[s[0] for s in e["sizes"]] for e in history]
    assert all(len(e) == 9 for e in per_epoch)  # 72 crops, batches of 8
    if alternate == "epoch":
        assert per_epoch == [[24] * 9, [16] * 9, [24] * 9]
    else:  # batch after batch, counted over the whole run
        assert sum(per_epoch, []) == [24, 16] * 13 + [24]
    assert all(s[0] == s[1] for e in history for s in e["sizes"])


def test_tool_train_eval_predict(folders, tmp_path, capsys):
    from reliability_kit import tool_main

    from sppdet.cli import run_tool

    for sub in ("train", "test"):
        (tmp_path / sub).symlink_to(folders / sub)
    _, cfg_path = _config(tmp_path, ["train.epochs=1"])
    classify = tool_main("classify")
    out = tmp_path / "run"
    assert run_tool(classify, ["train", "--config", str(cfg_path), "--output", str(out), "train.epochs=1"]) == 0
    weights = out / "model_final.pth"
    assert (
        run_tool(
            classify,
            ["eval", "--weights", str(weights), "--images", str(tmp_path / "test"), "--out", str(tmp_path / "ev")],
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "top-1" in printed and "red" in printed
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_examples"] == 30
    assert (
        run_tool(classify, ["predict", "--weights", str(weights), str(tmp_path / "test" / "red"), "--topk", "2"]) == 0
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 10 and all(len(ln.split()) == 5 for ln in lines)
    # bad input: one line, exit 2
    assert run_tool(classify, ["eval", "--weights", str(tmp_path / "nope.pth"), "--images", str(tmp_path)]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def test_tool_bad_input_is_one_line(tmp_path, capsys):
    import torch
    from reliability_kit import tool_main

    from sppdet.cli import run_tool

    classify = tool_main("classify")

    def error(argv):
        capsys.readouterr()
        assert run_tool(classify, [str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  format: xml\n")
    assert "'data.format' must be one of voc, coco, folder" in error(["train", "--config", cfg])
    cfg.write_text("input:\n  mode: warp\n  sizez: [224]\n")
    assert "unknown key 'input.sizez' (did you mean 'input.sizes'?)" in error(["train", "--config", cfg])
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    assert "not an sppdet classifier checkpoint" in error(["eval", "--weights", other, "--images", tmp_path])
    assert "no such file or folder" in error(["predict", "--weights", other, tmp_path / "nope.jpg"])
