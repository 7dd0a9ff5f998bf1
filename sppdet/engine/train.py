"""End-to-end training (Fast R-CNN style, through the SPP layer into the conv layers).

:func:`train` runs the whole job: datasets and proposals from the config, the model, SGD with
linear warm-up and step decay, a progress bar and periodic logs, periodic validation mAP,
atomic checkpoints (model, optimizer, scheduler, RNG, iteration) and an exact ``resume``.
Under ``torchrun`` the trainable model is wrapped in DistributedDataParallel and only
rank 0 writes files and logs.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from ..config import Config, save_config
from ..data.build import build_dataset
from ..errors import SppdetError
from ..fileio import save_json
from ..modeling.detector import build_detector
from ..modeling.loss import FastRCNNLoss
from . import distributed as du
from .checkpoint import load_checkpoint, restore_model, restore_rng, save_checkpoint
from .data import build_train_loader

log = logging.getLogger("sppdet.train")

LAST = "last.pth"
FINAL = "model_final.pth"


def lr_factor(it: int, cfg: Config) -> float:
    """Learning-rate multiplier at iteration ``it``: linear warm-up, then step decay."""
    tc = cfg.train
    f = tc.lr_gamma ** sum(1 for s in tc.lr_steps if it >= s)
    if it < tc.warmup_iters:
        alpha = it / max(1, tc.warmup_iters)
        f *= tc.warmup_factor * (1 - alpha) + alpha
    return f


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum; no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.train.base_lr, momentum=cfg.train.momentum)


def _check_finite(losses: Dict[str, torch.Tensor], it: int, out_dir: Path) -> None:
    if not all(torch.isfinite(v).all() for v in losses.values()):
        vals = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
        raise SppdetError(f"training diverged at iteration {it} ({vals}); the last good checkpoint "
                          f"is kept in {out_dir}; lower train.base_lr or check the data")


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
        raise SppdetError(f"training split '{cfg.data.train_split}' of {cfg.data.root or cfg.data.train_ann} has no images")
    class_names = train_set.class_names
    if du.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        log.info("train set: %s", train_set)
    proposals = _rank0_first(lambda: get_proposals(cfg, train_set, "train", str(out)))

    model = build_detector(cfg, len(class_names)).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    start = 0
    ckpt_path = out / LAST
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if list(state["class_names"]) != list(class_names):
            raise SppdetError(f"{ckpt_path}: checkpoint classes {state['class_names']} differ from the "
                              f"dataset's {class_names}")
        restore_model(model, state, ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
        log.info("resumed from %s at iteration %d", ckpt_path, start)
    else:
        state = None
        if resume:
            log.info("--resume: no checkpoint in %s, starting from scratch", out)

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    loss_fn = FastRCNNLoss()
    loader = build_train_loader(train_set, proposals, cfg, model.normalization, model.backbone.stride,
                                start_iter=start, rank=rank, world_size=world)
    batches = iter(loader)  # created before the RNG is restored: it draws a seed from it
    if state is not None:
        restore_rng(state)
    history = []
    summary: Dict = {"output_dir": str(out), "start_iter": start}
    t0 = time.time()
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
        if tc.stop_on_nan:
            _check_finite(losses, it, out)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        scheduler.step()
        rec = {k: float(v.detach()) for k, v in losses.items()}
        rec.update(iter=it + 1, lr=optimizer.param_groups[0]["lr"],
                   fg=int((labels > 0).sum()), rois=int(len(labels)))
        history.append(rec)
        window.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2g}")
        done = it + 1
        if du.is_main_process() and (done % tc.log_period == 0 or done == tc.max_iter):
            avg = {k: sum(r[k] for r in window) / len(window) for k in ("loss", "loss_cls", "loss_box")}
            speed = (time.time() - t0) / max(1, done - start)
            log.info("iter %d/%d  loss %.4f (cls %.4f box %.4f)  lr %.3g  %.3f s/it",
                     done, tc.max_iter, avg["loss"], avg["loss_cls"], avg["loss_box"], rec["lr"], speed)
            window = []
        if tc.checkpoint_period and done % tc.checkpoint_period == 0 and done < tc.max_iter:
            _save(out / LAST, model, cfg, class_names, done, optimizer, scheduler)
        if tc.eval_period and done % tc.eval_period == 0 and done < tc.max_iter:
            m = validate(model, cfg, class_names, device, out)
            if m is not None:
                log.info("iter %d: validation mAP %.4f", done, m["mAP"])
            model.train()
    if bar is not None:
        bar.close()
    end_iter = max(start, tc.max_iter)
    _save(out / LAST, model, cfg, class_names, end_iter, optimizer, scheduler)
    _save(out / FINAL, model, cfg, class_names, end_iter, None, None)
    summary.update(iterations=end_iter, train_seconds=time.time() - t0, history=history,
                   checkpoint=str(out / FINAL))
    if du.is_main_process():
        save_json({k: v for k, v in summary.items()}, out / "train_log.json")
    du.barrier()
    return summary


def _save(path: Path, model, cfg, class_names, it, optimizer, scheduler) -> None:
    if du.is_main_process():
        save_checkpoint(path, model=model, cfg=cfg, class_names=class_names, iteration=it,
                        optimizer=optimizer, scheduler=scheduler)
    du.barrier()


def _rank0_first(fn):
    """Run ``fn`` on rank 0 first (it may write a cache), then on the other ranks."""
    if du.is_main_process():
        result = fn()
        du.barrier()
        return result
    du.barrier()
    return fn()


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
    proposals = _rank0_first(lambda: get_proposals(cfg, test_set, "test", str(out)))
    predictor = Predictor(model, cfg, class_names, device)
    dets = detect_dataset(predictor, test_set, proposals, progress=False)
    if not du.is_main_process():
        return None
    return evaluate(test_set, dets, cfg.test.metric)
