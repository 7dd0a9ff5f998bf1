"""End-to-end training (Fast R-CNN style, through the SPP layer into the conv layers).

:func:`train` runs the whole job: datasets and proposals from the config, the model, SGD with
linear warm-up and step decay, a progress bar and periodic logs, periodic validation mAP,
atomic checkpoints (model, optimizer, scheduler, RNG, iteration) and an exact ``resume``.

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

import logging
import math
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from ..config import Config, config_to_dict, save_config
from ..data.build import build_dataset
from ..errors import ConfigError, SppdetError
from ..fileio import make_output_dir, save_json
from ..modeling.detector import build_detector
from ..modeling.loss import FastRCNNLoss
from . import distributed as du
from .checkpoint import load_checkpoint, restore_model, restore_rng, save_checkpoint
from .data import _mix, build_train_loader

log = logging.getLogger("sppdet.train")

LAST = "last.pth"
FINAL = "model_final.pth"


_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULES = ("step", "cosine")


def lr_factor(it: int, cfg: Config) -> float:
    """Learning-rate multiplier at iteration ``it``: linear warm-up, then step or cosine decay."""
    tc = cfg.train
    if tc.lr_schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * min(it, tc.max_iter) / max(1, tc.max_iter)))
    elif tc.lr_schedule == "step":
        f = tc.lr_gamma ** sum(1 for s in tc.lr_steps if it >= s)
    else:
        raise ConfigError(f"train.lr_schedule: '{tc.lr_schedule}' is not one of {', '.join(_SCHEDULES)}")
    if it < tc.warmup_iters:
        alpha = it / max(1, tc.warmup_iters)
        f *= tc.warmup_factor * (1 - alpha) + alpha
    return f


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW (``train.optimizer``); no weight decay on biases and norm
    parameters."""
    if cfg.train.optimizer not in _OPTIMIZERS:
        raise ConfigError(f"train.optimizer: '{cfg.train.optimizer}' is not one of {', '.join(_OPTIMIZERS)}")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.train.base_lr)
    return torch.optim.SGD(groups, lr=cfg.train.base_lr, momentum=cfg.train.momentum)


def _check_finite(losses: Dict[str, torch.Tensor], it: int, out_dir: Path) -> None:
    if not all(torch.isfinite(v).all() for v in losses.values()):
        vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        raise SppdetError(
            f"training diverged at iteration {it} ({vals}); {_kept(out_dir)}; lower train.base_lr or check the data"
        )


def _check_weights(model: torch.nn.Module, it: int, out_dir: Path) -> None:
    """Before a checkpoint is written: a finite loss can still leave inf/NaN weights behind."""
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise SppdetError(
            f"training diverged at iteration {it} (weights '{bad}' are not finite; not "
            f"saved); {_kept(out_dir)}; lower train.base_lr or check the data"
        )


def _kept(out_dir: Path) -> str:
    last = out_dir / LAST
    if last.is_file():
        return f"the last good checkpoint is kept: {last}"
    return f"no checkpoint had been written yet in {out_dir}"


def train(cfg: Config, output_dir: Optional[str] = None, resume: bool = False) -> Dict:
    """Train a detector end to end; returns a summary dict (final metrics, time, paths)."""
    from ..proposals.build import get_proposals

    du.init_distributed(cfg.device)
    rank, world = du.get_rank(), du.get_world_size()
    device = du.resolve_device(cfg.device)
    out = Path(output_dir or cfg.output_dir)
    cfg.output_dir = str(out)
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

    ddp_model = model
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
        torch.manual_seed(_mix(cfg.train.seed, rank, start))
    history = []
    summary: Dict = {"output_dir": str(out), "start_iter": start}
    t0 = time.time()
    eval_seconds, evals = 0.0, []
    tc = cfg.train
    bar = _progress(start, tc.max_iter)
    model.train()
    window = []
    it = start
    for it, (batch, rois, labels, targets) in zip(range(start, tc.max_iter), batches):
        batch = batch.to(device)
        rois, labels, targets = rois.to(device), labels.to(device), targets.to(device)
        outputs = ddp_model(batch, rois)
        losses = loss_fn(outputs, labels, targets)
        objective, logged, fg, num_rois = losses["loss"], losses, int((labels > 0).sum()), int(len(labels))
        if world > 1:
            objective, logged, fg, num_rois = global_losses(losses, labels, world)
        if tc.stop_on_nan:
            _check_finite(logged, it, out)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        scheduler.step()
        rec = {k: float(v.detach()) for k, v in logged.items()}
        rec.update(iter=it + 1, lr=optimizer.param_groups[0]["lr"], fg=fg, rois=num_rois)
        history.append(rec)
        window.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2g}")
        done = it + 1
        if du.is_main_process() and (done % tc.log_period == 0 or done == tc.max_iter):
            avg = {k: sum(r[k] for r in window) / len(window) for k in ("loss", "loss_cls", "loss_box")}
            speed = (time.time() - t0) / max(1, done - start)
            log.info(
                "iter %d/%d  loss %.4f (cls %.4f box %.4f)  lr %.3g  %.3f s/it",
                done,
                tc.max_iter,
                avg["loss"],
                avg["loss_cls"],
                avg["loss_box"],
                rec["lr"],
                speed,
            )
            window = []
        if tc.checkpoint_period and done % tc.checkpoint_period == 0 and done < tc.max_iter:
            if tc.stop_on_nan:
                _check_weights(model, done, out)
            _save(
                out / LAST,
                model,
                cfg,
                class_names,
                done,
                optimizer,
                scheduler,
                samples=start_sample + (done - start) * ipb * world,
            )
        if tc.eval_period and done % tc.eval_period == 0 and done < tc.max_iter:
            e0 = time.time()
            m = validate(model, cfg, class_names, device, out)
            eval_seconds += time.time() - e0
            if m is not None:  # time-to-accuracy: training wall time without the evaluations
                t_train = time.time() - t0 - eval_seconds
                log.info("iter %d: validation mAP %.4f (%.0f s training)", done, m["mAP"], t_train)
                evals.append({"iter": done, "mAP": float(m["mAP"]), "train_seconds": round(t_train, 1)})
            model.train()
    if bar is not None:
        bar.close()
    end_iter = max(start, tc.max_iter)
    end_sample = start_sample + (end_iter - start) * ipb * world
    if tc.stop_on_nan:
        _check_weights(model, end_iter, out)
    _save(out / LAST, model, cfg, class_names, end_iter, optimizer, scheduler, samples=end_sample)
    _save(out / FINAL, model, cfg, class_names, end_iter, None, None, samples=end_sample)
    summary.update(
        iterations=end_iter,
        train_seconds=time.time() - t0,
        eval_seconds=eval_seconds,
        evals=evals,
        history=history,
        checkpoint=str(out / FINAL),
    )
    if du.is_main_process():
        save_json({k: v for k, v in summary.items()}, out / "train_log.json")
    du.barrier()
    return summary


def _save(path: Path, model, cfg, class_names, it, optimizer, scheduler, samples: int) -> None:
    """Rank 0 writes the checkpoint (once); ``samples`` is the global stream position."""
    if du.is_main_process():
        stream = {"samples": int(samples), "ims_per_batch": cfg.train.ims_per_batch, "world_size": du.get_world_size()}
        save_checkpoint(
            path,
            model=model,
            cfg=cfg,
            class_names=class_names,
            iteration=it,
            optimizer=optimizer,
            scheduler=scheduler,
            extras={"train_stream": stream},
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


def _progress(start: int, total: int):
    if not du.is_main_process():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True, mininterval=1.0)


def validate(model, cfg: Config, class_names, device, out: Path) -> Optional[Dict]:
    """Validation mAP on the test split with the model in its current state."""
    from ..evaluation import evaluate
    from ..proposals.build import get_proposals
    from .infer import Predictor, detect_dataset

    test_set = build_dataset(cfg, "test")
    proposals = get_proposals(cfg, test_set, "test", str(out))
    predictor = Predictor(model, cfg, class_names, device)
    dets = detect_dataset(predictor, test_set, proposals, progress=False)
    if not du.is_main_process():
        return None
    return evaluate(test_set, dets, cfg.test.metric)
