"""SPP-net's multi-stage training recipe (``train.recipe: paper``), on cached features.

The conv layers stay fixed (pretrained), so the conv feature maps of each training image are
computed once (per scale) and cached; every later stage pools the region-SPP (pool5) vectors
of the windows it needs from the cached maps, on the fly, with the model's region-SPP layer:

1. ``cache``     conv maps of every training image view (mirrored views too when
                 ``train.paper.flip``) at each of ``input.train_scales``, float16, plus the
                 windows (ground truth + top proposals) as metadata
                 (:mod:`sppdet.engine.feature_cache`). Each window is pooled at the scale where
                 its area is closest to ``input.target_size ** 2``.
2. ``finetune``  fc6, fc7 and a new (K+1)-way fc8 (``head.cls_score``) by SGD on mini-batches of
                 ``finetune_batch`` windows drawn from ``finetune_images`` random views (0: from
                 the whole cache): ``train.fg_fraction`` foreground (IoU >= ``train.fg_iou``), the
                 rest background (IoU in ``[train.bg_iou_low, train.bg_iou_high)``); lr
                 ``finetune_lr``, times ``train.lr_gamma`` at each of ``finetune_lr_steps``
                 (or cosine, ``finetune_lr_schedule``), after ``finetune_warmup_iters`` of
                 warm-up, momentum ``train.momentum``. With ``finetune_standardize`` fc6 sees
                 pool5 standardized per dimension, and the affine map is folded into fc6 at the
                 end (the saved head takes raw pool5). It runs on the one training loop
                 (:mod:`sppdet.engine.train_loop`, with ``train.amp`` on CUDA).
                 With ``finetune_bbox`` the head's box regressor (``bbox_pred``) is trained too
                 (Fast R-CNN's multi-task loss; not in the SPP-net paper, and used only by
                 ``scorer: softmax``: the SVM scorer uses the ridge regressors of stage 4).
3. ``svm``       per-class linear SVMs on fc7 of the fine-tuned fc layers, with hard negative
                 mining (:mod:`sppdet.svm`), one view at a time: in memory are the positives,
                 the current hard negatives and one view's windows.
4. ``bbox``      per-class ridge box regressors on pool5 (:mod:`sppdet.svm`), accumulated over
                 chunks of windows (``K`` matrices of ``D x D`` float64 in memory).

Outputs in the output folder, each written atomically: the cache, ``finetune.pth`` (a normal
checkpoint: usable with ``train.paper.scorer=softmax``), ``svm.pth``, ``bbox.pth`` and
``model_final.pth`` (fine-tuned model + ``extras["paper"]``, read by
:func:`sppdet.engine.infer.load_predictor`). Each output records a key of everything it was
made from; an output whose key matches is reused (the stage is skipped), a stale one is redone.
With ``resume`` an interrupted cache continues with its valid shards and an interrupted
fine-tuning continues from ``finetune_last.pth`` exactly. ``stage`` runs one stage only, and
requires the outputs of the stages it reads (cache for all; ``finetune.pth`` for ``svm``).

Under ``torchrun``: the proposals and the feature cache are sharded over the ranks (each image
on one rank); fine-tuning runs DistributedDataParallel on the fc layers, each rank taking every
``w``-th window of the same global mini-batch of ``finetune_batch`` windows (so the update is
the single-process one, up to dropout masks); the SVMs, the box regressors and the final model
are computed by rank 0 alone (they are cheap next to the cache) while the others wait. Only
rank 0 writes outputs other than cache shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config, config_from_dict, config_to_dict, save_config
from ..data.build import build_dataset
from ..errors import SppdetError
from ..fileio import make_output_dir, save_json, torch_load, torch_save
from ..modeling.detector import build_detector
from ..modeling.loss import FastRCNNLoss
from ..proposals.build import get_proposals
from ..structures import BoxCoder, box_iou
from ..svm import MiningImage, RidgeAccumulator, SVMParams, feature_scale, scorer_state, train_svms
from ..utils import comm as du
from .checkpoint import restore_model, save_checkpoint
from .data import mix_seed
from .feature_cache import CacheError, FeatureCache, build_feature_cache, expected_fingerprint
from .hooks import LRScheduler, NaNGuard, PeriodicCheckpointer, ProgressLogger, resume_schedule
from .train import build_optimizer, global_losses, schedule_factor
from .train_loop import SimpleTrainer, Step, StepOutput

log = logging.getLogger("sppdet.paper")

STAGES = ("cache", "finetune", "svm", "bbox")
FINETUNE, FINETUNE_LAST, SVM, BBOX, FINAL = (
    "finetune.pth",
    "finetune_last.pth",
    "svm.pth",
    "bbox.pth",
    "model_final.pth",
)
#: Windows sampled to compute a feature scale (mean L2 norm).
SCALE_SAMPLE = 4000
#: Windows per fc forward / per pooling and ridge accumulation chunk.
CHUNK = 2048
#: Windows whose pool5 gives the standardization statistics of ``finetune_standardize``.
STATS_WINDOWS = 16384
#: Views whose cached maps are loaded together for one pooling call (bounds RAM).
VIEWS_PER_CHUNK = 32


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def train_paper(cfg: Config, output_dir: Optional[str] = None, resume: bool = False, stage: str = "all") -> Dict:
    """Run the paper recipe (all stages or one); returns a summary dict.

    Summary keys: ``checkpoint`` (``model_final.pth``; ``finetune.pth`` or "" when the final
    model cannot be assembled yet), ``stage_seconds`` {cache, finetune, svm, bbox} (0 when
    skipped), ``stage_seconds_recorded`` (what each current output took when it was made, in this
    run or an earlier one; rank 0), ``stages_run``, ``output_dir``, ``cache`` and per-stage statistics.
    """

    if stage != "all" and stage not in STAGES:
        raise SppdetError(f"--stage: unknown stage '{stage}' (use all, {', '.join(STAGES)})")
    du.init_distributed(cfg.device)
    out = Path(output_dir or cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=str(out))
    make_output_dir(out)
    if du.is_main_process():
        save_config(cfg, out / "config.yaml")
    dataset = build_dataset(cfg, "train")
    if len(dataset) == 0:
        raise SppdetError(f"training split '{cfg.data.train_split}' has no images")
    log.info("train set: %s", dataset)
    proposals = get_proposals(cfg, dataset, "train", str(out))
    trainer = PaperTrainer(cfg, out, dataset, proposals, du.resolve_device(cfg.device))
    summary = trainer.run(stage, resume)
    if du.is_main_process():
        save_json(summary, out / "train_log.json")
    return summary


class PaperTrainer:
    """The four stages on one dataset and proposal store (``proposals.boxes(image_id)``)."""

    def __init__(self, cfg: Config, output_dir, dataset, proposals, device="cpu", progress: bool = True) -> None:

        self.cfg = cfg
        self.out = Path(output_dir)
        self.dataset = dataset
        self.proposals = proposals
        self.device = torch.device(device)
        self.progress = progress and du.is_main_process()
        self.class_names = list(dataset.class_names)
        self.num_classes = len(self.class_names)
        torch.manual_seed(cfg.train.seed)  # same random init (tiny backbone, head) in every stage
        self.model = build_detector(cfg, self.num_classes).to(self.device).eval()
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        pc = cfg.train.paper
        self.cache_dir = Path(pc.cache_dir) if pc.cache_dir else self.out / "feature_cache"
        self.box_coder = BoxCoder(cfg.model.box_weights)
        self._cache: Optional[FeatureCache] = None

    @property
    def cache(self) -> FeatureCache:
        """The feature cache (opened or built by the cache stage, which every run starts with)."""
        if self._cache is None:
            raise SppdetError("the feature cache is not open yet; run the cache stage first")
        return self._cache

    # -- orchestration -----------------------------------------------------------------
    def run(self, stage: str = "all", resume: bool = False) -> Dict:
        summary: Dict = {
            "output_dir": str(self.out),
            "stage_seconds": {s: 0.0 for s in STAGES},
            "stages_run": [],
            "checkpoint": "",
        }
        todo = STAGES if stage == "all" else (stage,)
        for name in STAGES:
            t0 = time.time()
            if name == "cache":
                ran = self._stage_cache(resume, build=name in todo)
            elif name not in todo:
                continue
            elif name == "finetune":
                ran = self._stage_finetune(resume, summary)
            elif not du.is_main_process():  # svm, bbox: rank 0 alone (module docstring)
                ran = False
            elif name == "svm":
                ran = self._stage_svm(summary, allow_redo_finetune=stage == "all")
            else:
                ran = self._stage_bbox(summary)
            du.barrier()
            if ran:
                summary["stages_run"].append(name)
                summary["stage_seconds"][name] = round(time.time() - t0, 2)
                log.info("stage %s: %.1f s", name, time.time() - t0)
        c = self.cache
        if du.is_main_process():
            summary["stage_seconds_recorded"] = self._recorded_seconds()
        summary["cache"] = {
            "dir": str(self.cache_dir),
            "views": len(c),
            "scales": c.scales,
            "windows": c.num_windows,
            "channels": c.channels,
            "gigabytes": round(c.nbytes / 1e9, 4),
            # what the per-window pool5 layout (sppdet <= 0.1) would have needed, for comparison
            "pool5_layout_gigabytes": round(c.num_windows * self.model.spp_dim * 2 / 1e9, 3),
        }
        if du.is_main_process():
            final = self._write_final()
            if final:
                summary["checkpoint"] = str(final)
            elif (self.out / FINETUNE).is_file():
                summary["checkpoint"] = str(self.out / FINETUNE)
        return du.broadcast_object(summary)  # every rank returns rank 0's summary (and paths)

    def _recorded_seconds(self) -> Dict[str, float]:
        """Seconds each current output took when it was made (in this run or an earlier one)."""
        keys = self._keys()
        out = {"cache": float(self.cache.meta.get("build_seconds", 0.0))}
        for stage, name in (("finetune", FINETUNE), ("svm", SVM), ("bbox", BBOX)):
            state = self._load_stage(name, keys[stage], quiet=True) or {}
            rec = state.get("extras", {}).get("paper_stage", {}) if state.get("format") else state
            out[stage] = float(rec.get("seconds", 0.0))
        return out

    def _keys(self) -> Dict[str, str]:
        cfg, pc, tc = self.cfg, self.cfg.train.paper, self.cfg.train
        ft = _key(
            self.cache.fingerprint,
            cfg.model.fc_dims,
            cfg.model.dropout,
            pc.finetune_iters,
            pc.finetune_lr,
            pc.finetune_lr_steps,
            pc.finetune_lr_schedule,
            pc.finetune_warmup_iters,
            pc.finetune_standardize,
            tc.warmup_factor if pc.finetune_warmup_iters else None,
            pc.finetune_batch,
            pc.finetune_images,
            pc.finetune_bbox,
            cfg.input.target_size,
            tc.amp,
            tc.fg_fraction,
            tc.fg_iou,
            tc.bg_iou_low,
            tc.bg_iou_high,
            tc.momentum,
            tc.weight_decay,
            tc.lr_gamma,
            tc.seed,
            cfg.model.box_weights if pc.finetune_bbox else None,
        )
        svm = _key(
            ft,
            pc.svm_c,
            pc.svm_pos_weight,
            pc.svm_neg_iou,
            pc.svm_feat_norm,
            pc.svm_hard_thresh,
            pc.svm_evict_thresh,
            pc.svm_retrain_limit,
            pc.svm_epochs,
            pc.svm_intercept_scaling,
            pc.svm_mine_flipped,
            tc.seed,
        )
        bbox = _key(
            self.cache.fingerprint,
            pc.bbox_reg_lambda,
            pc.bbox_reg_min_iou,
            pc.svm_feat_norm,
            cfg.input.target_size,
            cfg.model.box_weights,
            tc.seed,
        )
        return {"finetune": ft, "svm": svm, "bbox": bbox}

    def _stage_cache(self, resume: bool, build: bool) -> bool:

        if not build:
            fp = expected_fingerprint(self.model, self.dataset, self.proposals, self.cfg)
            try:
                self._cache = FeatureCache.open(self.cache_dir, fp, target_size=self.cfg.input.target_size)
            except CacheError as e:
                raise SppdetError(f"{e}; run the cache stage first (--stage cache or all)") from None
            return False
        self._cache = build_feature_cache(
            self.model,
            self.dataset,
            self.proposals,
            self.cfg,
            self.cache_dir,
            self.device,
            resume=resume,
            progress=self.progress,
        )
        return not self.cache.reused

    def _load_stage(self, name: str, key: str, quiet: bool = False) -> Optional[Dict]:
        """A stage output whose recorded key matches, else None."""
        path = self.out / name
        if not path.is_file():
            return None
        try:
            state = torch_load(path)
        except SppdetError as e:
            log.warning("%s", e)
            return None
        rec = state.get("extras", {}).get("paper_stage", {}) if state.get("format") else state
        if rec.get("key") != key:
            if quiet:
                return None
            log.info("%s is stale (made from other settings or an earlier stage); redoing it", path)
            return None
        return state

    # -- pooling from the cached maps ---------------------------------------------------
    def _chunks(self, rows: np.ndarray):
        """Yield ``(positions, pooled (n, D) float32)`` over ``rows`` (global window indices),
        in chunks of at most ``CHUNK`` windows from at most ``VIEWS_PER_CHUNK`` views (bounds RAM)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        shard = self.cache.index["shard"][rows[order]]
        new_view = np.r_[True, shard[1:] != shard[:-1]] if len(shard) else np.zeros(0, bool)
        group = (np.cumsum(new_view) - 1) // VIEWS_PER_CHUNK
        start = 0
        while start < len(order):
            stop = min(start + CHUNK, int(np.searchsorted(group, group[start], side="right")))
            pos = order[start:stop]
            yield pos, self.cache.pool(self.model, rows[pos], self.device)
            start = stop

    def _pool_rows(self, rows: np.ndarray) -> torch.Tensor:
        """float32 ``(len(rows), D)`` pool5 vectors of ``rows``, in their order."""
        out = torch.empty((len(rows), int(self.model.spp_dim)), device=self.device)
        for pos, x in self._chunks(rows):
            out[torch.from_numpy(pos).to(self.device)] = x
        return out

    # -- stage 2: fc fine-tuning -------------------------------------------------------
    def _window_sets(self):
        tc, idx = self.cfg.train, self.cache.index
        fg = np.nonzero(idx["max_iou"] >= tc.fg_iou)[0]
        bg = np.nonzero((idx["max_iou"] >= tc.bg_iou_low) & (idx["max_iou"] < tc.bg_iou_high))[0]
        if bg.size == 0:
            bg = np.nonzero(idx["max_iou"] < tc.bg_iou_high)[0]
        return fg, bg

    def _batch_sampler(self, fg: np.ndarray, bg: np.ndarray):
        """``sample(it) -> (windows, num_fg)``: the global mini-batch of iteration ``it``
        (deterministic in ``(seed, it)``, so a resumed run draws what an uninterrupted one does)."""
        pc, tc = self.cfg.train.paper, self.cfg.train
        batch = pc.finetune_batch
        num_fg = min(int(round(batch * tc.fg_fraction)), batch)
        views = len(self.cache)
        per_view = 0 < pc.finetune_images < views
        if per_view:  # each view's fg / bg windows (fg and bg are sorted, as the index is by view)
            shard = self.cache.index["shard"]
            fg_at = np.searchsorted(shard[fg], np.arange(views + 1))
            bg_at = np.searchsorted(shard[bg], np.arange(views + 1))

        def sample(it: int):
            rng = np.random.default_rng(mix_seed(tc.seed, it, 11))
            f, b = fg, bg
            if per_view:
                pick = np.sort(rng.choice(views, pc.finetune_images, replace=False))
                f = np.concatenate([fg[fg_at[v] : fg_at[v + 1]] for v in pick])
                b = np.concatenate([bg[bg_at[v] : bg_at[v + 1]] for v in pick])
                if b.size == 0:  # views without background: draw it from the whole cache
                    b = bg
            n_fg = min(num_fg, f.size)
            pick_fg = f[rng.integers(0, f.size, n_fg)] if n_fg else f[:0]
            pick_bg = b[rng.integers(0, b.size, batch - n_fg)]
            return np.concatenate([pick_fg, pick_bg]), n_fg

        return sample

    def _stage_finetune(self, resume: bool, summary: Dict) -> bool:

        key = self._keys()["finetune"]
        if du.broadcast_object(self._load_stage(FINETUNE, key) is not None if du.is_main_process() else None):
            log.info("stage finetune: %s is up to date (delete it to redo)", self.out / FINETUNE)
            return False
        t0 = time.time()
        cfg, pc, tc = self.cfg, self.cfg.train.paper, self.cfg.train
        head = self.model.head
        if not pc.finetune_bbox:
            for p in head.bbox_pred.parameters():
                p.requires_grad_(False)
        fg, bg = self._window_sets()
        if fg.size == 0 or bg.size == 0:
            raise SppdetError(
                f"fine-tuning needs foreground and background windows; the cache has {fg.size} "
                f"foreground and {bg.size} background windows (check proposals and ground truth)"
            )
        log.info(
            "fine-tuning fc layers on %d fg / %d bg cached windows, %d iterations of %d windows from %s",
            fg.size,
            bg.size,
            pc.finetune_iters,
            pc.finetune_batch,
            f"{pc.finetune_images} views" if 0 < pc.finetune_images < len(self.cache) else "the whole cache",
        )
        optimizer = build_optimizer(head, _with_lr(cfg, pc.finetune_lr))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda it: schedule_factor(
                it,
                pc.finetune_lr_schedule,
                pc.finetune_lr_steps,
                tc.lr_gamma,
                pc.finetune_iters,
                pc.finetune_warmup_iters,
                tc.warmup_factor,
            ),
        )
        loss_fn = FastRCNNLoss(box_loss_weight=1.0 if pc.finetune_bbox else 0.0)
        start = 0
        last = self._load_stage(FINETUNE_LAST, key) if resume else None
        if last is not None:
            restore_model(self.model, last, self.out / FINETUNE_LAST)
            optimizer.load_state_dict(last["optimizer"])
            start = int(last["iteration"])
            resume_schedule(scheduler, start)
            log.info("resumed fine-tuning at iteration %d", start)
        rank, world = du.get_rank(), du.get_world_size()
        ddp_head: torch.nn.Module = head
        if world > 1:
            ddp_head = torch.nn.parallel.DistributedDataParallel(
                head, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        sample = self._batch_sampler(fg, bg)
        idx = self.cache.index
        stats = self._input_stats(fg, bg) if pc.finetune_standardize else None

        def load(it: int):
            windows, n_fg = sample(it)
            labels = torch.zeros(len(windows), dtype=torch.long)
            labels[:n_fg] = torch.from_numpy(idx["gt_label"][windows[:n_fg]].astype(np.int64))
            targets = torch.zeros(len(windows), 4)
            if n_fg:
                targets[:n_fg] = self.box_coder.encode(
                    torch.from_numpy(idx["boxes"][windows[:n_fg]]), torch.from_numpy(idx["gt_box"][windows[:n_fg]])
                )
            share = slice(rank, None, world)  # this rank's windows of the global mini-batch (all single-process)
            x = self._pool_rows(windows[share])
            if stats is not None:
                x = (x - stats[0]) / stats[1]
            return x, labels[share].to(self.device), targets[share].to(self.device), it

        def forward(data) -> StepOutput:
            x, labels, targets, it = data
            # dropout masks: same on resume; each rank its own
            torch.manual_seed(mix_seed(tc.seed, it, 13) if rank == 0 else mix_seed(tc.seed, it, 13, rank))
            losses = loss_fn(ddp_head(x), labels, targets)
            if world > 1:
                objective, logged, _, _ = global_losses(losses, labels, world)
                return StepOutput(objective, logged)
            return StepOutput(losses["loss"], losses)

        def kept() -> str:
            last = self.out / FINETUNE_LAST
            return f"the last good checkpoint is kept: {last}" if last.is_file() else "no checkpoint was written"

        guard = NaNGuard(head, kept, "lower train.paper.finetune_lr")
        trainer = SimpleTrainer(
            Step(load, forward), optimizer, pc.finetune_iters, start, amp=tc.amp, device=self.device
        )
        trainer.register_hooks(
            [
                guard,
                LRScheduler(scheduler),
                ProgressLogger("finetune", tc.log_period, enabled=self.progress),
                PeriodicCheckpointer(
                    tc.checkpoint_period, lambda done: self._save(FINETUNE_LAST, done, {"key": key}, optimizer), guard
                ),
            ]
        )
        head.train()
        history = trainer.train()
        head.eval()
        guard.check_weights(pc.finetune_iters)
        if stats is not None:
            head.fold_input_affine(*stats)
        self._save(FINETUNE, pc.finetune_iters, {"key": key, "seconds": round(time.time() - t0, 2)})
        if du.is_main_process():
            (self.out / FINETUNE_LAST).unlink(missing_ok=True)
        if history:
            tail = history[-min(len(history), 50) :]
            summary["finetune"] = {
                "first_loss": round(history[0]["loss"], 5),
                "final_loss": round(sum(r["loss"] for r in tail) / len(tail), 5),
                "seconds_per_iter": round((time.time() - t0) / len(history), 4),
            }
        return True

    def _input_stats(self, fg: np.ndarray, bg: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of pool5 over ``STATS_WINDOWS`` windows drawn from the
        fine-tuning windows (deterministic in the seed, so a resumed run gets the same)."""
        tc = self.cfg.train
        pool = np.concatenate([fg, bg])
        rng = np.random.default_rng(mix_seed(tc.seed, 17))
        rows = np.sort(rng.choice(pool, min(STATS_WINDOWS, pool.size), replace=False))
        x = self._pool_rows(rows).double()
        mean, std = x.mean(0), x.std(0)
        std = std.clamp_min(max(float(std.mean()) * 1e-3, 1e-6))  # a dimension that never varies
        log.info(
            "fine-tuning on standardized pool5 (%d windows: mean %.3g, std %.3g)", len(rows), mean.mean(), std.mean()
        )
        return mean.float(), std.float()

    def _save(self, name: str, iteration: int, stage_rec: Dict, optimizer=None) -> None:
        if not du.is_main_process():
            return
        save_checkpoint(
            self.out / name,
            model=self.model,
            cfg=self.cfg,
            class_names=self.class_names,
            iteration=iteration,
            optimizer=optimizer,
            extras={"paper_stage": stage_rec},
        )

    def _load_finetuned(self, key: str, allow_redo: bool, summary: Dict) -> None:
        state = self._load_stage(FINETUNE, key)
        if state is None:
            if not allow_redo or du.get_world_size() > 1:  # (under torchrun only rank 0 gets here)
                raise SppdetError(f"{self.out / FINETUNE} is missing or stale; run --stage finetune first")
            self._stage_finetune(False, summary)
            state = self._load_stage(FINETUNE, key)
        if state is None:
            raise SppdetError(f"{self.out / FINETUNE}: fine-tuned model not found after fine-tuning")
        restore_model(self.model, state, self.out / FINETUNE)
        self.model.eval()

    # -- stage 3: SVMs -----------------------------------------------------------------
    @torch.no_grad()
    def _fc7(self, pool5: torch.Tensor) -> np.ndarray:
        head = self.model.head.eval()
        out = [head.features(pool5[i : i + CHUNK]).float().cpu().numpy() for i in range(0, len(pool5), CHUNK)]
        return np.concatenate(out) if out else np.zeros((0, head.out_dim), np.float32)

    def _sample_windows(self, n: int, seed: int) -> np.ndarray:
        total = self.cache.num_windows
        rng = np.random.default_rng(mix_seed(self.cfg.train.seed, seed))
        return np.sort(rng.choice(total, min(n, total), replace=False))

    def _stage_svm(self, summary: Dict, allow_redo_finetune: bool) -> bool:

        keys = self._keys()
        if self._load_stage(SVM, keys["svm"]) is not None:
            log.info("stage svm: %s is up to date (delete it to redo)", self.out / SVM)
            return False
        self._load_finetuned(keys["finetune"], allow_redo_finetune, summary)
        t0 = time.time()
        pc, idx = self.cfg.train.paper, self.cache.index
        scale = feature_scale(self._fc7(self._pool_rows(self._sample_windows(SCALE_SAMPLE, 21))), pc.svm_feat_norm)
        gt_rows = np.nonzero(idx["is_gt"])[0]
        pos_x = self._fc7(self._pool_rows(gt_rows)) * scale
        pos_labels = idx["gt_label"][gt_rows]
        positives = [pos_x[pos_labels == k] for k in range(1, self.num_classes + 1)]
        log.info("SVMs: fc7 scale %.4g, positives per class %s", scale, [len(p) for p in positives])
        params = SVMParams(
            C=pc.svm_c,
            pos_weight=pc.svm_pos_weight,
            intercept_scaling=pc.svm_intercept_scaling,
            hard_thresh=pc.svm_hard_thresh,
            evict_thresh=pc.svm_evict_thresh,
            retrain_limit=pc.svm_retrain_limit,
            seed=self.cfg.train.seed,
        )
        svms = train_svms(positives, [], params, pc.svm_epochs, image_stream=lambda e: self._mining_images(e, scale))
        weight = np.stack([s.w for s in svms])
        bias = np.array([s.b for s in svms], dtype=np.float32)
        stats = {
            name: {**s.stats, "retrains": s.num_retrains, "cache": len(s.neg)}
            for name, s in zip(self.class_names, svms)
        }
        for name, st in stats.items():
            log.info(
                "SVM %s: %s",
                name,
                ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in st.items()),
            )
        torch_save(
            {
                "key": keys["svm"],
                "svm_weight": torch.from_numpy(weight),
                "svm_bias": torch.from_numpy(bias),
                "svm_feat_scale": float(scale),
                "seconds": round(time.time() - t0, 2),
            },
            self.out / SVM,
        )
        summary["svm"] = stats
        return True

    def _mining_views(self) -> np.ndarray:
        """The views hard negatives are mined from: all, or the unmirrored ones (``svm_mine_flipped``)."""
        views = np.arange(len(self.cache))
        if self.cfg.train.paper.svm_mine_flipped:
            return views
        return views[[not s.flip for s in self.cache.shards]]

    def _mining_images(self, epoch: int, scale: float):

        thresh = self.cfg.train.paper.svm_neg_iou
        views = self._mining_views()
        order = views[np.random.default_rng(mix_seed(self.cfg.train.seed, epoch, 17)).permutation(len(views))]
        for s in tqdm(
            order, desc=f"svm mining (epoch {epoch + 1})", unit="view", disable=not self.progress, mininterval=1.0
        ):
            w = self.cache.windows(int(s))
            x = self._fc7(self.cache.pool_view(self.model, int(s), device=self.device)) * scale
            neg = np.ones((len(x), self.num_classes), dtype=bool)
            if len(w["gt_boxes"]):
                iou = box_iou(w["boxes"], w["gt_boxes"])
                for k in range(1, self.num_classes + 1):
                    cls = w["gt_labels"] == k
                    if cls.any():
                        neg[:, k - 1] = iou[:, cls].max(1) < thresh
            keys = (np.int64(s) << 32) + np.arange(len(x), dtype=np.int64)
            yield MiningImage(x, neg, keys)

    # -- stage 4: box regression -------------------------------------------------------
    def _stage_bbox(self, summary: Dict) -> bool:

        key = self._keys()["bbox"]
        if self._load_stage(BBOX, key) is not None:
            log.info("stage bbox: %s is up to date (delete it to redo)", self.out / BBOX)
            return False
        t0 = time.time()
        pc, idx = self.cfg.train.paper, self.cache.index
        scale = feature_scale(self._pool_rows(self._sample_windows(SCALE_SAMPLE, 23)).cpu().numpy(), pc.svm_feat_norm)
        sel = np.nonzero((idx["max_iou"] >= pc.bbox_reg_min_iou) & (idx["gt_label"] > 0))[0]
        d, k_all = int(self.model.spp_dim), self.num_classes
        labels = idx["gt_label"][sel]
        targets = self.box_coder.encode(torch.from_numpy(idx["boxes"][sel]), torch.from_numpy(idx["gt_box"][sel]))
        accs = {k: RidgeAccumulator(d, 4) for k in range(1, k_all + 1) if (labels == k).any()}

        # one pass over the windows: each chunk is pooled once and feeds every class's sums
        bar = tqdm(total=len(sel), desc="bbox", unit="window", disable=not self.progress, mininterval=1.0)
        for pos, x in self._chunks(sel):
            x = x.cpu() * scale
            for k, acc in accs.items():
                m = torch.from_numpy(labels[pos] == k)
                if m.any():
                    acc.add(x[m], targets[torch.from_numpy(pos)][m])
            bar.update(len(pos))
        bar.close()
        weight = np.zeros((d, 4 * k_all), np.float32)
        bias = np.zeros(4 * k_all, np.float32)
        for k, acc in accs.items():
            w, b = acc.solve(pc.bbox_reg_lambda)
            weight[:, 4 * (k - 1) : 4 * k] = w.float().numpy()
            bias[4 * (k - 1) : 4 * k] = b.float().numpy()
        counts = {name: int((labels == k).sum()) for k, name in enumerate(self.class_names, 1)}
        log.info("box regressors: pool5 scale %.4g, windows per class %s", scale, counts)
        torch_save(
            {
                "key": key,
                "bbox_weight": torch.from_numpy(weight),
                "bbox_bias": torch.from_numpy(bias),
                "bbox_feat_scale": float(scale),
                "seconds": round(time.time() - t0, 2),
            },
            self.out / BBOX,
        )
        summary["bbox"] = {"windows": counts}
        return True

    # -- the final checkpoint ----------------------------------------------------------
    def _write_final(self) -> Optional[Path]:
        """Assemble ``model_final.pth`` when finetune, svm and bbox outputs are all current."""

        keys = self._keys()
        ft, svm, bbox = (
            self._load_stage(n, keys[s]) for n, s in ((FINETUNE, "finetune"), (SVM, "svm"), (BBOX, "bbox"))
        )
        if ft is None or svm is None or bbox is None:
            missing = [n for n, s in ((FINETUNE, ft), (SVM, svm), (BBOX, bbox)) if s is None]
            log.info("final model not written yet: %s missing or stale", ", ".join(missing))
            return None
        restore_model(self.model, ft, self.out / FINETUNE)
        state = scorer_state(
            svm["svm_weight"],
            svm["svm_bias"],
            svm["svm_feat_scale"],
            bbox["bbox_weight"],
            bbox["bbox_bias"],
            bbox["bbox_feat_scale"],
        )
        state["keys"] = keys
        path = self.out / FINAL
        save_checkpoint(
            path,
            model=self.model,
            cfg=self.cfg,
            class_names=self.class_names,
            iteration=int(ft["iteration"]),
            extras={"paper": state},
        )
        return path


def _with_lr(cfg: Config, lr: float) -> Config:
    """A copy of ``cfg`` whose ``train.base_lr`` is ``lr`` (for :func:`build_optimizer`)."""

    data = config_to_dict(cfg)
    data["train"]["base_lr"] = lr
    return config_from_dict(data)
