"""The image classifier's config: one typed object, YAML in, strict (same machinery as
:mod:`sppdet.config`: unknown keys, wrong types and bad overrides are one-line ConfigErrors).

``load_classifier_config("configs/bccd_cells_spp.yaml", ["train.epochs=2"])`` returns a
:class:`ClassifierConfig`. The backbone section is the detector's :class:`~sppdet.config.ModelConfig`
(``backbone``, ``weights``, ``normalization``, ``freeze_at``, ``spp_levels``, ``fc_dims``...), so a
backbone is described the same way in both families.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from ..config import ModelConfig, dataclass_from_dict, load_dataclass
from ..errors import ConfigError

DATA_FORMATS = ("voc", "coco", "folder")
INPUT_MODES = ("native", "warp")
ALTERNATE = ("epoch", "batch")


@dataclass
class ClassifierDataConfig:
    #: "voc" / "coco": crops of the ground-truth boxes of a detection split; "folder": an
    #: ImageFolder tree ``ROOT/<class>/*.jpg`` (``train_images`` / ``test_images`` are the roots).
    format: str = "voc"
    #: VOC: dataset root holding Annotations/, JPEGImages/, ImageSets/Main/.
    root: str = ""
    train_split: str = "train"
    test_split: str = "val"
    #: COCO: annotation json for training / testing; COCO and folder: image folders.
    train_ann: str = ""
    test_ann: str = ""
    train_images: str = ""
    test_images: str = ""
    #: Class names in label order (label k = classes[k]). Empty: VOC's 20 classes (voc), every
    #: category (coco), or the sorted sub-folder names (folder).
    classes: List[str] = field(default_factory=list)
    #: Context margin around each box, as a fraction of its width/height added on every side
    #: (0 = the box itself; clipped to the image).
    crop_context: float = 0.0
    #: Leave out objects flagged difficult (VOC) and crowd boxes (COCO, always).
    exclude_difficult: bool = True
    #: Leave out boxes narrower or shorter than this (pixels): nothing to classify.
    min_box_size: float = 2.0
    #: Training: at most this many crops of each class per epoch, redrawn every epoch
    #: (0 = all). Balances a dominant class and keeps an epoch short.
    max_per_class: int = 0


@dataclass
class ClassifierInputConfig:
    #: "native": each crop at its own size (times ``scales``), sides rounded to ``bucket_step``
    #: and batched by size bucket; "warp": every crop resized to a ``sizes`` x ``sizes`` square.
    mode: str = "native"
    #: warp: training square sides; more than one = multi-size training (paper: [224, 180]).
    sizes: List[int] = field(default_factory=lambda: [224])
    #: native: training scale factors of the native size; more than one = multi-size training.
    scales: List[float] = field(default_factory=lambda: [1.0])
    #: Multi-size training switches to the next size/scale every "epoch" or every "batch".
    alternate: str = "epoch"
    #: Test-time square side (warp) and scale (native).
    test_size: int = 224
    test_scale: float = 1.0
    #: native: sides are rounded to a multiple of this (the size buckets) and kept within
    #: [min_side, max_side] (aspect ratio kept when the longer side is capped).
    bucket_step: int = 16
    min_side: int = 32
    max_side: int = 448
    #: Images whose pixel count exceeds this are refused with a clear error.
    max_image_pixels: int = 100_000_000


@dataclass
class ClassifierTrainConfig:
    epochs: int = 10
    batch_size: int = 32
    #: "sgd" (momentum) or "adamw".
    optimizer: str = "sgd"
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    #: Cosine decay to 0 over all iterations after a linear warm-up of this many iterations.
    warmup_iters: int = 20
    #: Random horizontal and vertical flips (cells have no up or left).
    flip: bool = True
    seed: int = 0
    #: Log the running loss every this many iterations.
    log_period: int = 20
    #: Torch threads for training and testing (0 = torch's default).
    threads: int = 0


@dataclass
class ClassifierConfig:
    name: str = "classifier"
    #: "auto" (cuda when available), "cpu", "cuda", "cuda:N".
    device: str = "auto"
    output_dir: str = "output/classifier"
    data: ClassifierDataConfig = field(default_factory=ClassifierDataConfig)
    #: Backbone and head. ``spp_levels`` = the image-level pyramid ([1] = global pooling);
    #: ``fc_dims`` = hidden fc widths before the class layer ([] = none).
    model: ModelConfig = field(default_factory=lambda: ModelConfig(fc_dims=[256], spp_levels=[4, 2, 1]))
    input: ClassifierInputConfig = field(default_factory=ClassifierInputConfig)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)


def _check(cfg: ClassifierConfig, source: str) -> ClassifierConfig:
    """Value checks the types cannot express; one line naming the field."""

    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{source}: '{key}' {what}")

    d, i, t = cfg.data, cfg.input, cfg.train
    if d.format not in DATA_FORMATS:
        raise bad("data.format", f"must be one of {', '.join(DATA_FORMATS)}, got {d.format!r}")
    if d.crop_context < 0:
        raise bad("data.crop_context", f"must be >= 0, got {d.crop_context}")
    if d.max_per_class < 0:
        raise bad("data.max_per_class", f"must be >= 0, got {d.max_per_class}")
    if i.mode not in INPUT_MODES:
        raise bad("input.mode", f"must be one of {', '.join(INPUT_MODES)}, got {i.mode!r}")
    if i.alternate not in ALTERNATE:
        raise bad("input.alternate", f"must be 'epoch' or 'batch', got {i.alternate!r}")
    if not i.sizes or any(s < 1 for s in i.sizes) or i.test_size < 1:
        raise bad("input.sizes", f"sizes must be positive integers, got {i.sizes} (test_size {i.test_size})")
    if not i.scales or any(s <= 0 for s in i.scales) or i.test_scale <= 0:
        raise bad("input.scales", f"scales must be > 0, got {i.scales} (test_scale {i.test_scale})")
    if i.bucket_step < 1 or i.min_side < 1 or i.max_side < i.min_side:
        raise bad("input.bucket_step", f"need bucket_step >= 1 and 1 <= min_side <= max_side, got {i}")
    if not cfg.model.spp_levels or any(n < 1 for n in cfg.model.spp_levels):
        raise bad("model.spp_levels", f"must be a non-empty list of positive integers, got {cfg.model.spp_levels}")
    if t.epochs < 1 or t.batch_size < 1:
        raise bad("train.epochs", f"epochs and batch_size must be >= 1, got {t.epochs}, {t.batch_size}")
    if t.optimizer not in ("sgd", "adamw"):
        raise bad("train.optimizer", f"must be 'sgd' or 'adamw', got {t.optimizer!r}")
    if t.base_lr <= 0:
        raise bad("train.base_lr", f"must be > 0, got {t.base_lr}")
    return cfg


def load_classifier_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> ClassifierConfig:
    """Load a classifier YAML (or the defaults) with ``key.sub=value`` overrides; strict."""
    cfg = load_dataclass(ClassifierConfig, path, overrides)
    return _check(cfg, f"{path or '<defaults>'}{' + overrides' if overrides else ''}")


def classifier_config_from_dict(data: Dict[str, Any], source: str = "<dict>") -> ClassifierConfig:
    """A :class:`ClassifierConfig` from a nested dict (e.g. the one stored in a checkpoint)."""
    return _check(dataclass_from_dict(ClassifierConfig, data, source), source)


def classifier_config_to_dict(cfg: ClassifierConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_classifier_config(cfg: ClassifierConfig) -> str:
    return yaml.safe_dump(classifier_config_to_dict(cfg), sort_keys=False)
