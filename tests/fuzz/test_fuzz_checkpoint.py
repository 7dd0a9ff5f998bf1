"""Fuzz checkpoint loading: mutated bytes of a real (tiny) checkpoint, and mutated contents."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from fuzz_kit import TIERS, expect_clean, file_mutations, mutated_tree, run_fuzz

from sppdet.config import load_config
from sppdet.engine.checkpoint import checkpoint_config, load_checkpoint, load_model_from_checkpoint, save_checkpoint
from sppdet.modeling.detector import build_detector

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sample_tiny.yaml"
CLASSES = ["circle", "square", "triangle", "star", "cross"]


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory):
    """A real checkpoint of the sample_tiny detector (2 MB), as bytes and as the loaded dict."""
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    save_checkpoint(path, model=build_detector(cfg, len(CLASSES)), cfg=cfg, class_names=CLASSES, iteration=7)
    return path.read_bytes(), load_checkpoint(path)


def _small_checkpoint(state) -> bytes:
    """The same checkpoint with two weights only: byte edits then land on the structure."""
    small = {k: v for k, v in state.items() if k != "model"}
    small["model"] = dict(list(state["model"].items())[:2])
    buf = io.BytesIO()
    torch.save(small, buf)
    return buf.getvalue()


@pytest.mark.parametrize("tier", TIERS)
def test_checkpoint_byte_mutations(tier, tiny_state, tmp_path):
    path = tmp_path / "model.pth"

    def check(data: bytes) -> None:
        path.write_bytes(data)
        state = expect_clean(lambda: load_checkpoint(path), [path.name])
        if state is not None:
            expect_clean(lambda: checkpoint_config(state, source=str(path)), [path.name])

    run_fuzz(tier, 40, file_mutations(_small_checkpoint(tiny_state[1]), text=False), check)


@pytest.mark.parametrize("tier", TIERS)
def test_checkpoint_content_mutations(tier, tiny_state, tmp_path):
    """Wrong types, dropped keys, odd numbers in the config or weights: the model load says so."""
    path = tmp_path / "model.pth"
    state = tiny_state[1]
    doc = {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}

    def check(mutated) -> None:
        full = dict(mutated, model=state["model"]) if isinstance(mutated, dict) else mutated
        torch.save(full, path)
        expect_clean(lambda: load_model_from_checkpoint(path), [path.name])

    run_fuzz(tier, 25, mutated_tree(doc), check)


def test_checkpoint_regressions(tiny_state, tmp_path):
    """Inputs the fuzzer found (kept as explicit cases)."""
    path = tmp_path / "model.pth"
    data = tiny_state[0]
    for bad in (data[:100], data[:-22], b"PK\x03\x04" + bytes(100), data[:30] + b"\xff" * 30 + data[60:]):
        path.write_bytes(bad)
        expect_clean(lambda: load_checkpoint(path), [path.name])


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"class_names": None}, id="class-names-none"),
        pytest.param({"class_names": 5}, id="class-names-int"),
        pytest.param({"class_names": []}, id="class-names-empty"),
        pytest.param({"class_names": ["a", "b"]}, id="class-names-too-few"),
        pytest.param({"config": "abc"}, id="config-str"),
        pytest.param({"config": {"model": {"normalization": ""}}}, id="bad-normalization"),
        pytest.param({"config": {"model": {"spp_levels": [0]}}}, id="spp-level-zero"),
        pytest.param({"config": {"model": {"fc_dims": [-1]}}}, id="negative-fc"),
        pytest.param({"model": None}, id="model-none"),
        pytest.param({"model": {"x": torch.zeros(1)}}, id="model-wrong-keys"),
    ],
)
def test_checkpoint_content_regressions(tiny_state, tmp_path, change):
    path = tmp_path / "model.pth"
    torch.save(dict(tiny_state[1], **change), path)
    expect_clean(lambda: load_model_from_checkpoint(path), [path.name])
