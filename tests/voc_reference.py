"""Independent reference for VOC AP: a plain-loop transcription of the devkit rules
(py-faster-rcnn ``voc_eval``), shared by the tests that compare our evaluation with it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def parse_voc_boxes(path: Path):
    """[(name, [xmin, ymin, xmax, ymax] floats, difficult)] of one VOC XML file, 1-based inclusive."""
    objs = []
    for obj in ET.parse(path).findall("object"):
        bb = obj.find("bndbox")
        box = [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        diff = obj.find("difficult")
        objs.append((obj.find("name").text.strip(), box, int(diff.text) if diff is not None else 0))
    return objs


# Independent transcription of the devkit rules (py-faster-rcnn voc_eval), plain loops on
# 1-based inclusive VOC boxes with +1 widths.


def devkit_ap(raw, det_lines, classname, ovthresh, use_07_metric):
    recs, npos = {}, 0
    for image_id, objs in raw.items():
        mine = [o for o in objs if o[0] == classname]
        recs[image_id] = {
            "bbox": [o[1] for o in mine],
            "difficult": [bool(o[2]) for o in mine],
            "det": [False] * len(mine),
        }
        npos += sum(1 for o in mine if not o[2])
    ids = [d[0] for d in det_lines]
    conf = [d[1] for d in det_lines]
    bbs = [d[2] for d in det_lines]
    order = sorted(range(len(ids)), key=lambda i: -conf[i])  # stable, like a stable argsort
    tp, fp = [], []
    for d in order:
        r, bb = recs[ids[d]], bbs[d]
        ovmax, jmax = -math.inf, -1
        for j, g in enumerate(r["bbox"]):
            iw = max(min(g[2], bb[2]) - max(g[0], bb[0]) + 1.0, 0.0)
            ih = max(min(g[3], bb[3]) - max(g[1], bb[1]) + 1.0, 0.0)
            inter = iw * ih
            uni = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter
            if inter / uni > ovmax:
                ovmax, jmax = inter / uni, j
        t = f = 0.0
        if ovmax > ovthresh:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    t, r["det"][jmax] = 1.0, True
                else:
                    f = 1.0
        else:
            f = 1.0
        tp.append(t)
        fp.append(f)
    ctp = cfp = 0.0
    rec, prec = [], []
    for t, f in zip(tp, fp):
        ctp, cfp = ctp + t, cfp + f
        rec.append(ctp / npos)
        prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))  # the later eps fix for 0/0
    if use_07_metric:
        ap = 0.0
        for i in range(11):
            thr = 0.1 * i  # the same floats as np.arange(0., 1.1, 0.1)
            ps = [p for r_, p in zip(rec, prec) if r_ >= thr]
            ap += (max(ps) if ps else 0.0) / 11.0
        return ap
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])
