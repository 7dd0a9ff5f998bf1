"""Photometric training augmentation (geometric flips live with the window sampler).

Hue rotation is the one kept here: on data where colour and class are correlated (the sample set
paints each class in a preferred hue; BCCD stains cells by type) a from-scratch network otherwise
learns "red means circle" and fails on the objects of another colour. Rotating the hue of some
training images makes shape the cue that always works (mmdetection's ``PhotoMetricDistortion``
has the same ``hue_delta`` knob, in OpenCV's half-degree units).
"""

from __future__ import annotations

import cv2
import numpy as np


def rotate_hue(image: np.ndarray, degrees: float) -> np.ndarray:
    """An RGB uint8 ``HxWx3`` image with every pixel's hue turned by ``degrees`` (mod 360).

    Saturation and value are kept, so grey pixels stay grey. OpenCV stores hue in 2-degree
    steps, so the turn is rounded to a multiple of 2 degrees.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"rotate_hue: expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
    steps = int(round(degrees / 2.0)) % 180
    if steps == 0:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    h = hsv[:, :, 0].astype(np.int16) + steps
    hsv[:, :, 0] = (h % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
