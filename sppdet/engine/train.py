"""End-to-end training (Fast R-CNN style, through the SPP layer into the conv layers).

:func:`train` runs the whole job on the one loop (:class:`~sppdet.engine.train_loop.SimpleTrainer`):
datasets and proposals from the config, the model, SGD with linear warm-up and step decay, and
the hooks of :mod:`sppdet.engine.hooks` (progress bar and periodic logs, periodic validation
mAP, atomic checkpoints of model, optimizer, scheduler, RNG and iteration, NaN/inf guard); an
exact ``resume``; ``train.amp`` mixed precision on CUDA.

Under ``torchrun`` the trainable model is wrapped in DistributedDataParallel and only rank 0
writes files and logs. Each of the ``w`` ranks loads ``train.ims_per_batch`` images per
iteration from its share of one sample stream (:class:`~sppdet.engine.data.SampleStream`), so
an iteration consumes ``w * ims_per_batch`` samples: ``w`` ranks with ``ims_per_batch = b`` see
exactly the samples of one process with ``ims_per_batch = w * b``. The loss of each rank is
weighted by its share of the iteration's windows before DDP averages the gradients, so the
update is the one of the loss averaged over all windows of all ranks (what one process with the
whole batch computes); logged losses are those global averages. Batch-norm layers that are
trained use per-rank statistics on CPU and are converted to SyncBatchNorm on CUDA.

Resuming, also with another number of processes: a checkpoint stores ``iteration`` (the
position in the learning-rate schedule) and ``extras["train_stream"]["samples"]``, the global
number of samples consumed. A resumed run continues the stream at that sample and the schedule
at that iteration, so keep ``world_size * train.ims_per_batch`` (the global batch) unchanged
to continue the same run exactly, e.g. a 2-process run with ``ims_per_batch=1`` resumed in one
process with ``train.ims_per_batch=2``. Checkpoints without the field (older ones) resume at
sample ``iteration * ims_per_batch * world_size``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..config import Config, config_to_dict, save_config
from ..data.build import build_dataset
from ..errors import SppdetError
from ..evaluation import evaluate
from ..evaluation.report import plot_map_curve
from ..fileio import atomic_write, make_output_dir, save_json
from ..modeling.detector import build_detector
from ..modeling.loss import FastRCNNLoss
from ..proposals.build import get_proposals
from ..utils import comm as du
from .checkpoint import load_checkpoint, restore_model, restore_rng, save_checkpoint
from .data import build_train_loader, mix_seed
from .hooks import EvalHook, LRScheduler, NaNGuard, PeriodicCheckpointer, ProgressLogger
from .infer import Predictor, detect_dataset
from .train_loop import HookBase, SimpleTrainer, Step, StepOutput

log = logging.getLogger("sppdet.train")

LAST = "last.pth"
FINAL = "model_final.pth"


def lr_factor(it: int, cfg: Config) -> float:
    """Learning-rate multiplier at iteration ``it``: linear warm-up, then step or cosine decay."""
    tc = cfg.train
    return schedule_factor(it, tc.lr_schedule, tc.lr_steps, tc.lr_gamma, tc.max_iter, tc.warmup_iters, tc.warmup_factor)


def schedule_factor(
    it: int,
    schedule: str,
    steps: Sequence[int],
    gamma: float,
    max_iter: int,
    warmup_iters: int = 0,
    warmup_factor: float = 1.0,
) -> float:
    """lr multiplier at ``it``: ``gamma`` per step passed (``"step"``) or half a cosine to 0 at
    ``max_iter`` (``"cosine"``), times a linear ramp from ``warmup_factor`` to 1 over the first
    ``warmup_iters`` iterations (both recipes' schedules)."""
    if schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * min(it, max_iter) / max(1, max_iter)))
    else:  # "step" (config.py admits only these two)
        f = gamma ** sum(1 for s in steps if it >= s)
    if it < warmup_iters:
        alpha = it / max(1, warmup_iters)
        f *= warmup_factor * (1 - alpha) + alpha
    return f


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW (``train.optimizer``); no weight decay on biases and norm
    parameters."""
    decay: List[torch.nn.Parameter] = []
    no_decay: List[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.train.base_lr)
    return torch.optim.SGD(groups, lr=cfg.train.base_lr, momentum=cfg.train.momentum)


def _kept(out_dir: Path) -> str:
    last = out_dir / LAST
    if last.is_file():
        return f"the last good checkpoint is kept: {last}"
    return f"no checkpoint had been written yet in {out_dir}"


def train(cfg: Config, output_dir: Optional[str] = None, resume: bool = False) -> Dict:
    """Train a detector end to end; returns a summary dict (final metrics, time, paths)."""

    du.init_distributed(cfg.device)
    rank, world = du.get_rank(), du.get_world_size()
    device = du.resolve_device(cfg.device)
    out = Path(output_dir or cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=str(out))
    torch.manual_seed(cfg.train.seed)

    train_set = build_dataset(cfg, "train")
    if len(train_set) == 0:
        raise SppdetError(
            f"training split '{cfg.data.train_split}' of {cfg.data.root or cfg.data.train_ann} has no images"
        )
    class_names = train_set.class_names
    if du.is_main_process():
        make_output_dir(out)
        save_config(cfg, out / "config.yaml")
        log.info("train set: %s", train_set)
    proposals = get_proposals(cfg, train_set, "train", str(out))  # every rank: computing is sharded

    model = build_detector(cfg, len(class_names)).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    start = 0
    ipb = cfg.train.ims_per_batch
    start_sample = 0
    ckpt_path = out / LAST
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if list(state["class_names"]) != list(class_names):
            raise SppdetError(
                f"{ckpt_path}: checkpoint classes {state['class_names']} differ from the dataset's {class_names}"
            )
        _check_same_model(state, cfg, ckpt_path)
        restore_model(model, state, ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
        start_sample = _resume_position(state, start, ipb, world)
        log.info("resumed from %s at iteration %d (sample %d)", ckpt_path, start, start_sample)
    else:
        state = None
        if resume:
            log.info("--resume: no checkpoint in %s, starting from scratch", out)

    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = _wrap_ddp(model, device)
    loss_fn = FastRCNNLoss()
    loader = build_train_loader(
        train_set,
        proposals,
        cfg,
        model.normalization,
        model.backbone.stride,
        rank=rank,
        world_size=world,
        start_sample=start_sample,
    )
    batches = iter(loader)  # created before the RNG is restored: it draws a seed from it
    if state is not None:
        restore_rng(state)
    if rank > 0:  # own dropout masks per rank (rank 0 keeps the single-process RNG stream)
        torch.manual_seed(mix_seed(cfg.train.seed, rank, start))

    def load(_it: int):
        batch, rois, labels, targets = next(batches)
        return batch.to(device), rois.to(device), labels.to(device), targets.to(device)

    def forward(data) -> StepOutput:
        batch, rois, labels, targets = data
        losses = loss_fn(ddp_model(batch, rois), labels, targets)
        objective, logged, fg, num_rois = losses["loss"], losses, int((labels > 0).sum()), int(len(labels))
        if world > 1:
            objective, logged, fg, num_rois = global_losses(losses, labels, world)
        return StepOutput(objective, logged, {"fg": fg, "rois": num_rois})

    tc = cfg.train
    trainer = SimpleTrainer(Step(load, forward), optimizer, tc.max_iter, start, amp=tc.amp, device=device)
    if state is not None:
        trainer.load_state_dict((state.get("extras") or {}).get("train_loop") or {})

    def save(done: int) -> None:
        samples = start_sample + (done - start) * ipb * world
        _save(out / LAST, model, cfg, class_names, done, optimizer, scheduler, samples, trainer)

    evals: List[Dict] = []  # the mAP-against-training-time curve (``train.eval_period``)
    eval_seconds = 0.0

    def evaluate(done: int) -> None:
        nonlocal eval_seconds
        e0 = time.time()
        m = validate(model, cfg, class_names, device, out)
        eval_seconds += time.time() - e0
        if m is not None:
            log.info("iter %d: validation mAP %.4f", done, m["mAP"])
            train_time = time.time() - t0 - eval_seconds
            evals.append({"iter": done, "train_seconds": round(train_time, 1), "mAP": float(m["mAP"])})
        model.train()

    guard = NaNGuard(model, lambda: _kept(out), "lower train.base_lr or check the data")
    hooks: List[HookBase] = [guard] if tc.stop_on_nan else []
    hooks += [
        LRScheduler(scheduler),
        ProgressLogger(
            "train", tc.log_period, ("loss", "loss_cls", "loss_box"), enabled=du.is_main_process(), label="iter"
        ),
        PeriodicCheckpointer(tc.checkpoint_period, save, guard if tc.stop_on_nan else None),
        EvalHook(tc.eval_period, evaluate),
    ]
    trainer.register_hooks(hooks)
    summary: Dict = {"output_dir": str(out), "start_iter": start}
    t0 = time.time()
    model.train()
    history = trainer.train()
    end_iter = max(start, tc.max_iter)
    if tc.stop_on_nan:
        guard.check_weights(end_iter)
    save(end_iter)
    end_sample = start_sample + (end_iter - start) * ipb * world
    _save(out / FINAL, model, cfg, class_names, end_iter, None, None, samples=end_sample)
    summary.update(
        iterations=end_iter,
        train_seconds=time.time() - t0 - eval_seconds,
        eval_seconds=eval_seconds,
        evals=evals,
        history=history,
        checkpoint=str(out / FINAL),
    )
    if du.is_main_process():
        save_json({k: v for k, v in summary.items()}, out / "train_log.json")
        if evals:
            with atomic_write(out / "map_curve.png", "wb") as f:
                f.write(plot_map_curve(evals, f"{cfg.name}: val mAP ({cfg.test.metric}) during training"))
    du.barrier()
    return summary


def _save(path: Path, model, cfg, class_names, it, optimizer, scheduler, samples: int, trainer=None) -> None:
    """Rank 0 writes the checkpoint (once); ``samples`` is the global stream position."""
    if du.is_main_process():
        stream = {"samples": int(samples), "ims_per_batch": cfg.train.ims_per_batch, "world_size": du.get_world_size()}
        extras = {"train_stream": stream}
        if trainer is not None and trainer.state_dict():
            extras["train_loop"] = trainer.state_dict()
        save_checkpoint(
            path,
            model=model,
            cfg=cfg,
            class_names=class_names,
            iteration=it,
            optimizer=optimizer,
            scheduler=scheduler,
            extras=extras,
        )
    du.barrier()


def model_config_mismatch(state: Dict, cfg: Config) -> Optional[str]:
    """The first ``model.*`` option (other than ``model.weights``) where the checkpoint ``state``
    and ``cfg`` differ, as ``"model.K=old (the config says new)"``; None when they agree.
    Options the checkpoint predates count with their default value."""
    saved = (state.get("config") or {}).get("model")
    if not isinstance(saved, dict):
        return None
    now = config_to_dict(cfg)["model"]
    defaults = config_to_dict(Config())["model"]
    for k in sorted(now):
        old = saved.get(k, defaults.get(k))
        if k != "weights" and old != now[k]:
            return f"model.{k}={old!r} (the config says {now[k]!r})"
    return None


def _check_same_model(state: Dict, cfg: Config, path: Path) -> None:
    """Refuse to resume a checkpoint of another model: some options (``model.tiny_stride``,
    ``model.spp_mode``...) change what the weights mean without changing their shapes.
    ``model.weights`` may differ: the checkpoint's weights replace them anyway."""
    diff = model_config_mismatch(state, cfg)
    if diff:
        raise SppdetError(
            f"{path}: --resume: the checkpoint was trained with {diff}; use another --output (or delete the old run)"
        )


def _resume_position(state: Dict, iteration: int, ims_per_batch: int, world: int) -> int:
    """Global sample position to resume at (module docstring); warns when the global batch changed."""
    stream = (state.get("extras") or {}).get("train_stream")
    if not stream:  # checkpoint from before the field existed: assume the same global batch
        return iteration * ims_per_batch * world
    before = int(stream.get("ims_per_batch", ims_per_batch)) * int(stream.get("world_size", world))
    if before != ims_per_batch * world:
        log.warning(
            "resuming with a global batch of %d images (world size %d x train.ims_per_batch %d) "
            "instead of %d: the sample stream continues where it stopped, but each iteration "
            "now consumes another number of samples",
            ims_per_batch * world,
            world,
            ims_per_batch,
            before,
        )
    return int(stream["samples"])


def _wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model``; trained batch-norms become SyncBatchNorm on CUDA."""
    if device.type == "cuda" and any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and m.training
        and m.weight is not None
        and m.weight.requires_grad
        for m in model.modules()
    ):
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place, same parameters
        log.info("batch-norm layers synchronised across ranks (SyncBatchNorm)")
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
    )


def global_losses(losses: Dict[str, torch.Tensor], labels: torch.Tensor, world: int):
    """``(objective, losses averaged over every rank's windows, fg windows, windows)``.

    :class:`FastRCNNLoss` averages over this rank's ``R_r`` windows and DDP averages gradients
    over ranks, so backpropagating ``world * R_r / R * loss_r`` (``R`` = all ranks' windows)
    gives the gradient of the loss over all ``R`` windows, also when ranks sample unequal counts.
    """
    keys = ("loss_cls", "loss_box", "loss")
    n = float(len(labels))
    local = torch.stack([losses[k].detach().float() * n for k in keys])
    counts = torch.tensor([n, float((labels > 0).sum())], device=local.device)
    buf = du.all_reduce_sum(torch.cat([local, counts]))
    total = buf[3].clamp(min=1.0)
    logged = {k: buf[i] / total for i, k in enumerate(keys)}
    return losses["loss"] * (world * n / total), logged, int(buf[4]), int(buf[3])


def validate(model, cfg: Config, class_names, device, out: Path) -> Optional[Dict]:
    """Validation mAP on the test split with the model in its current state."""

    test_set = build_dataset(cfg, "test")
    proposals = get_proposals(cfg, test_set, "test", str(out))
    predictor = Predictor(model, cfg, class_names, device)
    dets = detect_dataset(predictor, test_set, proposals, progress=False)
    if not du.is_main_process():
        return None
    return evaluate(test_set, dets, cfg.test.metric)
