"""The one training loop: :class:`SimpleTrainer` runs steps, hooks do everything else.

Both recipes train on it: end-to-end training (:mod:`sppdet.engine.train`, images through the
conv layers) and the paper recipe's fc fine-tuning (:mod:`sppdet.engine.paper`, windows pooled
from cached conv maps). A recipe supplies a :class:`Step` (``load(iteration)`` gives the
iteration's batch, ``forward(batch)`` its losses) and the hooks it wants, in the spirit of
detectron2's ``engine/train_loop.py`` and ``engine/hooks.py``; the hooks are in
:mod:`sppdet.engine.hooks` (lr schedule, NaN/inf guard, periodic checkpoints, periodic
evaluation, log and progress bar).

One iteration::

    for hook: before_step()
    batch = step.load(it)                      # outside autocast (data, pooling from a cache)
    with autocast (train.amp on CUDA):
        out = step.forward(batch)              # StepOutput: objective, logged losses, info
    for hook: after_forward(out)               # e.g. the NaN/inf guard, before any update
    zero_grad; backward (scaled for fp16); optimizer step
    for hook: after_step()                     # lr schedule, log, checkpoint, eval

``trainer.iter`` is the iteration being run (0-based); in ``after_step`` the iterations done
are ``trainer.iter + 1``. ``trainer.history`` holds one record per iteration (the logged
losses as floats, ``iter`` = iterations done, ``lr`` used, and the step's ``info``).

Mixed precision (``train.amp``): ``off``, ``bf16`` (autocast to bfloat16) or ``fp16`` (autocast
to float16 with a ``GradScaler``). It applies on CUDA only; on CPU the option is ignored with a
warning (the config may say ``device: auto`` and run on either).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

log = logging.getLogger("sppdet.train")


@dataclass
class StepOutput:
    """What :meth:`Step.forward` returns.

    Attributes:
        objective: the scalar that is backpropagated.
        losses: scalars to log and to guard (``losses["loss"]`` is the total); under torchrun
            the recipes put the averages over every rank here.
        info: plain numbers for the history record (e.g. foreground windows).
    """

    objective: torch.Tensor
    losses: Dict[str, torch.Tensor]
    info: Dict[str, float] = field(default_factory=dict)


@dataclass
class Step:
    """A recipe's iteration: ``load(iteration) -> batch`` and ``forward(batch) -> StepOutput``."""

    load: Callable[[int], Any]
    forward: Callable[[Any], StepOutput]


class HookBase:
    """Called by :class:`SimpleTrainer` around the loop and each iteration (``self.trainer`` is set)."""

    trainer: "SimpleTrainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_forward(self, out: StepOutput) -> None:
        pass

    def after_step(self) -> None:
        pass


def effective_amp(amp: str, device: torch.device) -> str:
    """The mixed-precision mode actually used on ``device`` (``train.amp``, checked when the config
    is loaded): ``off`` on CPU (with a warning)."""
    if amp != "off" and device.type != "cuda":
        log.warning("train.amp=%s applies on CUDA only; training in float32 on %s", amp, device.type)
        return "off"
    return amp


class SimpleTrainer:
    """Runs ``step`` for iterations ``start_iter .. max_iter - 1`` with ``optimizer`` and ``hooks``.

    Args:
        step: the recipe's :class:`Step`.
        optimizer: updates the trained parameters.
        max_iter: iterations of the whole run (a resumed run starts at ``start_iter``).
        hooks: called in the given order.
        amp: ``train.amp`` (see module docstring); ``device`` decides whether it applies.
    """

    def __init__(
        self,
        step: Step,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        start_iter: int = 0,
        hooks: Sequence[HookBase] = (),
        amp: str = "off",
        device: torch.device = torch.device("cpu"),
    ) -> None:
        self.step = step
        self.optimizer = optimizer
        self.max_iter = int(max_iter)
        self.start_iter = int(start_iter)
        self.iter = self.start_iter
        self.history: List[Dict[str, float]] = []
        self.hooks: List[HookBase] = []
        self.device = torch.device(device)
        self.amp = effective_amp(amp, self.device)
        self.scaler: Optional[torch.amp.GradScaler] = (
            torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None
        )
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def train(self) -> List[Dict[str, float]]:
        """Run the loop; returns the history of this run's iterations."""
        for h in self.hooks:
            h.before_train()
        try:
            for self.iter in range(self.start_iter, self.max_iter):
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                for h in self.hooks:
                    h.after_step()
        finally:
            for h in self.hooks:
                h.after_train()
        self.iter = max(self.start_iter, self.max_iter)
        return self.history

    def run_step(self) -> None:
        batch = self.step.load(self.iter)
        with self._autocast():
            out = self.step.forward(batch)
        for h in self.hooks:
            h.after_forward(out)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out.objective.float()).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out.objective.backward()
            self.optimizer.step()
        rec: Dict[str, float] = {k: float(v.detach()) for k, v in out.losses.items()}
        rec.update(out.info)
        rec.update(iter=self.iter + 1, lr=lr)
        self.history.append(rec)

    def state_dict(self) -> Dict[str, Any]:
        """The loop's own state for a checkpoint (the fp16 gradient scaler)."""
        return {"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
