"""Crash safety: ``kill -9`` in the middle of training, feature caching and proposal computing, then
the same command again (``--resume`` for training), gives exactly what an uninterrupted run gives;
a damaged checkpoint is never taken as valid; a diverging run stops and keeps its last good
checkpoint.

The killed runs are real subprocesses (SIGKILL as soon as the first checkpoint / shard / chunk
is on disk); the uninterrupted reference runs in this process with one thread, as the
subprocesses do (``OMP_NUM_THREADS=1``), so results are compared bit for bit.
"""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from reliability_kit import (
    assert_user_error,
    kill_when,
    make_sample,
    run_in_process,
    run_subprocess,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    return base, make_sample(base / "sample")


def _cfg(sample, tmp_path, out_name, **extra):
    base, voc = sample
    cfg = tiny_config(voc, tmp_path / out_name, **{"proposals.cache_dir": str(base / "proposal_cache"), **extra})
    return cfg, write_config(tmp_path / f"{out_name}.yaml", cfg)


# ---------------------------------------------------------------------------------------
# kill -9, then resume


@pytest.mark.slow  # 60 s measured (load 13-19 on 2 cores)
def test_kill9_during_training_then_resume_equals_uninterrupted(sample, tmp_path):
    from sppdet.config import config_from_dict
    from sppdet.engine.checkpoint import load_checkpoint
    from sppdet.engine.train import train

    extra = {"train.max_iter": 24, "train.checkpoint_period": 4, "train.lr_steps": [18], "train.flip": True}
    cfg, _ = _cfg(sample, tmp_path, "reference", **extra)
    train(config_from_dict(cfg), cfg["output_dir"])  # also fills the shared proposal cache
    reference = load_checkpoint(tmp_path / "reference" / "model_final.pth")

    _, path = _cfg(sample, tmp_path, "killed", **extra)
    out = tmp_path / "killed"
    code = kill_when("train", ["--config", path], lambda: (out / "last.pth").exists(), tmp_path / "killed.log")
    assert code == -9, (tmp_path / "killed.log").read_text()
    assert not (out / "model_final.pth").exists()
    done_at_kill = load_checkpoint(out / "last.pth")["iteration"]  # the last checkpoint is always whole
    assert 4 <= done_at_kill < 24

    r = run_subprocess("train", ["--config", path, "--resume"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"resumed from .*last\.pth at iteration (\d+)", r.stderr)
    resumed = load_checkpoint(out / "model_final.pth")
    assert resumed["iteration"] == reference["iteration"] == 24
    assert resumed["model"].keys() == reference["model"].keys()
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def _paper_extra():
    return {
        "train.recipe": "paper",
        "train.paper.flip": True,
        "proposals.max_per_image": 150,
        "input.train_scales": [200],
        "input.max_size": 320,
        "model.fc_dims": [32, 32],
    }


@pytest.mark.slow  # 70 s measured (load 13-19 on 2 cores)
def test_kill9_during_feature_caching_then_resume_equals_uninterrupted(sample, tmp_path):
    from sppdet.config import config_from_dict
    from sppdet.engine.feature_cache import read_meta
    from sppdet.engine.paper import train_paper

    cfg, _ = _cfg(sample, tmp_path, "reference", **_paper_extra())
    train_paper(config_from_dict(cfg), cfg["output_dir"], stage="cache")
    ref_dir = tmp_path / "reference" / "feature_cache"
    ref_meta = read_meta(ref_dir)
    views = len(ref_meta["shards"])
    assert views == 12  # 6 images x (original + mirrored)

    _, path = _cfg(sample, tmp_path, "killed", **_paper_extra())
    cache = tmp_path / "killed" / "feature_cache"
    code = kill_when(
        "train",
        ["--config", path, "--stage", "cache"],
        lambda: any((cache / "shards").glob("*.npz")),
        tmp_path / "killed.log",
    )
    assert code == -9, (tmp_path / "killed.log").read_text()
    assert not (cache / "meta.json").exists()  # incomplete: never opened as a cache
    shards_at_kill = len(list((cache / "shards").glob("*.npz")))
    assert 1 <= shards_at_kill < views

    r = run_subprocess("train", ["--config", path, "--stage", "cache", "--resume"])
    assert r.returncode == 0, r.stderr
    assert re.search(rf"reused {shards_at_kill} of {views} shards", r.stderr), r.stderr
    meta = read_meta(cache)
    assert meta["fingerprint"] == ref_meta["fingerprint"]
    assert [(s["name"], s["npy_sha1"], s["windows"]) for s in meta["shards"]] == [
        (s["name"], s["npy_sha1"], s["windows"]) for s in ref_meta["shards"]
    ]
    for s in ref_meta["shards"]:
        a = np.load(ref_dir / "shards" / f"{s['name']}.npy")
        b = np.load(cache / "shards" / f"{s['name']}.npy")
        assert np.array_equal(a, b), s["name"]
        with (
            np.load(ref_dir / "shards" / f"{s['name']}.npz") as za,
            np.load(cache / "shards" / f"{s['name']}.npz") as zb,
        ):
            for k in ("boxes", "max_iou", "gt_label", "is_gt"):
                assert np.array_equal(za[k], zb[k]), (s["name"], k)
    assert not list((cache / "shards").glob(".*.tmp"))  # the killed run's temp file was cleaned up


@pytest.mark.slow
def test_kill9_during_finetuning_then_resume_equals_uninterrupted(sample, tmp_path):
    """fc fine-tuning on the one training loop, killed after its first checkpoint, resumed from it."""
    from sppdet.config import config_from_dict
    from sppdet.engine.checkpoint import load_checkpoint
    from sppdet.engine.paper import train_paper

    extra = {
        **_paper_extra(),
        "train.paper.finetune_iters": 400,
        "train.paper.finetune_lr_steps": [300],
        "train.paper.finetune_images": 2,
        "train.checkpoint_period": 20,
    }
    cfg, _ = _cfg(sample, tmp_path, "reference", **extra)
    train_paper(config_from_dict(cfg), cfg["output_dir"], stage="cache")
    shared = {"train.paper.cache_dir": str(tmp_path / "reference" / "feature_cache"), **extra}
    cfg, _ = _cfg(sample, tmp_path, "reference", **shared)
    train_paper(config_from_dict(cfg), cfg["output_dir"], stage="finetune")
    reference = load_checkpoint(tmp_path / "reference" / "finetune.pth")

    _, path = _cfg(sample, tmp_path, "killed", **shared)
    out = tmp_path / "killed"
    args = ["--config", path, "--stage", "finetune"]
    code = kill_when("train", args, lambda: (out / "finetune_last.pth").exists(), tmp_path / "killed.log")
    assert code == -9, (tmp_path / "killed.log").read_text()
    assert not (out / "finetune.pth").exists()
    done_at_kill = load_checkpoint(out / "finetune_last.pth")["iteration"]
    assert 20 <= done_at_kill < 400

    r = run_subprocess("train", [*args, "--resume"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"resumed fine-tuning at iteration (\d+)", r.stderr), r.stderr
    resumed = load_checkpoint(out / "finetune.pth")
    assert resumed["iteration"] == reference["iteration"] == 400
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def _many_images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(5)
    folder.mkdir()
    for i in range(n):
        img = np.clip(rng.normal(120, 30, (120, 160, 3)), 0, 255).astype(np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, 120)), int(rng.integers(0, 80))
            cv2.rectangle(
                img,
                (x, y),
                (x + int(rng.integers(10, 40)), y + int(rng.integers(10, 40))),
                tuple(int(c) for c in rng.integers(0, 255, 3)),
                -1,
            )
        cv2.imwrite(str(folder / f"im{i:03d}.png"), img)


@pytest.mark.slow  # 102 s measured (load 13-19 on 2 cores)
def test_kill9_during_proposals_then_rerun_equals_uninterrupted(tmp_path):
    from sppdet.config import ProposalConfig
    from sppdet.data.dataset import DetectionDataset, ImageRecord
    from sppdet.proposals.build import compute_dataset_proposals
    from sppdet.proposals.store import ProposalStore

    images = tmp_path / "images"
    _many_images(images, 80)  # chunks of 32 images: two whole chunks and a partial one
    args = ["compute", "--images", images, "--method", "edgeboxes", "--workers", "0", "--max-side", "160"]

    out = tmp_path / "killed.npz"
    partial = tmp_path / "killed.npz.partial"
    code = kill_when(
        "proposals", [*args, "--out", out], lambda: any(partial.glob("chunk-*.npz")), tmp_path / "killed.log"
    )
    assert code == -9, (tmp_path / "killed.log").read_text()
    assert not out.exists()
    r = run_subprocess("proposals", [*args, "--out", out])
    assert r.returncode == 0, r.stderr
    m = re.search(r"resuming proposals: (\d+) images done, (\d+) to go", r.stderr)
    assert m and int(m.group(1)) >= 32 and int(m.group(1)) + int(m.group(2)) == 80, r.stderr
    assert not partial.exists()

    # the uninterrupted reference: the same computation in this process
    records = [ImageRecord(f.stem, str(f), 160, 120) for f in sorted(images.glob("*.png"))]
    pcfg = ProposalConfig(method="edgeboxes", workers=0, max_side=160)
    reference = compute_dataset_proposals(
        DetectionDataset(records, [], name="images"), "edgeboxes", pcfg, tmp_path / "reference.npz", progress=False
    )
    resumed = ProposalStore(out)
    assert resumed.ids == reference.ids and len(resumed) == 80
    for image_id in reference.ids:
        (b1, s1), (b2, s2) = reference.get(image_id), resumed.get(image_id)
        assert np.array_equal(b1, b2) and np.array_equal(s1, s2), image_id


# ---------------------------------------------------------------------------------------
# damaged checkpoints are never taken as valid


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_checkpoint_is_refused_on_resume(sample, tmp_path, capsys, cut):
    from sppdet.config import config_from_dict
    from sppdet.engine.train import train

    cfg, path = _cfg(sample, tmp_path, "out")
    train(config_from_dict(cfg), cfg["output_dir"])
    last = tmp_path / "out" / "last.pth"
    data = last.read_bytes()
    last.write_bytes(data[: int(len(data) * cut)])
    code, _, err = run_in_process("train", ["--config", path, "--resume"], capsys)
    assert_user_error(code, err, str(last), "not a readable PyTorch checkpoint")


def test_no_temp_files_left_after_a_checkpoint_write_fails(tmp_path, monkeypatch):
    from sppdet.fileio import torch_save

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError):
        torch_save({"a": torch.zeros(3), "b": Boom()}, tmp_path / "ckpt.pth")
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temp file


# ---------------------------------------------------------------------------------------
# NaN / inf: stop with a clear message, keep the last good checkpoint


def test_exploding_lr_stops_with_a_message(sample, tmp_path, capsys):
    _, path = _cfg(
        sample,
        tmp_path,
        "out",
        **{"train.base_lr": 1e6, "train.warmup_iters": 0, "train.max_iter": 20, "train.checkpoint_period": 5},
    )
    code, _, err = run_in_process("train", ["--config", path], capsys)
    line = assert_user_error(code, err, "training diverged at iteration", "lower train.base_lr")
    assert "nan" in line or "inf" in line or "not finite" in line
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_nan_loss_keeps_the_last_good_checkpoint(sample, tmp_path, capsys, monkeypatch):
    import sppdet.engine.train as train_mod
    from sppdet.engine.checkpoint import load_checkpoint

    calls = {"n": 0}
    real_loss = train_mod.FastRCNNLoss

    class NaNAfter6(real_loss):
        def __call__(self, *args, **kwargs):
            out = super().__call__(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] > 6:
                out = {k: v * float("nan") for k, v in out.items()}
            return out

    monkeypatch.setattr(train_mod, "FastRCNNLoss", NaNAfter6)
    _, path = _cfg(sample, tmp_path, "out", **{"train.max_iter": 12, "train.checkpoint_period": 4})
    code, _, err = run_in_process("train", ["--config", path], capsys)
    last = tmp_path / "out" / "last.pth"
    assert_user_error(code, err, "training diverged at iteration 6", "loss=nan", f"kept: {last}")
    state = load_checkpoint(last)
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_nan_weights_are_never_checkpointed(sample, tmp_path, capsys, monkeypatch):
    import sppdet.engine.train as train_mod
    from sppdet.engine.checkpoint import load_checkpoint

    real_build = train_mod.build_optimizer

    def poisoning_optimizer(model, cfg):
        opt = real_build(model, cfg)
        steps = {"n": 0}

        class Poisoning(type(opt)):
            def step(self, closure=None):
                result = super().step(closure)
                steps["n"] += 1
                if steps["n"] == 8:  # the loss of this iteration was finite; the weights are not
                    with torch.no_grad():
                        next(model.parameters()).fill_(float("inf"))
                return result

        opt.__class__ = Poisoning
        return opt

    monkeypatch.setattr(train_mod, "build_optimizer", poisoning_optimizer)
    _, path = _cfg(sample, tmp_path, "out", **{"train.max_iter": 12, "train.checkpoint_period": 4})
    code, _, err = run_in_process("train", ["--config", path], capsys)
    assert_user_error(code, err, "training diverged at iteration 8", "are not finite; not saved")
    state = load_checkpoint(tmp_path / "out" / "last.pth")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from sppdet.errors import SppdetError
    from sppdet.fileio import save_json, torch_save

    save_json({"old": True}, tmp_path / "keep.json")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SppdetError, match=r"ckpt\.pth: cannot write \(No space left on device\)"):
        torch_save({"a": torch.zeros(3)}, tmp_path / "ckpt.pth")
    with pytest.raises(SppdetError, match=r"keep\.json: cannot write"):
        save_json({"old": False}, tmp_path / "keep.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]  # no temp files, old file intact
    assert (tmp_path / "keep.json").read_text().strip() == '{\n  "old": true\n}'
