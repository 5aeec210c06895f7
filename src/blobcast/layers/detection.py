"""SSD's DetectionOutput (weiliu89 detection_output_layer.cpp, bbox_util.cpp),
on the CPU path's rules: decoding, per-class greedy NMS with top_k and the
adaptive eta, keep_top_k across classes, and the fork's output layout.

The selection is sequential and small (a few thousand priors), so it runs
on the host in NumPy whatever the array module; only the result goes back.
"""

from __future__ import annotations

import numpy as np

from .base import LayerOp, register

_FLT_MAX = float(np.finfo(np.float32).max)


def decode_boxes(priors: np.ndarray, variances: np.ndarray, loc: np.ndarray, code_type: str,
                 variance_in_target: bool) -> np.ndarray:
    """DecodeBBox for every prior at once (float32, not clipped): [P, 4]."""
    v = np.ones_like(variances) if variance_in_target else variances
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if code_type == "CORNER":
        return (priors + v * loc).astype(np.float32)
    if code_type == "CORNER_SIZE":
        scale = np.stack([pw, ph, pw, ph], axis=1)
        return (priors + v * loc * scale).astype(np.float32)
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    cx = v[:, 0] * loc[:, 0] * pw + pcx
    cy = v[:, 1] * loc[:, 1] * ph + pcy
    w = np.exp(v[:, 2] * loc[:, 2]) * pw
    h = np.exp(v[:, 3] * loc[:, 3]) * ph
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def _size(box) -> np.float32:
    if box[2] < box[0] or box[3] < box[1]:
        return np.float32(0)
    return np.float32(box[2] - box[0]) * np.float32(box[3] - box[1])


def jaccard(a, b) -> np.float32:
    """JaccardOverlap with normalised boxes (no +1), in float32 as the fork:
    0 unless the intersection has a positive width and height."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return np.float32(0)
    width = np.float32(min(a[2], b[2]) - max(a[0], b[0]))
    height = np.float32(min(a[3], b[3]) - max(a[1], b[1]))
    if not (width > 0 and height > 0):
        return np.float32(0)
    inter = width * height
    return inter / (_size(a) + _size(b) - inter)


def nms_fast(boxes: np.ndarray, scores: np.ndarray, threshold: float, nms_threshold: float,
             eta: float, top_k: int) -> list[int]:
    """ApplyNMSFast: candidates above the threshold by descending score (ties:
    lower index first), the first top_k, greedy suppression above the
    adaptive overlap threshold."""
    candidates = np.flatnonzero(scores > threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    adaptive = nms_threshold
    for index in order:
        keep = all(jaccard(boxes[index], boxes[other]) <= adaptive for other in kept)
        if keep:
            kept.append(int(index))
            if eta < 1 and adaptive > 0.5:
                adaptive *= eta
    return kept


@register("DetectionOutput", settings="detection_output_param",
          key_settings=("num_classes", "share_location", "background_label_id", "code_type",
                        "keep_top_k", "confidence_threshold"), bottoms=(3, 4))
class DetectionOutput(LayerOp):
    """Top [1, 1, kept, 7]: rows (image, label, score, xmin, ymin, xmax, ymax),
    image by image, labels ascending, scores descending within a label; when
    nothing at all is kept, one row (image, -1, -1, ...) per image.

    Where scores tie exactly at the keep_top_k cut, the fork's unstable
    std::sort decides which survive and in what order; blobcast sorts stably
    (lower prior index first)."""

    origin = 'SSD (weiliu89)'
    exactness = ("the fork's rows in its order, except rows whose scores tie at a keep_top_k cut "
                 "(the fork's std::sort is not stable); eta < 1 has no ONNX form")

    def top_shapes(self, shapes):
        return [None]  # the number of detections depends on the data

    @classmethod
    def data_dependent_top_shapes(cls, layer):
        return [(1, 1, None, 7)]

    def forward(self, loc, conf, priors, *_image):
        p = self.params
        to_host = (lambda a: a.get()) if hasattr(loc, "get") else np.asarray
        loc, conf, priors = (to_host(a).astype(np.float32) for a in (loc, conf, priors))
        classes, batch = p.num_classes, loc.shape[0]
        count = priors.shape[2] // 4
        loc_classes = 1 if p.share_location else classes
        if loc[0].size != count * loc_classes * 4 or conf[0].size != count * classes:
            raise self.fail(f"{count} priors do not fit loc {list(loc.shape)} and conf "
                            f"{list(conf.shape)} for {classes} classes")
        if p.share_location and p.background_label_id == -1:
            raise self.fail("background_label_id -1 needs share_location false (the fork aborts)")
        prior_boxes = priors[0, 0].reshape(count, 4)
        variances = priors[0, 1].reshape(count, 4) if priors.shape[1] > 1 else np.ones_like(prior_boxes)
        nms = p.nms_param
        threshold = p.confidence_threshold if p.has("confidence_threshold") else -_FLT_MAX
        top_k = nms.top_k if nms.has("top_k") else -1
        rows = []
        for image in range(batch):
            locations = loc[image].reshape(count, loc_classes, 4)
            scores = conf[image].reshape(count, classes)
            decoded = [decode_boxes(prior_boxes, variances, locations[:, c], p.code_type,
                                    p.variance_encoded_in_target) for c in range(loc_classes)]
            kept = {}
            for label in range(classes):
                if label == p.background_label_id:
                    continue
                boxes = decoded[0 if p.share_location else label]
                kept[label] = nms_fast(boxes, scores[:, label], threshold, nms.nms_threshold,
                                       nms.eta, top_k)
            total = sum(len(indices) for indices in kept.values())
            if p.keep_top_k > -1 and total > p.keep_top_k:
                ranked = [(scores[index, label], label, index)
                          for label, indices in kept.items() for index in indices]
                ranked.sort(key=lambda item: -item[0])  # stable where the fork's sort is not
                kept = {}
                for _, label, index in ranked[:p.keep_top_k]:
                    kept.setdefault(label, []).append(index)
            for label in sorted(kept):
                boxes = decoded[0 if p.share_location else label]
                for index in kept[label]:
                    rows.append([image, label, scores[index, label], *boxes[index]])
        if not rows:
            rows = [[image, -1, -1, -1, -1, -1, -1] for image in range(batch)]
        top = np.asarray(rows, np.float32).reshape(1, 1, len(rows), 7)
        return (self.xp.asarray(top),)
