"""A small generated detection set, written in both real layouts (VOC XML and COCO json).

``generate_sample_dataset("data/sample")`` draws 160 + 160 images (320x240 by default) of five
filled shapes, :data:`SAMPLE_CLASSES`, on cluttered backgrounds: crops of the photos that
scikit-image ships on disk (no download; procedural textures only when scikit-image is not
installed), colour gradients, smooth noise, stripes, plus clutter lines and scribbled text.
Each image holds 1-6 objects from 20 px to 80% of the shorter side, aspect 0.75-1.33, some
rotated, some overlapping (each keeps >= 60% of itself visible), some cut by the border.
Colours lean towards a hue per class but are random one time in five, so shape matters.

Boxes are exact: the tight box of the pixels each object actually shows (antialiased edge
pixels with coverage >= 1/4, occlusion by later objects accounted for). ``truncated`` marks
objects cut by the border; ``difficult`` marks the few that show less than 65% of their shape
(every object shows at least 12 px on each side); the COCO json carries those as ``iscrowd: 1`` so both
evaluations ignore the same objects.

Output (``out_dir``)::

    voc/Annotations/000001.xml ...          VOC XML (1-based inclusive boxes)
    voc/JPEGImages/000001.jpg ...           the images (JPEG quality 92)
    voc/ImageSets/Main/{train,test,trainval}.txt   trainval = train (there is no val split)
    coco/annotations/instances_{train,test}.json   file_name relative to voc/JPEGImages
    sppdet_sample.json                      manifest, written last: the generation parameters

Everything is generated into a hidden temporary folder next to ``out_dir`` (the folder, not
each file, is the atomic unit) and renamed into place, with the manifest written last, so a
half-written set never sits under ``out_dir``; a set with a missing manifest or image is
regenerated. A second call with the same
parameters returns at once. Image ``i`` depends only on ``(seed, i)``; the bytes are the same
on every run with the same OpenCV / scikit-image versions.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import DataError
from ..fileio import load_json, save_json, save_text
from ..structures import xyxy_to_xywh
from .dataset import ImageRecord
from .voc import voc_annotation_text

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

#: Class names of the sample set, in label order (label k is SAMPLE_CLASSES[k-1]).
SAMPLE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
#: Bump when the drawing changes, so existing sample folders are regenerated.
GENERATOR_VERSION = 2
MANIFEST = "sppdet_sample.json"

_HUES = {"circle": 0, "square": 112, "triangle": 60, "star": 26, "cross": 148}  # OpenCV hue 0..179
# Photos shipped as files inside the scikit-image package (skimage/data/), read with OpenCV
# (importing skimage.io would cost a second). Licences: skimage/data/README.txt.
_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "ihc.png",
    "hubble_deep_field.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "camera.png",
    "moon.png",
    "text.png",
    "color.png",
)
_MIN_SIZE, _MAX_FRAC = 20.0, 0.8
_ALPHA_VISIBLE = 64  # mask value (of 255) from which a pixel counts as showing the object
_SHIFT = 4  # cv2 sub-pixel bits


# ---------------------------------------------------------------------------------------
# Backgrounds


@functools.lru_cache(maxsize=1)
def _load_photos() -> Tuple[np.ndarray, ...]:
    """RGB uint8 photos shipped inside scikit-image (local files), or () without it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    photos = []
    for name in _PHOTOS:
        img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)  # BGR; None if absent
        if img is not None:
            photos.append(np.ascontiguousarray(img[:, :, ::-1]))
    return tuple(photos)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int, channels: int = 3) -> np.ndarray:
    small = rng.random((max(2, cells * h // w), max(2, cells), channels)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)


def _procedural(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # linear gradient between two colours, with mottling
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
        img = c0 + t[:, :, None] * (c1 - c0)
        img += (_smooth_noise(rng, w, h, int(rng.integers(4, 16))) - 0.5) * 60
    elif kind == 1:  # multi-octave smooth colour noise
        img = sum(_smooth_noise(rng, w, h, c) * wgt for c, wgt in ((3, 0.5), (10, 0.3), (40, 0.2)))
        img = img * rng.uniform(150, 255) + rng.uniform(0, 60)
    else:  # stripes / checks
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f1, f2 = rng.uniform(0.02, 0.25, 2)
        a = rng.uniform(0, math.pi)
        s = np.sin((xx * math.cos(a) + yy * math.sin(a)) * f1)
        if rng.random() < 0.5:
            s = s * np.sin((-xx * math.sin(a) + yy * math.cos(a)) * f2)
        c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
        img = c0 + ((s[:, :, None] + 1) / 2) * (c1 - c0)
    return np.clip(img, 0, 255).astype(np.float32)


def _photo_crop(rng: np.random.Generator, photo: np.ndarray, w: int, h: int) -> np.ndarray:
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.4, 1.0) * min(pw / w, ph / h)
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = crop.astype(np.float32) * rng.uniform(0.7, 1.2) + rng.uniform(-30, 30)
    return np.clip(img, 0, 255)


def _background(rng: np.random.Generator, photos: Sequence[np.ndarray], w: int, h: int) -> np.ndarray:
    if photos and rng.random() < 0.55:
        img = _photo_crop(rng, photos[int(rng.integers(len(photos)))], w, h)
    else:
        img = _procedural(rng, w, h)
    if rng.random() < 0.3:  # blend a second layer
        img = 0.6 * img + 0.4 * _procedural(rng, w, h)
    img = np.ascontiguousarray(img.astype(np.uint8))
    for _ in range(int(rng.integers(0, 5))):  # clutter lines
        p0 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p0, p1, color, int(rng.integers(1, 4)), cv2.LINE_AA)
    if rng.random() < 0.3:  # scribbled text
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(3, 9))))
        org = (int(rng.integers(0, w // 2)), int(rng.integers(20, h)))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.4, 1.2)), color, 1, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------------------------------
# Shapes


def _unit_shape(cls: str, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """Polygon in [-1, 1]^2 and a rotation (radians) for one class."""
    if cls == "circle":
        t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1), rng.uniform(0, math.pi)
    if cls == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
        return pts, (rng.uniform(-0.35, 0.35) if rng.random() < 0.5 else 0.0)
    if cls == "triangle":
        j = rng.uniform(-0.6, 0.6)
        pts = np.array([[j, -1], [1, 1], [-1, 1]], dtype=np.float64)
        return pts, (math.pi if rng.random() < 0.3 else 0.0) + rng.uniform(-0.25, 0.25)
    if cls == "star":
        inner = rng.uniform(0.38, 0.5)
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1), rng.uniform(-0.3, 0.3)
    if cls == "cross":
        a = rng.uniform(0.28, 0.4)
        pts = np.array(
            [
                [-a, -1],
                [a, -1],
                [a, -a],
                [1, -a],
                [1, a],
                [a, a],
                [a, 1],
                [-a, 1],
                [-a, a],
                [-1, a],
                [-1, -a],
                [-a, -a],
            ],
            dtype=np.float64,
        )
        return pts, rng.uniform(-0.35, 0.35)
    raise ValueError(cls)


def _shape_polygon(cls: str, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A placed polygon (float pixel coordinates) of one object."""
    unit, angle = _unit_shape(cls, rng)
    size = math.exp(rng.uniform(math.log(_MIN_SIZE), math.log(_MAX_FRAC * min(w, h))))
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    pts = unit * [size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2]
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    ext = pts.max(0) - pts.min(0)
    if rng.random() < 0.2:  # may be cut by the border
        centre = rng.uniform([0, 0], [w, h])
    else:
        centre = rng.uniform(ext / 2, np.maximum([w, h] - ext / 2, ext / 2 + 1))
    return pts - (pts.max(0) + pts.min(0)) / 2 + centre


def _raster(poly: np.ndarray, w: int, h: int, outline: int = 0) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    pts = np.round(poly * (1 << _SHIFT)).astype(np.int32)[None]
    cv2.fillPoly(mask, pts, 255, cv2.LINE_AA, shift=_SHIFT)  # type: ignore[call-overload]  # stub: Sequence only
    if outline:
        cv2.polylines(mask, pts, True, 255, outline, cv2.LINE_AA, shift=_SHIFT)  # type: ignore[call-overload]
    return mask


def _full_pixels(poly: np.ndarray, outline: int) -> int:
    """Pixels the shape would show if nothing cut or hid it (drawn on its own canvas)."""
    shift = 4 - np.floor(poly.min(0))  # integer shift: same rasterisation as in the image
    local = poly + shift
    w, h = (int(v) + 5 for v in np.ceil(local.max(0)))
    return max(int((_raster(local, w, h, outline) >= _ALPHA_VISIBLE).sum()), 1)


def _tight_box(visible: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    cols, rows = np.flatnonzero(visible.any(0)), np.flatnonzero(visible.any(1))
    if len(cols) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _colour(cls: str, rng: np.random.Generator) -> np.ndarray:
    hue = (_HUES[cls] + rng.uniform(-10, 10)) % 180 if rng.random() < 0.8 else rng.uniform(0, 180)
    # float HSV in OpenCV: hue in degrees, saturation and value in [0, 1]
    hsv = np.array([[[hue * 2, rng.uniform(0.5, 1.0), rng.uniform(0.47, 1.0)]]], dtype=np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) * 255


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> None:
    """Blend a shaded, slightly noisy fill of ``colour`` into ``img`` through ``mask`` (in place)."""
    box = _tight_box(mask)
    if box is None:
        return
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    t = ((xx - x0) * math.cos(a) + (yy - y0) * math.sin(a)) / max(x1 - x0, y1 - y0, 1)
    shade = 1.0 + rng.uniform(-0.3, 0.3) * t
    noise = rng.standard_normal((y1 - y0, x1 - x0, 3), dtype=np.float32) * 5
    fill = colour.astype(np.float32)[None, None, :] * shade[:, :, None] + noise
    alpha = mask[y0:y1, x0:x1, None].astype(np.float32) / 255.0
    region = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + fill * alpha, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# One image


def _place_objects(rng: np.random.Generator, w: int, h: int) -> List[Dict]:
    """Choose 1-6 objects; each keeps >= 60% of itself visible and >= 12 px a side."""
    objects: List[Dict] = []
    for _ in range(int(rng.integers(1, 7))):
        for _attempt in range(20):
            label = int(rng.integers(len(SAMPLE_CLASSES))) + 1
            cls = SAMPLE_CLASSES[label - 1]
            poly = _shape_polygon(cls, rng, w, h)
            outline = int(rng.integers(1, 3)) if rng.random() < 0.4 else 0
            mask = _raster(poly, w, h, outline)
            cover = mask >= _ALPHA_VISIBLE
            area = _full_pixels(poly, outline)
            if cover.sum() < 0.5 * area or _box_side(cover) < 12:
                continue  # too much outside the image
            after = _visible_after(objects, cover)
            if after is None:
                continue  # would hide too much of an earlier object
            for o, vis in zip(objects, after):
                o["visible"] = vis
            objects.append(
                {
                    "label": label,
                    "cls": cls,
                    "mask": mask,
                    "poly": poly,
                    "outline": outline,
                    "visible": cover,
                    "area": area,
                }
            )
            break
    return objects


def _draw_object(img: np.ndarray, o: Dict, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    under = img[o["mask"] >= _ALPHA_VISIBLE].astype(np.float64).mean(0)
    for _try in range(6):  # keep the object visible against what lies under it
        colour = _colour(o["cls"], rng)
        if np.linalg.norm(colour - under) >= 100:
            break
    _paint(img, o["mask"], colour, rng)
    if o["outline"]:
        edge = cv2.subtract(_raster(o["poly"], w, h, o["outline"]), _raster(o["poly"], w, h, 0))
        _paint(img, edge, colour * rng.uniform(0.3, 0.6), rng)


def render_sample_image(
    seed: int, index: int, image_size: Tuple[int, int] = (320, 240), photos: Optional[Sequence[np.ndarray]] = None
) -> Tuple[np.ndarray, Dict]:
    """Draw image ``index`` of the set with ``seed``: (RGB uint8 image, annotation dict).

    The annotation dict holds ``boxes`` (N, 4) ours (integers), ``labels`` (1..K), ``difficult``
    and ``truncated`` (bool).
    """
    w, h = image_size
    rng = np.random.default_rng([int(seed), int(index)])
    img = _background(rng, _load_photos() if photos is None else photos, w, h)
    objects = _place_objects(rng, w, h)
    boxes, labels, difficult, truncated = [], [], [], []
    for o in objects:
        _draw_object(img, o, rng)
        box = _tight_box(o["visible"])  # final: later objects are placed already
        assert box is not None  # _place_objects keeps only objects left visible
        shown = o["visible"].sum() / o["area"]
        poly = o["poly"]
        boxes.append(box)
        labels.append(o["label"])
        truncated.append(bool((poly.min(0) < 0).any() or poly[:, 0].max() > w or poly[:, 1].max() > h))
        difficult.append(bool(shown < 0.65 or min(box[2] - box[0], box[3] - box[1]) < 10))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
    noise = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0, 6)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ann = {
        "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.array(labels, np.int64),
        "difficult": np.array(difficult, bool),
        "truncated": np.array(truncated, bool),
    }
    return img, ann


def _visible_after(objects: Sequence[Dict], cover: np.ndarray) -> Optional[List[np.ndarray]]:
    """Visible masks of earlier objects once ``cover`` is drawn on top (None: one hidden too much)."""
    tight = _tight_box(cover)
    assert tight is not None  # a placed object covers some pixels
    x0, y0, x1, y1 = tight
    out = []
    for o in objects:
        vis = o["visible"]
        if vis[y0:y1, x0:x1].any() and (vis[y0:y1, x0:x1] & cover[y0:y1, x0:x1]).any():
            vis = vis.copy()
            vis[y0:y1, x0:x1] &= ~cover[y0:y1, x0:x1]
            if vis.sum() < 0.6 * o["area"] or _box_side(vis) < 12:
                return None
        out.append(vis)
    return out


def _box_side(cover: np.ndarray) -> int:
    box = _tight_box(cover)
    return 0 if box is None else min(box[2] - box[0], box[3] - box[1])


# ---------------------------------------------------------------------------------------
# The whole set


def _params(num_train: int, num_test: int, seed: int, image_size: Tuple[int, int], photos: bool) -> Dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "seed": int(seed),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "backgrounds": "skimage-photos+procedural" if photos else "procedural",
        "classes": list(SAMPLE_CLASSES),
    }


def _info(out: Path, params: Dict, num_objects: int, generated: bool, seconds: float) -> Dict:
    return {
        "out_dir": str(out),
        "voc_root": str(out / "voc"),
        "image_dir": str(out / "voc" / "JPEGImages"),
        "coco_train_ann": str(out / "coco" / "annotations" / "instances_train.json"),
        "coco_test_ann": str(out / "coco" / "annotations" / "instances_test.json"),
        "class_names": list(SAMPLE_CLASSES),
        "num_train": params["num_train"],
        "num_test": params["num_test"],
        "seed": params["seed"],
        "image_size": params["image_size"],
        "num_objects": num_objects,
        "generated": generated,
        "seconds": round(seconds, 3),
    }


def _coco_json(records: Sequence[ImageRecord], split: str) -> Dict:
    images: List[Dict] = []
    anns: List[Dict] = []
    for r in records:
        images.append(
            {"id": int(r.image_id), "file_name": Path(r.file_name).name, "width": r.width, "height": r.height}
        )
        for k in range(r.num_objects):
            x, y, bw, bh = (float(v) for v in xyxy_to_xywh(r.boxes[k]))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(r.image_id),
                    "category_id": int(r.labels[k]),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(r.difficult[k]),
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                }
            )
    return {
        "info": {"description": f"sppdet generated sample set ({split})", "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(SAMPLE_CLASSES)],
    }


def _write_set(tmp: Path, params: Dict, photos: Sequence[np.ndarray]) -> int:
    voc = tmp / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    n_train, n_test = params["num_train"], params["num_test"]
    records = []
    for i in range(1, n_train + n_test + 1):
        img, ann = render_sample_image(params["seed"], i, tuple(params["image_size"]), photos)
        image_id = f"{i:06d}"
        file_name = voc / "JPEGImages" / f"{image_id}.jpg"
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise DataError(f"{file_name}: JPEG encoding failed")
        buf.tofile(str(file_name))  # plain write: the whole temp folder is the atomic unit
        rec = ImageRecord(
            image_id,
            str(file_name),
            img.shape[1],
            img.shape[0],
            ann["boxes"],
            ann["labels"],
            ann["difficult"],
            ann["truncated"],
        )
        xml = voc_annotation_text(rec, SAMPLE_CLASSES, database="sppdet sample")
        (voc / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
        records.append(rec)
    train, test = records[:n_train], records[n_train:]
    lines = {s: "".join(r.image_id + "\n" for r in rs) for s, rs in (("train", train), ("test", test))}
    for split, text in (("train", lines["train"]), ("trainval", lines["train"]), ("test", lines["test"])):
        save_text(text, voc / "ImageSets" / "Main" / f"{split}.txt")
    for split, rs in (("train", train), ("test", test)):
        save_json(_coco_json(rs, split), tmp / "coco" / "annotations" / f"instances_{split}.json", indent=None)
    return sum(r.num_objects for r in records)


def _existing_manifest(out: Path) -> Optional[Dict]:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return load_json(path)
    except Exception:
        return None


def generate_sample_dataset(
    out_dir: PathLike = "data/sample",
    num_train: int = 160,
    num_test: int = 160,
    seed: int = 0,
    image_size: Tuple[int, int] = (320, 240),
    force: bool = False,
) -> Dict:
    """Generate the sample set under ``out_dir`` (skipped when already there with these parameters).

    Args:
        out_dir: output folder; replaced only if it is empty or holds an earlier sample set.
        num_train, num_test: image counts (ids ``000001..`` train first, then test).
        seed: the random seed; the same seed gives the same files.
        image_size: ``(width, height)`` of every image.
        force: regenerate even when a complete set with the same parameters exists.

    Returns:
        ``out_dir``, ``voc_root``, ``image_dir``, ``coco_train_ann``, ``coco_test_ann``,
        ``class_names``, ``num_train``, ``num_test``, ``seed``, ``image_size``,
        ``num_objects``, ``generated`` (False when skipped) and ``seconds``.
    """
    t0 = time.time()
    if num_train < 1 or num_test < 0:
        raise DataError(f"sample set: need num_train >= 1 and num_test >= 0 (got {num_train}, {num_test})")
    out = Path(out_dir)
    photos = _load_photos()
    params = _params(num_train, num_test, seed, image_size, bool(photos))
    manifest = _existing_manifest(out)
    n_images = len(list((out / "voc" / "JPEGImages").glob("*.jpg"))) if manifest else 0
    if manifest is not None and manifest.get("params") == params and not force and n_images == num_train + num_test:
        log.info("sample set already complete in %s", out)
        return _info(out, params, int(manifest.get("num_objects", 0)), False, time.time() - t0)
    if out.exists() and manifest is None and (not out.is_dir() or any(out.iterdir())):
        raise DataError(
            f"{out}: exists and is not an sppdet sample set (no {MANIFEST}); remove it or choose another output folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the renamed set should read like any folder
    try:
        num_objects = _write_set(tmp, params, photos)
        save_json({"params": params, "num_objects": num_objects, "complete": True}, tmp / MANIFEST)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.time() - t0
    log.info("sample set: %d images, %d objects -> %s (%.1f s)", num_train + num_test, num_objects, out, seconds)
    return _info(out, params, num_objects, True, seconds)
