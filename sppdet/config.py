"""One typed config object, loaded from YAML, strict.

``load_config("configs/sample_tiny.yaml", overrides=["train.max_iter=100"])`` returns a
:class:`Config`: nested dataclasses whose fields carry their defaults and a comment. Unknown
keys, wrong types and bad overrides raise :class:`~sppdet.errors.ConfigError` naming the key
and the file. A YAML file may start from another with ``_base_: other.yaml`` (relative path).
The config object is passed explicitly to every stage; nothing reads a global config.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from .errors import ConfigError
from .fileio import save_text


@dataclass
class DataConfig:
    #: "voc" (VOCdevkit layout), "coco" (instances json + image folder).
    format: str = "voc"
    #: VOC: dataset root holding Annotations/, JPEGImages/, ImageSets/Main/.
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
    #: Class names in label order (label 1..K). Empty = the 20 PASCAL VOC classes (VOC) or the
    #: json's categories (COCO).
    classes: List[str] = field(default_factory=list)
    #: Drop objects flagged difficult from the training targets (evaluation always ignores them).
    exclude_difficult: bool = True


@dataclass
class ProposalConfig:
    #: "file" (read `train_file`/`test_file`), "ss-fast", "ss-quality", "edgeboxes".
    method: str = "edgeboxes"
    #: Proposal stores (native .npz or any supported foreign format) for train / test images.
    train_file: str = ""
    test_file: str = ""
    #: Where computed proposals are cached (native .npz). Empty: next to the training output.
    cache_dir: str = ""
    #: Keep at most this many proposals per image (top by score when scores exist, else order).
    max_per_image: int = 2000
    #: Drop proposals narrower or shorter than this (pixels).
    min_size: float = 2.0
    #: Resize the image so its longer side is at most this before computing proposals (0 = off).
    max_side: int = 500
    #: Structured-edge model for EdgeBoxes (opencv ximgproc .yml.gz); empty = gradient edges.
    edge_model: str = ""
    #: Allow loading pickled proposal files (.pkl). Pickle can run code: only for trusted files.
    allow_pickle: bool = False
    #: Worker processes for computing proposals (0 = main process).
    workers: int = 2


@dataclass
class ModelConfig:
    #: "tiny", "zf5", "vgg16", "resnet18", "resnet50", "mobilenet_v2".
    backbone: str = "tiny"
    #: Width multiplier of the "tiny" backbone's channels.
    tiny_width: int = 32
    #: Total stride of the "tiny" backbone: 16 (SPP-net's) or 8 (finer cells for small objects).
    tiny_stride: int = 16
    #: Extra 3x3 convs of the "tiny" backbone at stride 4 (after stage2): more layers where
    #: edges and corners are still a few pixels apart, at a fraction of the cost of deeper stages.
    tiny_stem_convs: int = 0
    #: torchvision weights enum name (e.g. "IMAGENET1K_V1"), a local state_dict path, or "" (random).
    weights: str = ""
    #: Input normalisation: "imagenet" (torchvision mean/std), "minus_one_one" (x/127.5 - 1),
    #: "caffe" (BGR mean subtraction, 0..255), "unit" (x/255).
    normalization: str = "imagenet"
    #: Freeze backbone stages up to this index (0 = train all, -1 = freeze the whole backbone).
    freeze_at: int = 0
    #: Keep batch-norm layers in eval mode with frozen statistics.
    frozen_bn: bool = True
    #: MobileNetV2 tap: 16 or 32.
    feature_stride: int = 16
    #: Optional 1x1 conv reducing the feature channels before SPP (0 = off).
    reduce_channels: int = 0
    #: SPP pyramid levels (n x n bins each).
    spp_levels: List[int] = field(default_factory=lambda: [6, 3, 2, 1])
    #: "max" or "avg".
    spp_mode: str = "max"
    #: fc6/fc7 widths.
    fc_dims: List[int] = field(default_factory=lambda: [4096, 4096])
    dropout: float = 0.5
    #: Box-regression target weights (wx, wy, ww, wh).
    box_weights: List[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])


@dataclass
class InputConfig:
    #: Scales = shorter image side in pixels. Paper: [688] (1-scale) or [480,576,688,864,1200].
    train_scales: List[int] = field(default_factory=lambda: [688])
    test_scales: List[int] = field(default_factory=lambda: [688])
    #: Cap on the longer side after scaling.
    max_size: int = 2000
    #: Multi-scale: each window uses the scale where its scaled area is closest to target_size^2.
    target_size: int = 224
    #: Images whose pixel count exceeds this are refused with a clear error (guards memory).
    max_image_pixels: int = 100_000_000


@dataclass
class PaperConfig:
    """Options of the paper's multi-stage recipe (train.recipe: paper)."""

    #: Feature cache folder (empty: <output>/feature_cache).
    cache_dir: str = ""
    #: Also cache horizontally flipped images.
    flip: bool = False
    #: fc fine-tuning on cached features.
    finetune_iters: int = 2000
    finetune_lr: float = 1e-4
    finetune_lr_steps: List[int] = field(default_factory=lambda: [1500])
    finetune_batch: int = 128
    #: Also train the head's box regressor (bbox_pred) while fine-tuning (Fast R-CNN's multi-task
    #: loss; not in the SPP-net paper). Only the softmax scorer uses it; the SVM scorer uses the
    #: ridge regressors trained on pool5.
    finetune_bbox: bool = True
    #: SVMs: LinearSVC C, positive class weight, negative IoU threshold, target mean feature norm.
    svm_c: float = 0.001
    svm_pos_weight: float = 2.0
    svm_neg_iou: float = 0.3
    svm_feat_norm: float = 20.0
    svm_hard_thresh: float = -1.0001
    svm_evict_thresh: float = -1.2
    svm_retrain_limit: int = 2000
    svm_epochs: int = 1
    #: liblinear's B: the bias is learnt as a weight on a constant feature of this value
    #: (R-CNN / fast-rcnn train_svms.py use 10).
    svm_intercept_scaling: float = 10.0
    #: Box-regression ridge lambda and minimum overlap.
    bbox_reg_lambda: float = 1000.0
    bbox_reg_min_iou: float = 0.6
    #: Score windows at test time with "svm" or "softmax".
    scorer: str = "svm"


@dataclass
class TrainConfig:
    #: "end2end" (Fast R-CNN style) or "paper" (SPP-net multi-stage on cached features).
    recipe: str = "end2end"
    max_iter: int = 1000
    ims_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou_low: float = 0.1
    bg_iou_high: float = 0.5
    flip: bool = True
    #: Hue augmentation: with probability ``hue_jitter_prob`` a training image's hue is turned by
    #: a uniform random angle in [-hue_jitter, hue_jitter] degrees (0 = off; 180 = any hue).
    hue_jitter: float = 0.0
    hue_jitter_prob: float = 0.5
    #: "sgd" (momentum; the papers' choice) or "adamw" (decoupled weight decay; use a base_lr ~1e-3).
    optimizer: str = "sgd"
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    #: "step" (x lr_gamma at each of lr_steps) or "cosine" (to 0 at max_iter; lr_steps unused).
    lr_schedule: str = "step"
    lr_steps: List[int] = field(default_factory=lambda: [700])
    lr_gamma: float = 0.1
    checkpoint_period: int = 500
    eval_period: int = 0
    log_period: int = 20
    seed: int = 0
    #: Data-loading worker processes.
    workers: int = 2
    #: Stop with an error when the loss is NaN/inf (the last good checkpoint is kept).
    stop_on_nan: bool = True
    paper: PaperConfig = field(default_factory=PaperConfig)


@dataclass
class TestConfig:
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    max_detections: int = 100
    #: Evaluation metric for validation: "voc07", "voc2010" or "coco".
    metric: str = "voc07"
    #: Test-time augmentation: also score the mirrored image and average the class scores and
    #: (un-mirrored) box deltas of each window; about 2x the detection time.
    flip: bool = False
    #: Truncated SVD rank for fc6/fc7 at inference (0 = off), Fast R-CNN section 3.1.
    svd_rank_fc6: int = 0
    svd_rank_fc7: int = 0
    #: fc compression at inference, e.g. "svd:0.25", "int8", "svd:0.25+int8" ("" = off); see
    #: sppdet.modeling.compress (``tools/benchmark.py compress`` picks one on a trained model).
    fc_compression: str = ""


@dataclass
class Config:
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
    unknown = sorted(set(data) - names)
    if unknown:
        import difflib

        k = unknown[0]
        close = difflib.get_close_matches(k, names, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: unknown key '{prefix}{k}'{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k, source) for k, v in data.items()}
    return cls(**kwargs)


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


def _read_yaml(path: Path, seen: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from e
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
        raise ConfigError(f"override '{text}': expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML") from e
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
                raise ConfigError(f"override '{text}': '{p}' is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: Dict[str, Any] = {}
    source = "<defaults>"
    if path:
        path = Path(path)
        source = str(path)
        data = _read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + overrides"
    return config_from_dict(data, source)


def dump_config(cfg: Config) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the config used next to an output (atomically)."""
    save_text(dump_config(cfg), path)
