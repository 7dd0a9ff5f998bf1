"""``tools/train.py --config C --check`` on every file in configs/.

Configs whose data is present here (BCCD in ../shared/data; the sample set, generated into a
temporary folder) must pass: model built, one training batch read. Configs whose data is not
present (VOC2007, COCO 2017, the sample set at its default path) must still validate and build
the model, then stop with the one-line data error, exit status 2 through ``run_tool``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from sppdet.classification.config import load_classifier_config
from sppdet.classification.model import build_classifier
from sppdet.config import load_config
from sppdet.data.synthetic import SAMPLE_CLASSES, generate_sample_dataset
from sppdet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ALL_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


def _is_classifier_config(name: str) -> bool:
    """SPP image-classifier configs (tools/classify.py) have an ``input.mode``; detector ones do not."""
    data = yaml.safe_load((REPO / "configs" / name).read_text())
    return "mode" in (data.get("input") or {})


CLASSIFIER_CONFIGS = [n for n in ALL_CONFIGS if _is_classifier_config(n)]
CONFIGS = [n for n in ALL_CONFIGS if n not in CLASSIFIER_CONFIGS]
SLOW = {"bccd_mobilenetv2.yaml", "bccd_mobilenetv2_paper.yaml"}  # real images at 608x800: ~10 s each here


def _train_tool():
    spec = importlib.util.spec_from_file_location("sppdet_train_tool", REPO / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data_present(cfg) -> bool:
    if cfg.data.format == "coco":
        return Path(cfg.data.train_ann).is_file() and Path(cfg.data.train_images).is_dir()
    return bool(cfg.data.root) and Path(cfg.data.root).is_dir()


@pytest.fixture(scope="module")
def train_tool():
    return _train_tool()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS])
def test_check_every_config(name, train_tool, capsys, monkeypatch, one_thread):
    monkeypatch.chdir(REPO)  # configs name their data relative to the repository root
    cfg = load_config(Path("configs") / name)
    if "shared/data" in cfg.model.weights and not Path(cfg.model.weights).is_file():
        pytest.skip(f"real data not available: {cfg.model.weights}")
    if _data_present(cfg):
        assert train_tool.main(["--config", f"configs/{name}", "--check"]) == 0
        summary = json.loads(capsys.readouterr().out)
        batch = summary["batch"]
        assert len(batch["images"]) == cfg.train.ims_per_batch
        assert batch["image_tensors"][0][:2] == [cfg.train.ims_per_batch, 3]
        assert 0 < batch["foreground_windows"] <= batch["windows"] <= cfg.train.ims_per_batch * cfg.train.rois_per_image
        assert summary["model"]["classes"] == len(cfg.data.classes)
    else:
        with pytest.raises(ConfigError, match=r"^data\.(root|train_ann|train_images)\b.*(not found|is empty)"):
            train_tool.main(["--config", f"configs/{name}", "--check"])
        summary = json.loads(capsys.readouterr().out)  # printed before the data error
        expected = len(cfg.data.classes) or (20 if cfg.data.format == "voc" else 80)
        assert summary["model"]["backbone"] == cfg.model.backbone
        assert summary["model"]["classes"] == expected
        assert "batch" not in summary
    assert summary["config"] == "valid" and summary["model"]["parameters"] > 0


def test_check_sample_config_on_generated_data(tmp_path, train_tool, capsys, monkeypatch, one_thread):
    """sample_tiny.yaml on the sample set (generated here): passes, nothing written to the output."""
    generate_sample_dataset(str(tmp_path / "sample"), num_train=4, num_test=2, seed=1)
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    argv = ["--config", "configs/sample_tiny.yaml", "--check", f"data.root={tmp_path / 'sample' / 'voc'}"]
    assert train_tool.main(argv + [f"output_dir={out}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"]["classes"] == len(SAMPLE_CLASSES)
    assert summary["batch"]["foreground_windows"] > 0
    assert not out.exists()


def test_check_refuses_a_bad_value_before_building_anything(train_tool, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=r"train\.hue_jitter: must be in \[0.0, 180.0\], got 200.0"):
        train_tool.main(["--config", "configs/sample_tiny.yaml", "--check", "train.hue_jitter=200"])


@pytest.mark.parametrize("name", CLASSIFIER_CONFIGS)
def test_classifier_configs_validate_and_build(name, monkeypatch, one_thread):
    """The classifier configs in configs/ load strictly and build a model whose output has one
    score per class for two inputs of different sizes."""
    assert CLASSIFIER_CONFIGS, "expected the BCCD cell classifier configs"
    monkeypatch.chdir(REPO)
    cfg = load_classifier_config(Path("configs") / name)
    model = build_classifier(dataclasses.replace(cfg.model, weights=""), len(cfg.data.classes)).eval()
    with torch.no_grad():
        out = model([torch.zeros(3, 64, 48), torch.zeros(3, 96, 128)])
    assert tuple(out.shape) == (2, len(cfg.data.classes))
