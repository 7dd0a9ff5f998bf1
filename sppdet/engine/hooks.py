"""Hooks of the one training loop (:mod:`sppdet.engine.train_loop`), written once for every recipe.

* :class:`LRScheduler`        steps a ``torch.optim.lr_scheduler`` after every iteration.
* :class:`NaNGuard`           stops with one clear line when a loss is NaN/inf (before the update)
                              or when weights are not finite (before a checkpoint is written).
* :class:`PeriodicCheckpointer` calls ``save(done)`` every ``period`` iterations (not at the end:
                              the recipe writes its final files itself).
* :class:`EvalHook`           calls ``evaluate(done)`` every ``period`` iterations.
* :class:`ProgressLogger`     progress bar (rank 0) and a log line every ``period`` iterations.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..errors import SppdetError
from .train_loop import HookBase, StepOutput

log = logging.getLogger("sppdet.train")


class LRScheduler(HookBase):
    """``scheduler.step()`` after each iteration (the lr of iteration ``t`` is the schedule's ``t``)."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


def resume_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, iteration: int) -> None:
    """Put a restored optimizer's ``scheduler`` at ``iteration`` (when its own state was not saved):
    ``last_epoch`` and each group's lr as the schedule gives them there."""
    scheduler.last_epoch = int(iteration)
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(int(iteration))


class NaNGuard(HookBase):
    """Stop on a NaN/inf loss or non-finite weights with a message that says what is kept.

    Args:
        model: the trained module (its parameters are checked before a checkpoint).
        kept: returns the clause saying which checkpoint survives (e.g. "the last good
            checkpoint is kept: out/last.pth").
        advice: what to change, e.g. "lower train.base_lr or check the data".
    """

    def __init__(self, model: torch.nn.Module, kept: Callable[[], str], advice: str) -> None:
        self.model = model
        self.kept = kept
        self.advice = advice

    def after_forward(self, out: StepOutput) -> None:
        if not all(torch.isfinite(v).all() for v in out.losses.values()):
            vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.losses.items())
            raise SppdetError(
                f"training diverged at iteration {self.trainer.iter} ({vals}); {self.kept()}; {self.advice}"
            )

    def check_weights(self, done: int) -> None:
        """Before a checkpoint is written: a finite loss can still leave inf/NaN weights behind."""
        bad = next((n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise SppdetError(
                f"training diverged at iteration {done} (weights '{bad}' are not finite; not "
                f"saved); {self.kept()}; {self.advice}"
            )


class PeriodicCheckpointer(HookBase):
    """``save(done)`` every ``period`` iterations before the last; weights checked by ``guard``."""

    def __init__(self, period: int, save: Callable[[int], None], guard: Optional[NaNGuard] = None) -> None:
        self.period = int(period)
        self.save = save
        self.guard = guard

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period and done % self.period == 0 and done < self.trainer.max_iter:
            if self.guard is not None:
                self.guard.check_weights(done)
            self.save(done)


class EvalHook(HookBase):
    """``evaluate(done)`` every ``period`` iterations before the last (0 = never)."""

    def __init__(self, period: int, evaluate: Callable[[int], None]) -> None:
        self.period = int(period)
        self.evaluate = evaluate

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period and done % self.period == 0 and done < self.trainer.max_iter:
            self.evaluate(done)


class ProgressLogger(HookBase):
    """A tqdm bar (when ``enabled``) and, every ``period`` iterations and at the end, a log line
    with the average of ``keys`` over the iterations since the last line, the lr and s/it."""

    def __init__(
        self, desc: str, period: int, keys: Sequence[str] = ("loss",), enabled: bool = True, label: str = ""
    ) -> None:
        self.desc = desc
        self.label = label or desc
        self.period = int(period)
        self.keys = tuple(keys)
        self.enabled = enabled
        self.bar = None
        self.window: List[Dict[str, float]] = []
        self.t0 = 0.0

    def before_train(self) -> None:
        self.t0 = time.time()
        if self.enabled:
            from tqdm import tqdm

            t = self.trainer
            self.bar = tqdm(
                total=t.max_iter, initial=t.start_iter, desc=self.desc, unit="it", dynamic_ncols=True, mininterval=1.0
            )

    def after_step(self) -> None:
        t = self.trainer
        rec = t.history[-1]
        self.window.append(rec)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec.get('loss', float('nan')):.3f}", lr=f"{rec['lr']:.2g}")
        done = t.iter + 1
        if self.enabled and self.period and (done % self.period == 0 or done == t.max_iter):
            avg = {k: sum(r.get(k, 0.0) for r in self.window) / len(self.window) for k in self.keys}
            speed = (time.time() - self.t0) / max(1, done - t.start_iter)
            parts = "  ".join(f"{k} {v:.4f}" for k, v in avg.items())
            log.info("%s %d/%d  %s  lr %.3g  %.3f s/it", self.label, done, t.max_iter, parts, rec["lr"], speed)
            self.window = []

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
