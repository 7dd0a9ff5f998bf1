"""torchrun on CPU (gloo): 2 processes give the results of 1, as a user would run the tools.

* training: 2 processes with ``train.ims_per_batch=1`` see the samples of 1 process with
  ``ims_per_batch=2``; with DDP averaging and the per-window loss weighting the loss curves
  agree to float rounding, and a 2-process checkpoint resumes in 1 process on the same stream;
* proposals computed by 2 ranks (sharded) equal those computed by 1;
* ``tools/eval.py --weights`` under torchrun gives byte-identical detections and metrics;
* the paper recipe (cache sharded over ranks, DDP fine-tuning, SVMs and boxes on rank 0) under
  torchrun gives the fine-tuned layers, SVMs and box regressors of 1 process.

Each torchrun launch imports torch in three processes: keep the number of launches few.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sppdet.config import load_config
from sppdet.engine.checkpoint import load_checkpoint
from sppdet.engine.train import train

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
name: ddp_tiny
device: cpu
output_dir: {out}
data: {{format: voc, root: {root}, train_split: train, test_split: test,
        classes: [circle, square, triangle, star, cross]}}
proposals: {{method: edgeboxes, max_per_image: 100, workers: 0, cache_dir: {props}}}
model: {{backbone: tiny, tiny_width: 8, fc_dims: [64, 64], spp_levels: [2, 1], dropout: 0.0}}
input: {{train_scales: [160], test_scales: [160], max_size: 320}}
train: {{max_iter: 6, ims_per_batch: 2, rois_per_image: 16, warmup_iters: 2, lr_steps: [4],
         checkpoint_period: 3, log_period: 1, workers: 0}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tool: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(_free_port()),
        f"tools/{tool}",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", SPPDET_DIST_TIMEOUT_S="300")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Sample set, config file, a 2-process training run (3 iterations) and the 1-process run (6)."""
    from sppdet.data.synthetic import generate_sample_dataset

    tmp = tmp_path_factory.mktemp("ddp")
    generate_sample_dataset(str(tmp / "data"), num_train=8, num_test=4)
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG.format(out=tmp / "out", root=tmp / "data" / "voc", props=tmp / "proposals"))
    # first, so that the proposals are computed by 2 ranks
    two = torchrun(
        "train.py", "--config", str(config), "--output", str(tmp / "two"), "train.ims_per_batch=1", "train.max_iter=3"
    )
    one = train(load_config(str(config)), str(tmp / "one"))
    return {"tmp": tmp, "config": config, "two": two, "one": one}


@pytest.mark.slow  # 47 s measured (load 13-19 on 2 cores)
def test_two_processes_train_like_one_with_the_double_batch(setup):
    tmp, one = setup["tmp"], setup["one"]
    two = json.loads((tmp / "two" / "train_log.json").read_text())
    h1, h2 = one["history"][:3], two["history"]
    assert [(h["fg"], h["rois"]) for h in h2] == [(h["fg"], h["rois"]) for h in h1]  # the same samples
    for key in ("loss", "loss_cls", "loss_box"):
        assert [h[key] for h in h2] == pytest.approx([h[key] for h in h1], rel=1e-4, abs=1e-6), key
    log = setup["two"].stderr
    assert log.count("iter 3/3") == 1 and log.count("train set:") == 1  # rank 0 alone logs
    state = load_checkpoint(tmp / "two" / "last.pth")
    assert state["iteration"] == 3
    assert state["extras"]["train_stream"] == {"samples": 6, "ims_per_batch": 1, "world_size": 2}


def test_two_process_checkpoint_resumes_in_one_process(setup):
    tmp, one = setup["tmp"], setup["one"]
    resumed = train(load_config(str(setup["config"])), str(tmp / "two"), resume=True)  # ims_per_batch=2
    assert resumed["start_iter"] == 3
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in one["history"][3:]], rel=1e-4, abs=1e-6
    )
    a = load_checkpoint(tmp / "one" / "model_final.pth")["model"]
    b = load_checkpoint(tmp / "two" / "model_final.pth")["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_proposals_sharded_over_ranks_equal_single_process(setup):
    from sppdet.data.build import build_dataset
    from sppdet.proposals import ProposalStore, compute_dataset_proposals

    cfg = load_config(str(setup["config"]))
    dataset = build_dataset(cfg, "train")
    (sharded,) = (setup["tmp"] / "proposals").glob("*-train-edgeboxes-*.npz")
    ref = compute_dataset_proposals(dataset, "edgeboxes", cfg.proposals, setup["tmp"] / "ref.npz", progress=False)
    store = ProposalStore(sharded)
    assert store.ids == ref.ids == dataset.ids
    for image_id in dataset.ids:
        np.testing.assert_array_equal(store.boxes(image_id), ref.boxes(image_id))
    assert not list((setup["tmp"] / "proposals").glob("*.partial"))


@pytest.mark.slow  # 57 s measured (load 13-19 on 2 cores)
def test_eval_tool_under_torchrun_matches_single_process(setup):
    tmp, weights = setup["tmp"], str(setup["tmp"] / "one" / "model_final.pth")
    r = torchrun("eval.py", "--weights", weights, "--config", str(setup["config"]), "--out", str(tmp / "eval2"))
    assert r.stdout.count("mAP (voc07") == 1  # rank 0 alone reports
    spec = importlib.util.spec_from_file_location("sppdet_eval_tool", REPO / "tools" / "eval.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--weights", weights, "--config", str(setup["config"]), "--out", str(tmp / "eval1")]) == 0
    for name in ("detections.json", "metrics.json"):
        assert (tmp / "eval2" / name).read_bytes() == (tmp / "eval1" / name).read_bytes(), name


PAPER = [
    "train.recipe=paper",
    "train.paper.flip=true",
    "train.paper.finetune_iters=4",
    "train.paper.finetune_lr=0.01",
    "train.paper.finetune_lr_steps=[3]",
    "train.paper.finetune_warmup_iters=2",
    "train.paper.finetune_images=2",
    "train.paper.svm_retrain_limit=100",
]


@pytest.mark.slow  # one more torchrun launch
def test_paper_recipe_under_torchrun_matches_single_process(setup):
    from sppdet.engine.run import run_training

    tmp = setup["tmp"]
    torchrun("train.py", "--config", str(setup["config"]), "--output", str(tmp / "paper2"), *PAPER)
    one = run_training(load_config(str(setup["config"]), PAPER), str(tmp / "paper1"))
    assert one["stages_run"] == ["cache", "finetune", "svm", "bbox"]
    a = load_checkpoint(tmp / "paper1" / "model_final.pth")
    b = load_checkpoint(tmp / "paper2" / "model_final.pth")
    for k in a["model"]:  # dropout 0: the same update, up to float reduction order
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-5), k
    pa, pb = a["extras"]["paper"], b["extras"]["paper"]
    for k in ("svm_weight", "svm_bias", "bbox_weight", "bbox_bias"):
        assert torch.allclose(torch.as_tensor(pa[k]), torch.as_tensor(pb[k]), rtol=1e-3, atol=1e-4), k
