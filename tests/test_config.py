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
