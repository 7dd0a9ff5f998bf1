"""Image classification with SPP-net (section 3 of the paper): any input size, multi-size and
variable-size training, on an ImageFolder tree or on the ground-truth crops of a VOC/COCO split."""

from .config import ClassifierConfig, load_classifier_config
from .model import SPPClassifier, build_classifier

__all__ = ["ClassifierConfig", "SPPClassifier", "build_classifier", "load_classifier_config"]
