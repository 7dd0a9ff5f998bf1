"""SPP-net's multi-stage training recipe (``train.recipe: paper``), on cached features.

The conv layers stay fixed (pretrained), so the conv features of each training image are
computed once, and every later stage trains on the cached region-SPP (pool5) vectors:

1. ``cache``     pool5 vectors of every window (ground truth + top proposals), mirrored views
                 too when ``train.paper.flip`` (:mod:`sppdet.engine.feature_cache`).
2. ``finetune``  fc6, fc7 and a new (K+1)-way fc8 (``head.cls_score``) by SGD on mini-batches of
                 ``finetune_batch`` windows drawn across the whole cache: ``train.fg_fraction``
                 foreground (IoU >= ``train.fg_iou``), the rest background (IoU in
                 ``[train.bg_iou_low, train.bg_iou_high)``); lr ``finetune_lr``, times
                 ``train.lr_gamma`` at each of ``finetune_lr_steps``, momentum ``train.momentum``.
                 With ``finetune_bbox`` the head's box regressor (``bbox_pred``) is trained too
                 (Fast R-CNN's multi-task loss; not in the SPP-net paper, and used only by
                 ``scorer: softmax``: the SVM scorer uses the ridge regressors of stage 4).
3. ``svm``       per-class linear SVMs on fc7 of the fine-tuned fc layers, with hard negative
                 mining (:mod:`sppdet.svm`).
4. ``bbox``      per-class ridge box regressors on pool5 (:mod:`sppdet.svm`).

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
from typing import Dict, List, Optional

import numpy as np
import torch

from ..config import Config, config_to_dict, save_config
from ..errors import SppdetError
from ..fileio import make_output_dir, save_json, torch_load, torch_save
from ..structures import BoxCoder, box_iou
from ..utils import comm as du
from .checkpoint import restore_model, save_checkpoint
from .data import mix_seed
from .feature_cache import CacheError, FeatureCache, build_feature_cache

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
#: Windows per fc forward / per ridge accumulation chunk.
CHUNK = 2048


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def train_paper(cfg: Config, output_dir: Optional[str] = None, resume: bool = False, stage: str = "all") -> Dict:
    """Run the paper recipe (all stages or one); returns a summary dict.

    Summary keys: ``checkpoint`` (``model_final.pth``; ``finetune.pth`` or "" when the final
    model cannot be assembled yet), ``stage_seconds`` {cache, finetune, svm, bbox} (0 when
    skipped), ``stage_seconds_recorded`` (what each current output took when it was made, in this
    run or an earlier one; rank 0), ``stages_run``, ``output_dir``, ``cache`` and per-stage statistics.
    """
    from ..data.build import build_dataset
    from ..proposals.build import get_proposals

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
        from ..modeling.detector import build_detector

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
        self.cache: Optional[FeatureCache] = None

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
            "windows": c.num_windows,
            "dim": c.dim,
            "gigabytes": round(c.num_windows * c.dim * 2 / 1e9, 3),
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
            pc.finetune_batch,
            pc.finetune_bbox,
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
            tc.seed,
        )
        bbox = _key(
            self.cache.fingerprint,
            pc.bbox_reg_lambda,
            pc.bbox_reg_min_iou,
            pc.svm_feat_norm,
            cfg.model.box_weights,
            tc.seed,
        )
        return {"finetune": ft, "svm": svm, "bbox": bbox}

    def _stage_cache(self, resume: bool, build: bool) -> bool:
        from .feature_cache import expected_fingerprint

        if not build:
            fp = expected_fingerprint(self.model, self.dataset, self.proposals, self.cfg)
            try:
                self.cache = FeatureCache.open(self.cache_dir, fp)
            except CacheError as e:
                raise SppdetError(f"{e}; run the cache stage first (--stage cache or all)") from None
            return False
        self.cache = build_feature_cache(
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

    # -- stage 2: fc fine-tuning -------------------------------------------------------
    def _window_sets(self):
        tc, idx = self.cfg.train, self.cache.index
        fg = np.nonzero(idx["max_iou"] >= tc.fg_iou)[0]
        bg = np.nonzero((idx["max_iou"] >= tc.bg_iou_low) & (idx["max_iou"] < tc.bg_iou_high))[0]
        if bg.size == 0:
            bg = np.nonzero(idx["max_iou"] < tc.bg_iou_high)[0]
        return fg, bg

    def _stage_finetune(self, resume: bool, summary: Dict) -> bool:
        from ..modeling.loss import FastRCNNLoss
        from .train import build_optimizer, global_losses

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
        idx = self.cache.index
        num_fg = min(int(round(pc.finetune_batch * tc.fg_fraction)), pc.finetune_batch)
        log.info(
            "fine-tuning fc layers on %d fg / %d bg cached windows, %d iterations of %d (%d fg)",
            fg.size,
            bg.size,
            pc.finetune_iters,
            pc.finetune_batch,
            num_fg,
        )
        opt_cfg = _with_lr(cfg, pc.finetune_lr)
        optimizer = build_optimizer(head, opt_cfg)
        loss_fn = FastRCNNLoss(box_loss_weight=1.0 if pc.finetune_bbox else 0.0)
        start = 0
        last = self._load_stage(FINETUNE_LAST, key) if resume else None
        if last is not None:
            restore_model(self.model, last, self.out / FINETUNE_LAST)
            optimizer.load_state_dict(last["optimizer"])
            start = int(last["iteration"])
            log.info("resumed fine-tuning at iteration %d", start)
        history: List[Dict] = []
        bar = _bar(pc.finetune_iters, start, "finetune", self.progress)
        head.train()
        rank, world = du.get_rank(), du.get_world_size()
        ddp_head = head
        if world > 1:
            ddp_head = torch.nn.parallel.DistributedDataParallel(
                head, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        for it in range(start, pc.finetune_iters):
            lr = pc.finetune_lr * tc.lr_gamma ** sum(1 for s in pc.finetune_lr_steps if it >= s)
            for g in optimizer.param_groups:
                g["lr"] = lr
            rng = np.random.default_rng(mix_seed(tc.seed, it, 11))
            pick_fg = fg[rng.integers(0, fg.size, num_fg)] if num_fg else fg[:0]
            pick_bg = bg[rng.integers(0, bg.size, pc.finetune_batch - num_fg)]
            windows = np.concatenate([pick_fg, pick_bg])
            labels = torch.zeros(len(windows), dtype=torch.long)
            labels[: len(pick_fg)] = torch.from_numpy(idx["gt_label"][pick_fg].astype(np.int64))
            targets = torch.zeros(len(windows), 4)
            if len(pick_fg):
                targets[: len(pick_fg)] = self.box_coder.encode(
                    torch.from_numpy(idx["boxes"][pick_fg]), torch.from_numpy(idx["gt_box"][pick_fg])
                )
            share = slice(
                rank, None, world
            )  # this rank's windows of the global mini-batch (all of them single-process)
            x = torch.from_numpy(self.cache.gather(windows[share])).to(self.device)
            labels, targets = labels[share], targets[share]
            # dropout masks: same on resume; each rank its own
            torch.manual_seed(mix_seed(tc.seed, it, 13) if rank == 0 else mix_seed(tc.seed, it, 13, rank))
            losses = loss_fn(ddp_head(x), labels.to(self.device), targets.to(self.device))
            objective, logged = losses["loss"], losses
            if world > 1:
                objective, logged, _, _ = global_losses(losses, labels.to(self.device), world)
            if not torch.isfinite(logged["loss"]):
                raise SppdetError(f"fine-tuning diverged at iteration {it}; lower train.paper.finetune_lr")
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            rec = {k: round(float(v.detach()), 5) for k, v in logged.items()}
            rec.update(iter=it + 1, lr=lr)
            history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}")
            done = it + 1
            if tc.log_period and done % tc.log_period == 0:
                recent = history[-tc.log_period :]
                log.info(
                    "finetune %d/%d  loss %.4f  lr %.2g",
                    done,
                    pc.finetune_iters,
                    sum(r["loss"] for r in recent) / len(recent),
                    lr,
                )
            if tc.checkpoint_period and done % tc.checkpoint_period == 0 and done < pc.finetune_iters:
                self._save(FINETUNE_LAST, done, {"key": key}, optimizer)
        if bar is not None:
            bar.close()
        head.eval()
        self._save(FINETUNE, pc.finetune_iters, {"key": key, "seconds": round(time.time() - t0, 2)})
        if du.is_main_process():
            (self.out / FINETUNE_LAST).unlink(missing_ok=True)
        if history:
            tail = history[-min(len(history), 50) :]
            summary["finetune"] = {
                "first_loss": history[0]["loss"],
                "final_loss": round(sum(r["loss"] for r in tail) / len(tail), 5),
            }
        return True

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
        restore_model(self.model, state, self.out / FINETUNE)
        self.model.eval()

    # -- stage 3: SVMs -----------------------------------------------------------------
    @torch.no_grad()
    def _fc7(self, pool5: np.ndarray) -> np.ndarray:
        head = self.model.head.eval()
        out = []
        for i in range(0, len(pool5), CHUNK):
            x = torch.from_numpy(np.asarray(pool5[i : i + CHUNK], dtype=np.float32)).to(self.device)
            out.append(head.features(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, head.out_dim), np.float32)

    def _sample_windows(self, n: int, seed: int) -> np.ndarray:
        total = self.cache.num_windows
        rng = np.random.default_rng(mix_seed(self.cfg.train.seed, seed))
        return np.sort(rng.choice(total, min(n, total), replace=False))

    def _stage_svm(self, summary: Dict, allow_redo_finetune: bool) -> bool:
        from ..svm import SVMParams, feature_scale, train_svms

        keys = self._keys()
        if self._load_stage(SVM, keys["svm"]) is not None:
            log.info("stage svm: %s is up to date (delete it to redo)", self.out / SVM)
            return False
        self._load_finetuned(keys["finetune"], allow_redo_finetune, summary)
        t0 = time.time()
        pc, cache, idx = self.cfg.train.paper, self.cache, self.cache.index
        scale = feature_scale(self._fc7(cache.gather(self._sample_windows(SCALE_SAMPLE, 21))), pc.svm_feat_norm)
        gt_rows = np.nonzero(idx["is_gt"])[0]
        pos_x = self._fc7(cache.gather(gt_rows)) * scale
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

    def _mining_images(self, epoch: int, scale: float):
        from tqdm import tqdm

        from ..svm import MiningImage

        thresh = self.cfg.train.paper.svm_neg_iou
        order = np.random.default_rng(mix_seed(self.cfg.train.seed, epoch, 17)).permutation(len(self.cache))
        for s in tqdm(
            order, desc=f"svm mining (epoch {epoch + 1})", unit="view", disable=not self.progress, mininterval=1.0
        ):
            w = self.cache.windows(int(s))
            x = self._fc7(self.cache.features(int(s))) * scale
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
        from ..svm import RidgeAccumulator, feature_scale

        key = self._keys()["bbox"]
        if self._load_stage(BBOX, key) is not None:
            log.info("stage bbox: %s is up to date (delete it to redo)", self.out / BBOX)
            return False
        t0 = time.time()
        pc, cache, idx = self.cfg.train.paper, self.cache, self.cache.index
        scale = feature_scale(cache.gather(self._sample_windows(SCALE_SAMPLE, 23)), pc.svm_feat_norm)
        sel = np.nonzero((idx["max_iou"] >= pc.bbox_reg_min_iou) & (idx["gt_label"] > 0))[0]
        d, k_all = cache.dim, self.num_classes
        weight = np.zeros((d, 4 * k_all), np.float32)
        bias = np.zeros(4 * k_all, np.float32)
        counts = {}
        from tqdm import tqdm

        for k in range(1, k_all + 1):
            rows = sel[idx["gt_label"][sel] == k]
            counts[self.class_names[k - 1]] = int(rows.size)
            if rows.size == 0:
                continue
            acc = RidgeAccumulator(d, 4)
            targets = self.box_coder.encode(torch.from_numpy(idx["boxes"][rows]), torch.from_numpy(idx["gt_box"][rows]))
            for i in tqdm(
                range(0, rows.size, CHUNK),
                desc=f"bbox {self.class_names[k - 1]}",
                unit="chunk",
                disable=not self.progress,
                mininterval=1.0,
            ):
                x = torch.from_numpy(cache.gather(rows[i : i + CHUNK]) * scale)
                acc.add(x, targets[i : i + CHUNK])
            w, b = acc.solve(pc.bbox_reg_lambda)
            weight[:, 4 * (k - 1) : 4 * k] = w.float().numpy()
            bias[4 * (k - 1) : 4 * k] = b.float().numpy()
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
        from ..svm import scorer_state

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
    from ..config import config_from_dict

    data = config_to_dict(cfg)
    data["train"]["base_lr"] = lr
    return config_from_dict(data)


def _bar(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True, mininterval=1.0)
