"""End-to-end training on a tiny generated set: loss falls, checkpoints round-trip, resume is exact."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sppdet.config import load_config
from sppdet.engine.checkpoint import load_checkpoint, load_model_from_checkpoint
from sppdet.engine.train import build_optimizer, lr_factor, schedule_factor, train
from sppdet.errors import ConfigError, SppdetError


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    from sppdet.data.synthetic import generate_sample_dataset

    root = tmp_path_factory.mktemp("sample")
    generate_sample_dataset(str(root), num_train=12, num_test=4, seed=3)
    return root


def tiny_cfg(root: Path, out: Path, **extra):
    from sppdet.data.synthetic import SAMPLE_CLASSES

    overrides = [
        f"data.root={root / 'voc'}",
        "data.train_split=train",
        "data.test_split=test",
        f"data.classes=[{', '.join(SAMPLE_CLASSES)}]",
        "proposals.method=edgeboxes",
        "proposals.max_per_image=200",
        "proposals.workers=0",
        "model.backbone=tiny",
        "model.tiny_width=8",
        "model.fc_dims=[64, 64]",
        "model.spp_levels=[2, 1]",
        "model.dropout=0.0",
        "input.train_scales=[160]",
        "input.test_scales=[160]",
        "input.max_size=320",
        "train.max_iter=12",
        "train.warmup_iters=2",
        "train.lr_steps=[8]",
        "train.checkpoint_period=6",
        "train.log_period=4",
        "train.workers=0",
        "train.rois_per_image=16",
        f"output_dir={out}",
        "device=cpu",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


def test_lr_schedule_hand_values():
    cfg = load_config(None, ["train.warmup_iters=10", "train.warmup_factor=0.1", "train.lr_steps=[20, 30]"])
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.1 * 0.5 + 0.5)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(25, cfg) == pytest.approx(0.1)
    assert lr_factor(30, cfg) == pytest.approx(0.01)


def test_schedule_factor_hand_values():
    # the paper recipe's fine-tuning schedule: warm-up 4 from 0.5, step x0.1 at 6 / cosine over 8
    assert [schedule_factor(i, "step", [6], 0.1, 8, 4, 0.5) for i in (0, 2, 4, 6)] == pytest.approx(
        [0.5, 0.75, 1.0, 0.1]
    )
    assert schedule_factor(2, "cosine", [6], 0.1, 8, 4, 0.5) == pytest.approx(0.75 * (1 + 2**-0.5) / 2)
    assert schedule_factor(4, "cosine", [], 0.1, 8) == pytest.approx(0.5)


def test_cosine_schedule_hand_values():
    cfg = load_config(None, ["train.lr_schedule=cosine", "train.max_iter=100", "train.warmup_iters=0"])
    assert lr_factor(0, cfg) == pytest.approx(1.0)
    assert lr_factor(50, cfg) == pytest.approx(0.5)
    assert lr_factor(25, cfg) == pytest.approx((1 + 2**-0.5) / 2)  # cos(pi/4)
    assert lr_factor(100, cfg) == pytest.approx(0.0, abs=1e-12)
    warm = load_config(
        None, ["train.lr_schedule=cosine", "train.max_iter=100", "train.warmup_iters=10", "train.warmup_factor=0.1"]
    )
    assert lr_factor(0, warm) == pytest.approx(0.1)  # warm-up multiplies the cosine factor
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        lr_factor(0, load_config(None, ["train.lr_schedule=linear"]))


def test_optimizer_choice_and_no_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sgd = build_optimizer(model, load_config(None, ["train.base_lr=0.1", "train.momentum=0.8"]))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    adamw = build_optimizer(model, load_config(None, ["train.optimizer=adamw", "train.weight_decay=0.05"]))
    assert isinstance(adamw, torch.optim.AdamW)
    decay, no_decay = adamw.param_groups
    assert [p.shape for p in decay["params"]] == [(4, 3)] and decay["weight_decay"] == 0.05
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0  # biases and BN affine
    with pytest.raises(ConfigError, match="train.optimizer"):
        build_optimizer(model, load_config(None, ["train.optimizer=adam"]))


@pytest.mark.slow  # 54 s measured (load 13-19 on 2 cores)
def test_resume_equals_uninterrupted_and_checkpoint_round_trip(sample_root, tmp_path):
    full = train(tiny_cfg(sample_root, tmp_path / "full"), str(tmp_path / "full"))
    # interrupted: stop after 6 iterations (the checkpoint period), then resume to 12
    part = tmp_path / "part"
    train(tiny_cfg(sample_root, part, **{"train.max_iter": 6}), str(part))
    resumed = train(tiny_cfg(sample_root, part), str(part), resume=True)
    assert resumed["start_iter"] == 6
    a = load_checkpoint(tmp_path / "full" / "model_final.pth")["model"]
    b = load_checkpoint(part / "model_final.pth")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    losses_full = [h["loss"] for h in full["history"]][6:]
    losses_res = [h["loss"] for h in resumed["history"]]
    assert losses_full == pytest.approx(losses_res, rel=1e-5)
    model, cfg, classes, state = load_model_from_checkpoint(tmp_path / "full" / "model_final.pth")
    assert state["iteration"] == 12 and cfg.train.max_iter == 12 and len(classes) == model.num_classes
    assert (tmp_path / "full" / "config.yaml").is_file()


@pytest.mark.slow  # 16 s measured (load 13-19 on 2 cores)
def test_resume_refuses_another_model(sample_root, tmp_path):
    train(tiny_cfg(sample_root, tmp_path, **{"train.max_iter": 2}), str(tmp_path))
    with pytest.raises(SppdetError, match=r"model.tiny_stride=16.*says 8"):
        train(
            tiny_cfg(sample_root, tmp_path, **{"train.max_iter": 4, "model.tiny_stride": 8}), str(tmp_path), resume=True
        )
    # other training options may change on resume (e.g. a longer schedule)
    s = train(tiny_cfg(sample_root, tmp_path, **{"train.max_iter": 3}), str(tmp_path), resume=True)
    assert s["start_iter"] == 2 and s["iterations"] == 3


@pytest.mark.slow  # 65 s measured (load 13-19 on 2 cores)
def test_loss_falls(sample_root, tmp_path):
    s = train(
        tiny_cfg(
            sample_root, tmp_path, **{"train.max_iter": 60, "train.lr_steps": "[50]", "train.checkpoint_period": 0}
        ),
        str(tmp_path),
    )
    losses = [h["loss"] for h in s["history"]]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)


@pytest.mark.slow  # 46 s measured (load 13-19 on 2 cores)
def test_train_tool_bad_config_key(tmp_path, repo_root):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  max_iters: 10\n")
    r = subprocess.run(
        [sys.executable, str(repo_root / "tools" / "train.py"), "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "unknown key 'train.max_iters'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # 46 s measured (load 13-19 on 2 cores)
def test_hue_jitter_turns_the_training_image_only(sample_root, tmp_path):
    """``train.hue_jitter`` changes the pixels of a sample (by rotate_hue), never its windows."""
    from sppdet.data.augment import rotate_hue
    from sppdet.data.build import build_dataset
    from sppdet.data.image_io import read_image
    from sppdet.engine.data import WindowDataset
    from sppdet.modeling.features import prepare_image
    from sppdet.proposals.build import get_proposals

    plain_cfg = tiny_cfg(sample_root, tmp_path, **{"train.flip": "false"})
    hue_cfg = tiny_cfg(
        sample_root, tmp_path, **{"train.flip": "false", "train.hue_jitter": 180, "train.hue_jitter_prob": 1.0}
    )
    dataset = build_dataset(plain_cfg, "train")
    store = get_proposals(plain_cfg, dataset, "train", str(tmp_path))
    plain = WindowDataset(dataset, store, plain_cfg, "imagenet")[(0, 7)]
    turned = WindowDataset(dataset, store, hue_cfg, "imagenet")[(0, 7)]
    assert torch.equal(plain["boxes"], turned["boxes"]) and torch.equal(plain["labels"], turned["labels"])
    assert not torch.equal(plain["image"][0][0], turned["image"][0][0])
    # the turned image is the plain one with some hue turn applied: find it among the 2-degree steps
    image = read_image(dataset[0].file_name)
    scale = plain_cfg.input.train_scales[0]
    matches = [
        d
        for d in range(2, 360, 2)
        if torch.allclose(prepare_image(rotate_hue(image, d), [scale], 320, "imagenet")[0][0], turned["image"][0][0])
    ]
    assert len(matches) == 1


@pytest.mark.parametrize(
    "key,value", [("train.hue_jitter", -1), ("train.hue_jitter", 200), ("train.hue_jitter_prob", 1.5)]
)
def test_hue_jitter_out_of_range_is_refused(sample_root, tmp_path, key, value):
    with pytest.raises(ConfigError, match=key):  # refused when the config is made (config.py checks ranges)
        tiny_cfg(sample_root, tmp_path, **{key: value})


def test_model_config_mismatch_counts_options_a_checkpoint_predates_at_their_default():
    from sppdet.config import config_to_dict
    from sppdet.engine.train import model_config_mismatch

    cfg = load_config(None, ["model.tiny_stem_convs=2"])
    state = {"config": config_to_dict(load_config(None, []))}
    del state["config"]["model"]["tiny_stem_convs"]  # saved before the option existed
    assert model_config_mismatch(state, cfg) == "model.tiny_stem_convs=0 (the config says 2)"
    assert model_config_mismatch(state, load_config(None, [])) is None
    assert model_config_mismatch(state, load_config(None, ["model.weights=x.pth"])) is None
    assert model_config_mismatch({}, cfg) is None  # no config stored: nothing to compare


# ---------------------------------------------------------------------------------------
# The one training loop serves both recipes


@pytest.fixture
def loops(monkeypatch):
    """Every SimpleTrainer run in the test, with the hook types it had and the iterations it ran."""
    from sppdet.engine.train_loop import SimpleTrainer

    runs = []
    orig = SimpleTrainer.train

    def spy(self):
        history = orig(self)
        runs.append(
            {
                "hooks": [type(h).__name__ for h in self.hooks],
                "iters": [h["iter"] for h in history],
                "lr": [h["lr"] for h in history],
            }
        )
        return history

    monkeypatch.setattr(SimpleTrainer, "train", spy)
    return runs


HOOKS = {"NaNGuard", "LRScheduler", "ProgressLogger", "PeriodicCheckpointer"}


def test_end2end_recipe_runs_on_the_one_loop(sample_root, tmp_path, loops):
    from sppdet.engine.run import run_training

    s = run_training(tiny_cfg(sample_root, tmp_path, **{"train.max_iter": 5}), str(tmp_path))
    assert len(loops) == 1 and HOOKS | {"EvalHook"} <= set(loops[0]["hooks"])
    assert loops[0]["iters"] == [1, 2, 3, 4, 5] == [h["iter"] for h in s["history"]]
    # lr of each iteration from the schedule (warm-up 2, step at 8), hand-computed
    assert [h["lr"] for h in s["history"]][:3] == pytest.approx([0.01 * 0.001, 0.01 * (0.001 * 0.5 + 0.5), 0.01])


def test_paper_recipe_fine_tunes_on_the_one_loop(sample_root, tmp_path, loops):
    from sppdet.engine.run import run_training

    cfg = tiny_cfg(
        sample_root,
        tmp_path,
        **{
            "train.recipe": "paper",
            "train.paper.finetune_iters": 7,
            "train.paper.finetune_lr": 0.01,
            "train.paper.finetune_lr_steps": "[4]",
            "train.paper.finetune_images": 2,
            "train.paper.svm_retrain_limit": 100,
        },
    )
    s = run_training(cfg, str(tmp_path))
    assert s["stages_run"] == ["cache", "finetune", "svm", "bbox"]
    assert len(loops) == 1 and HOOKS <= set(loops[0]["hooks"]) and loops[0]["iters"] == list(range(1, 8))
    state = load_checkpoint(tmp_path / "finetune.pth")
    assert state["iteration"] == 7
    assert s["cache"]["gigabytes"] > 0 and s["cache"]["pool5_layout_gigabytes"] > s["cache"]["gigabytes"]


def test_paper_fine_tuning_standardized_and_warmed_up(sample_root, tmp_path, loops, monkeypatch):
    from sppdet.engine.run import run_training
    from sppdet.modeling.head import SPPHead

    folds = []
    orig = SPPHead.fold_input_affine

    def spy(self, mean, std):
        before = {k: v.clone() for k, v in self.state_dict().items()}
        orig(self, mean, std)
        folds.append((before, mean, std))

    monkeypatch.setattr(SPPHead, "fold_input_affine", spy)
    cfg = tiny_cfg(
        sample_root,
        tmp_path,
        **{
            "train.recipe": "paper",
            "train.paper.finetune_iters": 6,
            "train.paper.finetune_lr": 0.01,
            "train.paper.finetune_lr_steps": "[5]",
            "train.paper.finetune_warmup_iters": 2,
            "train.paper.finetune_standardize": "true",
            "train.paper.finetune_images": 2,
            "train.paper.svm_retrain_limit": 100,
            "train.warmup_factor": 0.5,
        },
    )
    run_training(cfg, str(tmp_path))
    # lr of iterations 1..6 (scheduler steps 0..5): warm-up from 0.5 over 2, then x0.1 at 5
    assert loops[0]["lr"] == pytest.approx([0.005, 0.0075, 0.01, 0.01, 0.01, 0.001])
    assert len(folds) == 1
    before, mean, std = folds[0]
    assert mean.shape == std.shape == before["fc.0.weight"].shape[1:] and bool((std > 0).all())
    saved = load_checkpoint(tmp_path / "finetune.pth")["model"]
    w = before["fc.0.weight"] / std  # the folded fc6, computed here by hand
    assert torch.allclose(saved["head.fc.0.weight"], w, atol=1e-6)
    assert torch.allclose(saved["head.fc.0.bias"], before["fc.0.bias"] - w @ mean, atol=1e-4)


def test_amp_option(sample_root, tmp_path, caplog):
    with pytest.raises(ConfigError, match="'train.amp' must be one of off, bf16, fp16, got 'fp8'"):
        train(tiny_cfg(sample_root, tmp_path, **{"train.amp": "fp8"}), str(tmp_path))
    # on CPU mixed precision is ignored with a warning: the run equals a float32 one
    caplog.set_level("WARNING", logger="sppdet.train")
    a = train(tiny_cfg(sample_root, tmp_path / "a", **{"train.max_iter": 2, "train.amp": "bf16"}), str(tmp_path / "a"))
    assert "train.amp=bf16 applies on CUDA only" in caplog.text
    b = train(tiny_cfg(sample_root, tmp_path / "b", **{"train.max_iter": 2}), str(tmp_path / "b"))
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_trains(sample_root, tmp_path, amp):
    s = train(
        tiny_cfg(sample_root, tmp_path, **{"train.max_iter": 30, "train.amp": amp, "device": "cuda"}), str(tmp_path)
    )
    losses = [h["loss"] for h in s["history"]]
    assert all(torch.isfinite(torch.tensor(losses))) and sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.slow  # two evaluations of 4 images during a 12-iteration run
def test_eval_period_logs_the_map_curve(sample_root, tmp_path):
    import json

    s = train(tiny_cfg(sample_root, tmp_path, **{"train.eval_period": 4}), str(tmp_path))
    evals = s["evals"]
    assert [e["iter"] for e in evals] == [4, 8]  # every 4 iterations before the last
    assert 0 < evals[0]["train_seconds"] < evals[1]["train_seconds"] <= s["train_seconds"]
    assert all(0.0 <= e["mAP"] <= 1.0 for e in evals) and s["eval_seconds"] > 0
    assert json.loads((tmp_path / "train_log.json").read_text())["evals"] == evals
    assert (tmp_path / "map_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
