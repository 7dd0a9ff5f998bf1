"""Datasets: PASCAL VOC and COCO readers, a generated sample set, image reading."""

from .dataset import DetectionDataset, ImageRecord

__all__ = ["DetectionDataset", "ImageRecord"]
