"""Drawing detections on images (opencv), legibly at any image size."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
]


def class_color(label: int) -> Tuple[int, int, int]:
    """A distinct RGB colour per label."""
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    scores: Sequence[float],
    class_names: Sequence[str],
    colors: Optional[Sequence[Tuple[int, int, int]]] = None,
    dashed: Optional[Sequence[bool]] = None,
) -> np.ndarray:
    """Copy of the RGB ``image`` with ``boxes (N, 4)`` (ours: x1, y1, x2, y2 pixels) drawn,
    each labelled "class score". Line width and font scale follow the image size."""
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thick = max(1, int(round(min(h, w) / 300)))
    font = max(0.35, min(h, w) / 900)
    order = np.argsort(np.asarray(scores, dtype=np.float64)) if len(scores) else np.zeros(0, np.int64)
    for i in order:  # highest score drawn last, on top
        x1, y1, x2, y2 = [int(round(v)) for v in boxes[i]]
        col = colors[i] if colors is not None else class_color(labels[i])
        if dashed is not None and dashed[i]:
            _dashed_rect(out, (x1, y1), (x2, y2), col, thick)
        else:
            cv2.rectangle(out, (x1, y1), (x2, y2), col, thick, cv2.LINE_AA)
        name = class_names[labels[i] - 1] if 0 < labels[i] <= len(class_names) else str(labels[i])
        text = f"{name} {scores[i]:.2f}" if scores[i] is not None and scores[i] >= 0 else name
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, thick // 2))
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 2), ty + base - 1), col, -1)
        lum = 0.299 * col[0] + 0.587 * col[1] + 0.114 * col[2]
        cv2.putText(
            out,
            text,
            (x1 + 1, ty - 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (0, 0, 0) if lum > 140 else (255, 255, 255),
            max(1, thick // 2),
            cv2.LINE_AA,
        )
    return out


def _dashed_rect(img: np.ndarray, p1, p2, color, thick: int, dash: int = 6) -> None:
    x1, y1 = p1
    x2, y2 = p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])))
        for s in range(0, max(1, length), 2 * dash):
            t0, t1 = s / max(1, length), min(1.0, (s + dash) / max(1, length))
            q0 = (int(a[0] + (b[0] - a[0]) * t0), int(a[1] + (b[1] - a[1]) * t0))
            q1 = (int(a[0] + (b[0] - a[0]) * t1), int(a[1] + (b[1] - a[1]) * t1))
            cv2.line(img, q0, q1, color, thick, cv2.LINE_AA)
