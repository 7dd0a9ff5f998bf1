"""Fuzz the config loader: mutated real YAML configs, ``_base_`` chains and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fuzz_kit import TIERS, dump_yaml, expect_clean, file_mutations, mutated_tree, run_fuzz
from hypothesis import strategies as st

from sppdet.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _load(path: Path, overrides=()) -> None:
    cfg = expect_clean(lambda: load_config(path, overrides), [path.name, "override"])
    assert cfg is None or isinstance(cfg, Config)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("name", ["sample_tiny.yaml", "bccd_mobilenetv2_paper.yaml"])
def test_config_file_mutations(tier, name, tmp_path):
    original = (CONFIGS / name).read_bytes()
    doc = yaml.safe_load(original)
    path = tmp_path / name

    def check(data: bytes) -> None:
        path.write_bytes(data)
        _load(path)

    strategy = st.one_of(file_mutations(original), mutated_tree(doc).map(dump_yaml))
    run_fuzz(tier, 20, strategy, check)


@pytest.mark.parametrize("tier", TIERS)
def test_config_base_chain_mutations(tier, tmp_path):
    """A child config over a mutated ``_base_``: errors must name a file of the chain."""
    base = tmp_path / "base.yaml"
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\ntrain:\n  max_iter: 10\n")

    def check(data: bytes) -> None:
        base.write_bytes(data)
        cfg = expect_clean(lambda: load_config(child), [base.name, child.name])
        assert cfg is None or isinstance(cfg, Config)

    run_fuzz(tier, 20, file_mutations((CONFIGS / "sample_tiny.yaml").read_bytes()), check)


KEYS = ["train.max_iter", "train.base_lr", "model.spp_levels", "data.classes", "input.test_scales", "test", "x.y"]
VALUES = st.one_of(
    st.sampled_from(["", "1", "-1", "1e999", ".nan", "[1, 2", "{a: 1}", "!!python/object:os.system", "null"]),
    st.sampled_from(["2001-13-45", "[[[[[[[[[[", "&a [*a]", "*b", "'", "\x00", "é", "- a\n- b", "0x1F", "1_000"]),
    st.text(max_size=20),
)


@pytest.mark.parametrize("tier", TIERS)
def test_config_override_mutations(tier):
    overrides = st.lists(st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map("=".join), st.text()), max_size=3)
    run_fuzz(tier, 60, overrides, lambda ov: _load(CONFIGS / "sample_tiny.yaml", ov))


# Regression cases found by the fuzzer (kept explicit so they run on every change).
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("train:\n  max_iter: 2001-13-45\n", id="bad-date"),
        pytest.param("a: " + "[" * 2000 + "]" * 2000 + "\n", id="deep"),
        pytest.param("1: a\nfoo: b\n", id="mixed-key-types"),
        pytest.param("train:\n  null: 1\n  max_iter: 5\n", id="null-key"),
        pytest.param('"tra\\nin": 1\n', id="newline-in-key"),
    ],
)
def test_config_regressions(tmp_path, text):
    path = tmp_path / "c.yaml"
    for data in (text.encode(), text.encode("utf-16"), b"\xff" + text.encode()):
        path.write_bytes(data)
        _load(path)


@pytest.mark.parametrize("override", ["\n", "train.max_iter=\x1b\n", "a\nb.c=1", "train.max_iter=2001-13-45"])
def test_override_regressions(override):
    _load(CONFIGS / "sample_tiny.yaml", [override])
