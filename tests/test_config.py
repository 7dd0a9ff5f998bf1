import pytest
import yaml

from sppdet.config import Config, config_to_dict, load_config, save_config
from sppdet.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.base_lr=0.5", "model.spp_levels=[4, 2, 1]", "data.classes=[a, b]"])
    assert isinstance(cfg, Config)
    assert cfg.train.base_lr == 0.5
    assert cfg.model.spp_levels == [4, 2, 1]
    assert cfg.data.classes == ["a", "b"]


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  base_lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.base_lrr" in msg and str(p) in msg and "base_lr" in msg


def test_wrong_type(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_iter: ten\n")
    with pytest.raises(ConfigError, match="train.max_iter.*integer"):
        load_config(p)
    p.write_text("model:\n  spp_levels: 6\n")
    with pytest.raises(ConfigError, match="model.spp_levels.*list"):
        load_config(p)
    p.write_text("train:\n  flip: 1\n")
    with pytest.raises(ConfigError, match="train.flip"):
        load_config(p)


def test_int_accepted_for_float(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  base_lr: 1\n")
    assert load_config(p).train.base_lr == 1.0


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["train.base_lr"])
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        load_config(None, ["train.nope=1"])


def test_base_inheritance_and_save_round_trip(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ntrain:\n  max_iter: 7\n  base_lr: 0.2\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nname: child\ntrain:\n  max_iter: 9\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.name, cfg.train.max_iter, cfg.train.base_lr) == ("child", 9, 0.2)
    out = tmp_path / "out" / "config.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert yaml.safe_load(out.read_text())["name"] == "child"


def test_choices_are_written_once_and_match_the_implementations():
    """config.py's Literal choices are the names the code dispatches on."""
    from sppdet.config import BackboneName, DataFormat, Normalization, choices
    from sppdet.data.build import FORMATS
    from sppdet.data.transforms import NORM_PARAMS
    from sppdet.modeling.backbone import BACKBONES

    assert set(choices(BackboneName)) == set(BACKBONES)
    assert set(choices(Normalization)) == set(NORM_PARAMS)
    assert set(choices(DataFormat)) == set(FORMATS)


def test_loaded_config_is_frozen_and_checked_again_when_derived():
    import dataclasses

    cfg = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_iter = 5  # type: ignore[misc]
    assert dataclasses.replace(cfg.train, max_iter=5).max_iter == 5
    with pytest.raises(ConfigError, match=r"train\.fg_fraction: must be in \[0.0, 1.0\], got 1.5"):
        dataclasses.replace(cfg.train, fg_fraction=1.5)
    with pytest.raises(ConfigError, match=r"train\.bg_iou_low: 0.6 is above train\.bg_iou_high \(0.5\)"):
        load_config(None, ["train.bg_iou_low=0.6"])
    with pytest.raises(ConfigError, match="'model.tiny_stride' must be one of 8, 16, got True"):
        load_config(None, ["model.tiny_stride=true"])


def test_svm_defaults_are_the_config_defaults():
    from sppdet.config import PaperConfig
    from sppdet.svm import SVMParams

    pc, sp = PaperConfig(), SVMParams()
    assert (sp.C, sp.pos_weight, sp.intercept_scaling) == (pc.svm_c, pc.svm_pos_weight, pc.svm_intercept_scaling)
    assert (sp.hard_thresh, sp.evict_thresh, sp.retrain_limit) == (
        pc.svm_hard_thresh,
        pc.svm_evict_thresh,
        pc.svm_retrain_limit,
    )
