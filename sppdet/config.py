"""One typed config object, loaded from YAML, strict, frozen; the only place config values are checked.

``load_config("configs/sample_tiny.yaml", overrides=["train.max_iter=100"])`` returns a
:class:`Config`: nested frozen dataclasses whose fields carry their defaults and a comment. Unknown
keys, wrong types, values outside a ``Literal`` choice or a field's range, and bad overrides raise
:class:`~sppdet.errors.ConfigError` naming the key and the file. Every section checks its values
when constructed (``__post_init__``), so ``dataclasses.replace`` and direct construction are
checked too. A stage that needs other values derives a new config with ``dataclasses.replace``;
nobody assigns to a loaded config. A YAML file may start from another with ``_base_: other.yaml``
(relative path). The config object is passed explicitly to every stage; nothing reads a global config.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import yaml

from .errors import ConfigError, SppdetError
from .fileio import read_text, save_text

#: Choices, written once: the Literal types below and the code that dispatches on them use these.
DataFormat = Literal["voc", "coco"]
ProposalMethod = Literal["file", "ss-fast", "ss-quality", "edgeboxes"]
BackboneName = Literal["tiny", "zf5", "vgg16", "resnet18", "resnet50", "mobilenet_v2"]
Normalization = Literal["imagenet", "minus_one_one", "caffe", "unit"]
SppMode = Literal["max", "avg"]
Recipe = Literal["end2end", "paper"]
Optimizer = Literal["sgd", "adamw"]
LrSchedule = Literal["step", "cosine"]
Metric = Literal["voc07", "voc2010", "coco"]
Scorer = Literal["svm", "softmax"]
Amp = Literal["off", "bf16", "fp16"]


def choices(literal: Any) -> Tuple[Any, ...]:
    """The allowed values of one of the ``Literal`` types above, e.g. ``choices(Metric)``."""
    return typing.get_args(literal)


def _f(
    default: Any,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    nonempty: bool = False,
) -> Any:
    """A field with a value range (``[lo, hi]``, ends open where asked; for a list, every item)."""
    meta = {"range": (lo, hi, lo_open, hi_open), "nonempty": nonempty}
    if isinstance(default, list):
        items: List[Any] = list(default)
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _check_section(obj: Any, section: str) -> None:
    """Check the ``Literal`` choices and ranges of one section; ``section`` is its key prefix."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), section + f.name
        tp = hints[f.name]
        if typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            allowed = ", ".join(str(a) for a in typing.get_args(tp))
            raise ConfigError(f"{key}: unknown value {value!r} (choose from {allowed})")
        if not f.metadata:
            continue
        if f.metadata["nonempty"] and not value:
            raise ConfigError(f"{key}: must not be empty")
        lo, hi, lo_open, hi_open = f.metadata["range"]
        for v in value if isinstance(value, (list, tuple)) else [value]:
            bad = isinstance(v, float) and not math.isfinite(v)
            bad = bad or (lo is not None and (v <= lo if lo_open else v < lo))
            bad = bad or (hi is not None and (v >= hi if hi_open else v > hi))
            if bad:
                raise ConfigError(f"{key}: must be {_range_text(lo, hi, lo_open, hi_open)}, got {value}")


@dataclass(frozen=True)
class DataConfig:
    """``data:``: which dataset, where, which splits and classes."""

    #: "voc" (VOCdevkit layout), "coco" (instances json + image folder).
    format: DataFormat = "voc"
    #: VOC: dataset root holding Annotations/, JPEGImages/, ImageSets/Main/, or any labelImg-style
    #: folder (annotations/ + images/, or XMLs beside the images; see data/README.md).
    root: str = "data/sample/voc"
    #: Split used for training (VOC: ImageSets/Main/<split>.txt; "" = every XML in Annotations).
    train_split: str = "train"
    #: Split used for validation/testing.
    test_split: str = "test"
    #: COCO: annotation json and image folder for training and for testing.
    train_ann: str = ""
    train_images: str = ""
    test_ann: str = ""
    test_images: str = ""
    #: Class names in label order (label 1..K). Empty = discovered from the training
    #: annotations: VOC, the names found, sorted (on PASCAL VOC itself: the standard 20-class
    #: order); COCO, the categories that have training annotations, by id. Logged with their
    #: counts; checkpoints store them, so eval/detect with --weights need no class list.
    classes: List[str] = field(default_factory=list)
    #: VOC folder without split files (a labelImg/CVAT/Roboflow export): this fraction of the
    #: annotated images is held out for validation by a seeded split, written as split files
    #: into <output_dir>/splits/ (never into the data folder) and reused by reruns and eval.
    val_fraction: float = 0.1
    #: Annotations whose image file does not exist: false = refuse (count + first names),
    #: true = leave them out with one warning giving the count.
    skip_missing: bool = False
    #: Drop objects flagged difficult from the training targets (evaluation always ignores them).
    exclude_difficult: bool = True

    def __post_init__(self) -> None:
        _check_section(self, "data.")


@dataclass(frozen=True)
class ProposalConfig:
    """``proposals:``: read from files or computed (and cached) per image."""

    #: "file" (read `train_file`/`test_file`), "ss-fast", "ss-quality", "edgeboxes".
    method: ProposalMethod = "edgeboxes"
    #: Proposal stores (native .npz or any supported foreign format) for train / test images.
    train_file: str = ""
    test_file: str = ""
    #: Where computed proposals are cached (native .npz). Empty: next to the training output.
    cache_dir: str = ""
    #: Keep at most this many proposals per image (top by score when scores exist, else order; 0 = all).
    max_per_image: int = _f(2000, 0)
    #: Drop proposals narrower or shorter than this (pixels).
    min_size: float = _f(2.0, 0)
    #: Resize the image so its longer side is at most this before computing proposals (0 = off).
    max_side: int = _f(500, 0)
    #: Structured-edge model for EdgeBoxes (opencv ximgproc .yml.gz); empty = gradient edges.
    edge_model: str = ""
    #: Allow loading pickled proposal files (.pkl). Pickle can run code: only for trusted files.
    allow_pickle: bool = False
    #: Worker processes for computing proposals (0 = main process).
    workers: int = _f(2, 0)

    def __post_init__(self) -> None:
        _check_section(self, "proposals.")


@dataclass(frozen=True)
class ModelConfig:
    """``model:``: backbone, its weights and freezing, SPP pyramid, fc head, box coder."""

    #: "tiny", "zf5", "vgg16", "resnet18", "resnet50", "mobilenet_v2".
    backbone: BackboneName = "tiny"
    #: Width multiplier of the "tiny" backbone's channels.
    tiny_width: int = _f(32, 1)
    #: Total stride of the "tiny" backbone: 16 (SPP-net's) or 8 (finer cells for small objects).
    tiny_stride: Literal[8, 16] = 16
    #: Extra 3x3 convs of the "tiny" backbone at stride 4 (after stage2): more layers where
    #: edges and corners are still a few pixels apart, at a fraction of the cost of deeper stages.
    tiny_stem_convs: int = _f(0, 0)
    #: torchvision weights enum name (e.g. "IMAGENET1K_V1"), a local state_dict path, or "" (random).
    weights: str = ""
    #: Input normalisation: "imagenet" (torchvision mean/std), "minus_one_one" (x/127.5 - 1),
    #: "caffe" (BGR mean subtraction, 0..255), "unit" (x/255).
    normalization: Normalization = "imagenet"
    #: Freeze backbone stages up to this index (0 = train all, -1 = freeze the whole backbone;
    #: the upper bound, the backbone's number of stages, is checked when it is built).
    freeze_at: int = _f(0, -1)
    #: Keep batch-norm layers in eval mode with frozen statistics.
    frozen_bn: bool = True
    #: MobileNetV2 tap: 16 or 32 (the other backbones: 16).
    feature_stride: Literal[16, 32] = 16
    #: Optional 1x1 conv reducing the feature channels before SPP (0 = off).
    reduce_channels: int = _f(0, 0)
    #: SPP pyramid levels (n x n bins each).
    spp_levels: List[int] = _f([6, 3, 2, 1], 1, nonempty=True)
    #: "max" or "avg".
    spp_mode: SppMode = "max"
    #: fc6/fc7 widths.
    fc_dims: List[int] = _f([4096, 4096], 1)
    dropout: float = _f(0.5, 0.0, 1.0, hi_open=True)
    #: Box-regression target weights (wx, wy, ww, wh).
    box_weights: List[float] = _f([10.0, 10.0, 5.0, 5.0], 0.0, lo_open=True)

    def __post_init__(self) -> None:
        _check_section(self, "model.")
        if self.backbone != "mobilenet_v2" and self.feature_stride != 16:
            raise ConfigError(
                f"model.feature_stride: only mobilenet_v2 has a stride-32 tap; {self.backbone} has stride 16"
            )
        if len(self.box_weights) != 4:
            raise ConfigError(f"model.box_weights: expected 4 numbers (wx, wy, ww, wh), got {self.box_weights}")


@dataclass(frozen=True)
class InputConfig:
    """``input:``: image scales for training and testing."""

    #: Scales = shorter image side in pixels. Paper: [688] (1-scale) or [480,576,688,864,1200].
    train_scales: List[int] = _f([688], 1, nonempty=True)
    test_scales: List[int] = _f([688], 1, nonempty=True)
    #: Cap on the longer side after scaling.
    max_size: int = _f(2000, 1)
    #: Multi-scale: each window uses the scale where its scaled area is closest to target_size^2.
    target_size: int = _f(224, 1)
    #: Images whose pixel count exceeds this are refused with a clear error (guards memory).
    max_image_pixels: int = _f(100_000_000, 1)

    def __post_init__(self) -> None:
        _check_section(self, "input.")


@dataclass(frozen=True)
class PaperConfig:
    """Options of the paper's multi-stage recipe (train.recipe: paper).

    The ``svm_*`` defaults are the only copy: :class:`sppdet.svm.SVMParams` reads them from here."""

    #: Feature cache folder (empty: <output>/feature_cache).
    cache_dir: str = ""
    #: Also cache horizontally flipped images.
    flip: bool = False
    #: fc fine-tuning on cached features.
    finetune_iters: int = _f(2000, 0)
    finetune_lr: float = _f(1e-4, 0.0, lo_open=True)
    finetune_lr_steps: List[int] = _f([1500], 0)
    #: Linear warm-up of the fine-tuning lr from ``train.warmup_factor`` over this many iterations
    #: (0 = none): fc layers that start from random init take the first steps at full lr badly.
    finetune_warmup_iters: int = _f(0, 0)
    #: "step" (x ``train.lr_gamma`` at each of ``finetune_lr_steps``) or "cosine" (to 0 at
    #: ``finetune_iters``; the steps unused).
    finetune_lr_schedule: LrSchedule = "step"
    #: Fine-tune fc6 on pool5 standardized per dimension (mean and std of a sample of cached
    #: windows), then fold the affine map into fc6's weights, so the saved model takes raw pool5.
    #: sppdet's fc layers start from random init (the paper's came pretrained on ImageNet); raw
    #: pool5 of a frozen backbone is far from centred (MobileNetV2: mean 2, std 3.4), and fc6 then
    #: learns very sparse ReLUs (~3% active), which made BCCD val mAP swing by 6 points between
    #: seeds. false: the paper's plain fine-tuning.
    finetune_standardize: bool = True
    finetune_batch: int = _f(128, 1)
    #: Image views each fine-tuning mini-batch draws its ``finetune_batch`` windows from (the
    #: foreground fraction is kept over the union of their windows); 0 = every cached view (windows
    #: across the whole cache). Fewer views load fewer cached maps per iteration.
    finetune_images: int = _f(0, 0)
    #: Also train the head's box regressor (bbox_pred) while fine-tuning (Fast R-CNN's multi-task
    #: loss; not in the SPP-net paper). Only the softmax scorer uses it; the SVM scorer uses the
    #: ridge regressors trained on pool5.
    finetune_bbox: bool = True
    #: SVMs: LinearSVC C, positive class weight, negative IoU threshold, target mean feature norm.
    svm_c: float = _f(0.001, 0.0, lo_open=True)
    svm_pos_weight: float = _f(2.0, 0.0, lo_open=True)
    svm_neg_iou: float = _f(0.3, 0.0, 1.0)
    svm_feat_norm: float = _f(20.0, 0.0, lo_open=True)
    svm_hard_thresh: float = -1.0001
    svm_evict_thresh: float = -1.2
    svm_retrain_limit: int = _f(2000, 1)
    svm_epochs: int = _f(1, 1)
    #: Also mine hard negatives on the mirrored views (R-CNN's SVMs use the unmirrored images only;
    #: the positives always include both views' ground truth).
    svm_mine_flipped: bool = True
    #: liblinear's B: the bias is learnt as a weight on a constant feature of this value
    #: (R-CNN / fast-rcnn train_svms.py use 10).
    svm_intercept_scaling: float = _f(10.0, 0.0, lo_open=True)
    #: Box-regression ridge lambda and minimum overlap.
    bbox_reg_lambda: float = _f(1000.0, 0.0)
    bbox_reg_min_iou: float = _f(0.6, 0.0, 1.0)
    #: Score windows at test time with "svm" or "softmax".
    scorer: Scorer = "svm"

    def __post_init__(self) -> None:
        _check_section(self, "train.paper.")


@dataclass(frozen=True)
class TrainConfig:
    """``train:``: recipe, schedule, window sampling, augmentation; ``paper`` for that recipe."""

    #: "end2end" (Fast R-CNN style) or "paper" (SPP-net multi-stage on cached features).
    recipe: Recipe = "end2end"
    max_iter: int = _f(1000, 0)
    ims_per_batch: int = _f(2, 1)
    rois_per_image: int = _f(64, 1)
    fg_fraction: float = _f(0.25, 0.0, 1.0)
    fg_iou: float = _f(0.5, 0.0, 1.0)
    bg_iou_low: float = _f(0.1, 0.0, 1.0)
    bg_iou_high: float = _f(0.5, 0.0, 1.0)
    flip: bool = True
    #: Hue augmentation: with probability ``hue_jitter_prob`` a training image's hue is turned by
    #: a uniform random angle in [-hue_jitter, hue_jitter] degrees (0 = off; 180 = any hue).
    hue_jitter: float = _f(0.0, 0.0, 180.0)
    hue_jitter_prob: float = _f(0.5, 0.0, 1.0)
    #: "sgd" (momentum; the papers' choice) or "adamw" (decoupled weight decay; use a base_lr ~1e-3).
    optimizer: Optimizer = "sgd"
    base_lr: float = _f(0.01, 0.0, lo_open=True)
    momentum: float = _f(0.9, 0.0, 1.0)
    weight_decay: float = _f(0.0005, 0.0)
    warmup_iters: int = _f(100, 0)
    warmup_factor: float = _f(0.001, 0.0, 1.0)
    #: "step" (x lr_gamma at each of lr_steps) or "cosine" (to 0 at max_iter; lr_steps unused).
    lr_schedule: LrSchedule = "step"
    lr_steps: List[int] = _f([700], 0)
    lr_gamma: float = _f(0.1, 0.0, lo_open=True)
    checkpoint_period: int = _f(500, 0)
    eval_period: int = _f(0, 0)
    log_period: int = _f(20, 0)
    seed: int = _f(0, 0)
    #: Data-loading worker processes.
    workers: int = _f(2, 0)
    #: Stop with an error when the loss is NaN/inf (the last good checkpoint is kept).
    stop_on_nan: bool = True
    #: Mixed-precision training on CUDA: "off", "bf16" (autocast) or "fp16" (autocast + GradScaler).
    #: Ignored with a warning on CPU. Applies to both recipes (the paper recipe's fc fine-tuning).
    amp: Amp = "off"
    paper: PaperConfig = field(default_factory=PaperConfig)

    def __post_init__(self) -> None:
        _check_section(self, "train.")
        if self.bg_iou_low > self.bg_iou_high:
            raise ConfigError(f"train.bg_iou_low: {self.bg_iou_low} is above train.bg_iou_high ({self.bg_iou_high})")


@dataclass(frozen=True)
class TestConfig:
    """``test:``: detection thresholds, test-time flip, SVD compression, the metric."""

    score_thresh: float = _f(0.05, 0.0, 1.0)
    nms_thresh: float = _f(0.3, 0.0, 1.0)
    max_detections: int = _f(100, 1)
    #: Evaluation metric for validation: "voc07", "voc2010" or "coco".
    metric: Metric = "voc07"
    #: Test-time augmentation: also score the mirrored image and average the class scores and
    #: (un-mirrored) box deltas of each window; about 2x the detection time.
    flip: bool = False
    #: Truncated SVD rank for fc6/fc7 at inference (0 = off), Fast R-CNN section 3.1.
    svd_rank_fc6: int = _f(0, 0)
    svd_rank_fc7: int = _f(0, 0)
    #: Mixed precision at inference on CUDA: "off", "bf16" or "fp16" (autocast of the conv and
    #: head; scores, boxes and NMS stay float32). Ignored with a warning on CPU.
    amp: Amp = "off"
    #: fc compression at inference, e.g. "svd:0.25", "int8", "svd:0.25+int8" ("" = off); see
    #: sppdet.modeling.compress (``tools/benchmark.py compress`` picks one on a trained model).
    fc_compression: str = ""

    def __post_init__(self) -> None:
        _check_section(self, "test.")


@dataclass(frozen=True)
class Config:
    """The whole config: one section per stage (see the module docstring)."""

    #: A name for logs and outputs.
    name: str = "sppdet"
    #: "auto" (cuda when available), "cpu", "cuda", "cuda:N".
    device: str = "auto"
    #: Where tools write checkpoints, logs and reports.
    output_dir: str = "output/default"
    data: DataConfig = field(default_factory=DataConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: unknown device {self.device!r} (auto, cpu, cuda, cuda:N or mps)")


# ---------------------------------------------------------------------------------------
# Strict conversion from plain dicts


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, source, prefix=key + ".")
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if origin in (list, List, Sequence, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        # bool is an int: true must not pass for 1
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            names = ", ".join(str(a) for a in allowed)
            raise ConfigError(f"{source}: '{key}' must be one of {names}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has unsupported type {_type_name(tp)}")


def _from_dict(cls: Any, data: Dict[str, Any], source: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in data if k not in names), key=str)  # YAML keys may be numbers, null...
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), names, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: unknown key {prefix + str(k)!r}{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k, source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a range or cross-field check of __post_init__: name the file
        raise ConfigError(f"{source}: {e}") from None


def config_from_dict(data: Dict[str, Any], source: str = "<dict>") -> Config:
    """Build a :class:`Config` from a nested dict; unknown keys/wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return _from_dict(Config, data, source)


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict of a config (YAML/JSON/checkpoint friendly)."""
    return dataclasses.asdict(cfg)


def _deep_update(base: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with every failure as one ConfigError line naming ``where``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{where}: invalid YAML{line}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except ValueError as e:  # a value YAML resolves but Python refuses, e.g. the date 2001-13-45
        raise ConfigError(f"{where}: invalid YAML value ({str(e).splitlines()[0][:120]})") from None


def _read_yaml(path: Path, seen: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        text = read_text(path, "config file")
    except SppdetError as e:
        raise ConfigError(str(e)) from None
    data = _parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_base_", None)
    if base:
        base_data = _read_yaml((path.parent / base), seen + (path.resolve(),))
        data = _deep_update(base_data, data)
    return data


def parse_override(text: str) -> Tuple[List[str], Any]:
    """``"train.base_lr=0.01"`` -> (["train", "base_lr"], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    value = _parse_yaml(raw, f"override {text!r}") if raw.strip() else ""
    return key.split("."), value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a config dict (new dict returned)."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def dataclass_from_dict(cls: Any, data: Optional[Dict[str, Any]], source: str = "<dict>") -> Any:
    """Build any config dataclass ``cls`` from a nested dict, as strictly as :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return _from_dict(cls, data, source)


def load_dataclass(cls: Any, path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Any:
    """Load a YAML file into the config dataclass ``cls`` (``_base_``, overrides, strict keys)."""
    data: Dict[str, Any] = {}
    source = "<defaults>"
    if path:
        path = Path(path)
        source = str(path)
        data = _read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + overrides"
    return dataclass_from_dict(cls, data, source)


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    return load_dataclass(Config, path, overrides)


def dump_config(cfg: Config) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the config used next to an output (atomically)."""
    save_text(dump_config(cfg), path)
