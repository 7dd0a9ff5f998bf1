"""The paper recipe's linear models: per-class SVMs, ridge box regressors, and the test-time scorer.

Shape shorthand: K object classes, F fc7 width, D region-SPP (pool5) length, N windows.

SVMs (R-CNN / SPP-net, as in fast-rcnn ``tools/train_svms.py``)
    One linear SVM per class on fc7 features scaled by one number so that their mean L2 norm
    is ``svm_feat_norm`` (20). Positives are the ground-truth boxes of the class; negatives
    are windows whose IoU with every box of the class is below ``svm_neg_iou``. Negatives
    are mined: the images are visited in turn and, per class, windows scoring above
    ``hard_thresh`` with the current model join a negative cache. The model starts at
    ``w = 0, b = 0``, so every negative of the first image is hard. Once more than
    ``retrain_limit`` new negatives have joined, the SVM is retrained (liblinear
    L2-regularised hinge-loss dual, ``LinearSVC``) and cached negatives scoring below
    ``evict_thresh`` (easy ones) are evicted, which keeps the cache bounded. A final retrain
    ends the mining. The bias is learnt as an extra feature of constant value
    ``intercept_scaling`` (liblinear's ``B``; the reference uses 10), so it is only weakly
    regularised.

Box regressors (R-CNN appendix C)
    Per class, ridge regression from scaled pool5 features to the :class:`BoxCoder`
    targets of windows overlapping a ground-truth box of that class by at least
    ``bbox_reg_min_iou``. Features and targets are centred before solving, so the bias is not
    regularised (R-CNN regularised a constant-1 column instead; the difference is immaterial
    with lambda = 1000 and |x| = 20). Solved in closed form in float64:
    ``W = (Xc^T Xc + lambda I)^-1 Xc^T Yc``, ``b = mean(Y) - mean(X) W``.

At test time :class:`PaperScorer` turns pooled windows into scores and box deltas with
these models, for :class:`sppdet.engine.infer.Predictor`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.linalg import blas

from .config import PaperConfig

log = logging.getLogger("sppdet.svm")

#: Bias assigned to a class that had no positives: its sigmoid score is ~0 everywhere.
NO_POSITIVES_BIAS = -20.0


def feature_scale(features: np.ndarray, target_norm: float) -> float:
    """The factor that makes the mean L2 norm of ``features (N, F)`` equal ``target_norm``."""
    norms = np.linalg.norm(np.asarray(features, dtype=np.float64), axis=1)
    mean = float(norms.mean()) if norms.size else 0.0
    if not np.isfinite(mean) or mean <= 0:
        return 1.0
    return float(target_norm) / mean


# ---------------------------------------------------------------------------------------
# SVMs with hard negative mining


_PAPER = PaperConfig()


@dataclass
class SVMParams:
    """Hyper-parameters of one class's SVM and its negative cache (see module docstring)."""

    # defaults written once, in config.py's PaperConfig
    C: float = _PAPER.svm_c
    pos_weight: float = _PAPER.svm_pos_weight
    intercept_scaling: float = _PAPER.svm_intercept_scaling
    hard_thresh: float = _PAPER.svm_hard_thresh
    evict_thresh: float = _PAPER.svm_evict_thresh
    retrain_limit: int = _PAPER.svm_retrain_limit
    seed: int = 0
    max_iter: int = 2000


class ClassSVM:
    """One class's linear SVM, its positives and its cache of hard negatives.

    Features are given already scaled. ``keys`` identify windows (any int64 unique per
    window) so a negative is never cached twice, even over several mining epochs.
    """

    def __init__(self, positives: np.ndarray, params: SVMParams) -> None:
        self.params = params
        self.pos = np.ascontiguousarray(positives, dtype=np.float32)
        dim = self.pos.shape[1]
        self._neg = [np.zeros((0, dim), dtype=np.float32)]  # chunks, joined when read
        self._neg_keys = [np.zeros((0,), dtype=np.int64)]
        self._seen: set = set()
        self.w = np.zeros(dim, dtype=np.float32)
        self.b = 0.0
        self.new_since_train = 0
        self.num_retrains = 0
        self.stats: Dict[str, float] = {}

    @property
    def neg(self) -> np.ndarray:
        """The cached negatives ``(M, F)``."""
        if len(self._neg) > 1:
            self._neg = [np.concatenate(self._neg)]
        return self._neg[0]

    @property
    def neg_keys(self) -> np.ndarray:
        if len(self._neg_keys) > 1:
            self._neg_keys = [np.concatenate(self._neg_keys)]
        return self._neg_keys[0]

    def score(self, x: np.ndarray) -> np.ndarray:
        """Margins ``x @ w + b`` for scaled features ``x (N, F)``."""
        return np.asarray(x, dtype=np.float32) @ self.w + np.float32(self.b)

    def add_negatives(self, x: np.ndarray, keys: np.ndarray) -> bool:
        """Offer candidate negatives; those scoring above ``hard_thresh`` and not cached yet
        join the cache. Retrains (and evicts) once more than ``retrain_limit`` have joined
        since the last training; returns True when it retrained."""
        if len(x) == 0:
            return False
        keys = np.asarray(keys, dtype=np.int64)
        hard = self.score(x) > self.params.hard_thresh
        new = np.fromiter((k not in self._seen for k in keys.tolist()), dtype=bool, count=len(keys))
        take = np.nonzero(hard & new)[0]
        if take.size == 0:
            return False
        self._neg.append(np.asarray(x, dtype=np.float32)[take])
        self._neg_keys.append(keys[take])
        self._seen.update(keys[take].tolist())
        self.new_since_train += int(take.size)
        if self.new_since_train > self.params.retrain_limit:
            self.train()
            return True
        return False

    def train(self) -> None:
        """Fit the SVM on the positives and cached negatives, then evict easy negatives."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC

        p = self.params
        self.new_since_train = 0
        num_pos, num_neg = len(self.pos), len(self.neg)
        if num_pos == 0 or num_neg == 0:
            # nothing to separate: no positive -> never fire; no negative -> always fire
            self.w[:] = 0
            self.b = NO_POSITIVES_BIAS if num_pos == 0 else 1.0
            return
        x = np.concatenate([self.pos, self.neg])
        y = np.concatenate([np.ones(num_pos, np.int64), -np.ones(num_neg, np.int64)])
        svm = LinearSVC(
            C=p.C,
            loss="hinge",
            penalty="l2",
            dual=True,
            class_weight={1: p.pos_weight, -1: 1.0},
            intercept_scaling=p.intercept_scaling,
            fit_intercept=True,
            random_state=p.seed,
            max_iter=p.max_iter,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(x, y)
        self.w = svm.coef_.ravel().astype(np.float32)
        self.b = float(svm.intercept_[0])
        self.num_retrains += 1
        pos_scores, neg_scores = self.score(self.pos), self.score(self.neg)
        self.stats = {
            "pos_loss": float(p.C * p.pos_weight * np.maximum(0, 1 - pos_scores).sum()),
            "neg_loss": float(p.C * np.maximum(0, 1 + neg_scores).sum()),
            "reg_loss": float(0.5 * (self.w.astype(np.float64) ** 2).sum()),
            "num_pos": num_pos,
            "num_neg": num_neg,
        }
        keep = neg_scores >= p.evict_thresh
        self.stats["evicted"] = int((~keep).sum())
        self._neg, self._neg_keys = [self.neg[keep]], [self.neg_keys[keep]]
        # an evicted negative may come back in a later epoch if it becomes hard again
        self._seen = set(self.neg_keys.tolist())
        log.debug("svm retrain %d: %s", self.num_retrains, self.stats)


@dataclass
class MiningImage:
    """One image's windows for mining: scaled features ``x (N, F)``, ``neg_mask (N, K)``
    (True where the window may be a negative of class k) and unique ``keys (N,)``."""

    x: np.ndarray
    neg_mask: np.ndarray
    keys: np.ndarray


def train_svms(
    positives: Sequence[np.ndarray],
    images: Iterable[MiningImage],
    params: SVMParams,
    epochs: int = 1,
    image_stream=None,
) -> List[ClassSVM]:
    """Per-class SVMs with hard negative mining (see module docstring).

    Args:
        positives: per class ``k = 1..K`` (list index ``k-1``), scaled features ``(P_k, F)``.
        images: the mining images, visited in order, once per epoch.
        image_stream: optional callable ``epoch -> iterable of MiningImage`` used instead of
            ``images`` (lets the caller reshuffle or recompute features per epoch).
    Returns the trained :class:`ClassSVM` per class (list index ``k-1``).
    """
    svms = [ClassSVM(p, params) for p in positives]
    for epoch in range(max(1, epochs)):
        stream = image_stream(epoch) if image_stream is not None else images
        for im in stream:
            for k, svm in enumerate(svms):
                if len(svm.pos) == 0:
                    continue
                cand = np.nonzero(im.neg_mask[:, k])[0]
                svm.add_negatives(im.x[cand], im.keys[cand])
    for svm in svms:
        svm.train()
    return svms


# ---------------------------------------------------------------------------------------
# Ridge box regression


def gram_upper(x: torch.Tensor) -> torch.Tensor:
    """float64 ``(D, D)`` whose upper triangle (diagonal included) is that of ``x^T x`` for
    ``x (N, D)``; the strict lower triangle is unspecified.

    On CPU float32/float64 this is one BLAS ``syrk``: half the multiply-adds of ``x.T @ x``
    (measured 2.0x faster for ``(2048, 4800)`` float32 on 2 cores), which is most of the
    box-regression stage's time."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 2 and len(x):
        a = x.detach().contiguous().numpy().T  # (D, N), Fortran order: no copy
        syrk = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
        return torch.from_numpy(np.asarray(syrk(1.0, a, trans=0, lower=0))).double()
    return (x.T @ x).double()


class RidgeAccumulator:
    """Sufficient statistics of a ridge regression, accumulated chunk by chunk in float64.

    ``add(x (N, D), y (N, T))`` any number of times, then ``solve(lam)`` returns
    ``W (D, T)`` and ``b (T,)`` minimising ``|Xc W - Yc|^2 + lam |W|^2`` on centred data.
    Chunk products are taken in the input dtype (float32 is fine: the sums are float64).
    Rows are buffered until ``gram_rows`` have arrived, then go into ``X^T X`` in one product:
    for D = 4800 each product also costs a float64 pass over the D x D sums, which dominated
    the box-regression stage with 500-row chunks (25 of 36 s).
    """

    def __init__(self, dim: int, targets: int, gram_rows: int = 4096) -> None:
        self.n = 0
        self.gram_rows = max(1, int(gram_rows))
        self._pending: List[torch.Tensor] = []
        self._pending_rows = 0
        self.sxx = torch.zeros(dim, dim, dtype=torch.float64)
        self.sx = torch.zeros(dim, dtype=torch.float64)
        self.sxy = torch.zeros(dim, targets, dtype=torch.float64)
        self.sy = torch.zeros(targets, dtype=torch.float64)
        self.syy = torch.zeros(targets, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) == 0:
            return
        x, y = torch.as_tensor(x), torch.as_tensor(y).to(x.dtype)
        self.n += len(x)
        self._pending.append(x.detach())
        self._pending_rows += len(x)
        if self._pending_rows >= self.gram_rows:
            self._flush()
        self.sx += x.double().sum(0)
        self.sxy += (x.T @ y).double()
        self.sy += y.double().sum(0)
        self.syy += (y.double() ** 2).sum(0)

    def _flush(self) -> None:
        if self._pending:
            x = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
            self._pending, self._pending_rows = [], 0
            self.sxx += gram_upper(x)

    def solve(self, lam: float) -> Tuple[torch.Tensor, torch.Tensor]:
        self._flush()
        dim = self.sxx.shape[0]
        if self.n == 0:
            return torch.zeros(dim, self.sxy.shape[1], dtype=torch.float64), torch.zeros(
                self.sxy.shape[1], dtype=torch.float64
            )
        mx, my = self.sx / self.n, self.sy / self.n
        sxx = torch.triu(self.sxx) + torch.triu(self.sxx, 1).T  # add() sums the upper triangle only
        cxx = sxx - self.n * torch.outer(mx, mx)
        cxy = self.sxy - self.n * torch.outer(mx, my)
        a = cxx + float(lam) * torch.eye(dim, dtype=torch.float64)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            w = torch.cholesky_solve(cxy, chol)
        else:  # lam = 0 on rank-deficient data: least-squares fallback
            w = torch.linalg.lstsq(a, cxy).solution
        b = my - mx @ w
        return w, b


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> Tuple[np.ndarray, np.ndarray]:
    """Ridge regression on in-memory data (see :class:`RidgeAccumulator`); ``W (D, T)``, ``b (T,)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    acc = RidgeAccumulator(x.shape[1], y.shape[1])
    acc.add(torch.from_numpy(x), torch.from_numpy(y))
    w, b = acc.solve(lam)
    return w.numpy(), b.numpy()


# ---------------------------------------------------------------------------------------
# Test-time scoring


class PaperScorer:
    """Scores windows with the paper recipe's SVMs and box regressors.

    ``scorer(model, pooled (R, D), proposals (R, 4))`` returns ``scores (R, K+1)`` and
    ``deltas (R, 4K)`` (or None when no box regressor was trained):

    * ``scores[:, 0] = 0`` (background) and ``scores[:, k] = sigmoid(margin_k)`` where
      ``margin_k = (s * fc7) . w_k + b_k`` is class k's SVM margin on fc7 features
      ``model.head.features(pooled)`` scaled by the stored ``s``. The logistic only maps
      margins into [0, 1] so ``test.score_thresh`` keeps its meaning (margin 0 -> 0.5,
      the SVM's decision boundary; 0.05 keeps margins above about -2.9); it is monotonic,
      so the ranking, NMS and AP are the SVMs'.
    * ``deltas = (t * pooled) @ W + c``: the ridge regressors on pool5 scaled by ``t``,
      in :class:`sppdet.structures.BoxCoder` units (``cfg.model.box_weights``).
    """

    def __init__(
        self,
        svm_weight: torch.Tensor,
        svm_bias: torch.Tensor,
        svm_feat_scale: float,
        bbox_weight: Optional[torch.Tensor] = None,
        bbox_bias: Optional[torch.Tensor] = None,
        bbox_feat_scale: float = 1.0,
        device="cpu",
    ) -> None:
        dev = torch.device(device)
        self.svm_weight = svm_weight.float().to(dev)  # (K, F)
        self.svm_bias = svm_bias.float().to(dev)  # (K,)
        self.svm_feat_scale = float(svm_feat_scale)
        self.bbox_weight = bbox_weight.float().to(dev) if bbox_weight is not None else None  # (D, 4K)
        self.bbox_bias = bbox_bias.float().to(dev) if bbox_bias is not None else None  # (4K,)
        self.bbox_feat_scale = float(bbox_feat_scale)

    @classmethod
    def from_state(cls, state: Dict, cfg=None, device="cpu") -> "PaperScorer":
        """Build from a checkpoint's ``extras["paper"]`` (see :func:`scorer_state`)."""
        from .errors import CheckpointError

        for key in ("svm_weight", "svm_bias", "svm_feat_scale"):
            if key not in state:
                raise CheckpointError(f"checkpoint extras['paper'] is missing '{key}' (SVMs not trained?)")
        has_bbox = state.get("bbox_weight") is not None
        return cls(
            state["svm_weight"],
            state["svm_bias"],
            float(state["svm_feat_scale"]),
            state["bbox_weight"] if has_bbox else None,
            state["bbox_bias"] if has_bbox else None,
            float(state.get("bbox_feat_scale", 1.0)),
            device,
        )

    def margins(self, model, pooled: torch.Tensor) -> torch.Tensor:
        """SVM margins ``(R, K)``."""
        fc7 = model.head.features(pooled).float()
        return (fc7 * self.svm_feat_scale) @ self.svm_weight.T + self.svm_bias

    @torch.no_grad()
    def __call__(self, model, pooled: torch.Tensor, proposals: torch.Tensor):
        m = self.margins(model, pooled)
        scores = torch.cat([m.new_zeros((len(m), 1)), torch.sigmoid(m)], 1)
        deltas = None
        if self.bbox_weight is not None and self.bbox_bias is not None:
            deltas = (pooled.float() * self.bbox_feat_scale) @ self.bbox_weight + self.bbox_bias
        return scores, deltas


def scorer_state(
    svm_weight, svm_bias, svm_feat_scale: float, bbox_weight=None, bbox_bias=None, bbox_feat_scale: float = 1.0
) -> Dict:
    """The ``extras["paper"]`` dict of a final checkpoint: tensors and plain values only."""
    state = {
        "version": 1,
        "score": "sigmoid(svm margin)",
        "svm_weight": torch.as_tensor(np.asarray(svm_weight), dtype=torch.float32),
        "svm_bias": torch.as_tensor(np.asarray(svm_bias), dtype=torch.float32),
        "svm_feat_scale": float(svm_feat_scale),
    }
    if bbox_weight is not None:
        state.update(
            bbox_weight=torch.as_tensor(np.asarray(bbox_weight), dtype=torch.float32),
            bbox_bias=torch.as_tensor(np.asarray(bbox_bias), dtype=torch.float32),
            bbox_feat_scale=float(bbox_feat_scale),
        )
    return state
