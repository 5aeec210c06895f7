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


MAX_NMS_CANDIDATES = 1_000_000  # candidates one forward pass ranks, all classes and images
MAX_NMS_PAIRS = 250_000_000     # overlaps greedy NMS may compute: n * (n - 1) / 2 per class


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """BBoxSize of each box in float32: 0 for a box whose corners are swapped."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.where((width < 0) | (height < 0), np.float32(0), width * height).astype(np.float32)


def overlaps(box: np.ndarray, size: np.float32, others: np.ndarray, other_sizes: np.ndarray) -> np.ndarray:
    """JaccardOverlap of one box with each of `others` (normalised, no +1), in
    float32 as the fork: 0 unless the intersection has a positive width and height."""
    apart = ((others[:, 0] > box[2]) | (others[:, 2] < box[0])
             | (others[:, 1] > box[3]) | (others[:, 3] < box[1]))
    width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = width * height
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = inter / (size + other_sizes - inter)
    return np.where(apart | ~(width > 0) | ~(height > 0), np.float32(0), ratio)


def nms_order(scores: np.ndarray, threshold: float, top_k: int) -> np.ndarray:
    """GetMaxScoreIndex: candidates above the threshold by descending score
    (ties: lower index first), the first top_k."""
    candidates = np.flatnonzero(scores > threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return order[:top_k] if top_k > -1 else order


def nms_fast(boxes: np.ndarray, order: np.ndarray, nms_threshold: float, eta: float) -> list[int]:
    """ApplyNMSFast over ranked candidates: greedy suppression above the
    adaptive overlap threshold (float32, as the fork keeps it). Each candidate
    is compared with every kept box at once: n steps of at most n each."""
    sizes = box_sizes(boxes[order])
    kept_boxes = np.empty((len(order), 4), np.float32)
    kept_sizes = np.empty(len(order), np.float32)
    kept: list[int] = []
    adaptive, eta = np.float32(nms_threshold), np.float32(eta)
    for rank, index in enumerate(order):
        count = len(kept)
        if count and not (overlaps(boxes[index], sizes[rank], kept_boxes[:count],
                                   kept_sizes[:count]) <= adaptive).all():
            continue
        kept_boxes[count], kept_sizes[count] = boxes[index], sizes[rank]
        kept.append(int(index))
        if eta < 1 and adaptive > 0.5:
            adaptive = np.float32(adaptive * eta)
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
        orders = [[nms_order(conf[image].reshape(count, classes)[:, label], threshold, top_k)
                   for label in range(classes) if label != p.background_label_id]
                  for image in range(batch)]
        self._check_work([len(order) for per_image in orders for order in per_image])
        rows = []
        for image in range(batch):
            locations = loc[image].reshape(count, loc_classes, 4)
            scores = conf[image].reshape(count, classes)
            decoded = [decode_boxes(prior_boxes, variances, locations[:, c], p.code_type,
                                    p.variance_encoded_in_target) for c in range(loc_classes)]
            labels = [label for label in range(classes) if label != p.background_label_id]
            kept = {label: nms_fast(decoded[0 if p.share_location else label], order, nms.nms_threshold,
                                    nms.eta) for label, order in zip(labels, orders[image])}
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

    def _check_work(self, candidates: list[int]) -> None:
        """Refuse before ranking when greedy NMS would be quadratic past the
        bounds: the settings' top_k caps the candidates of each class."""
        total, pairs = sum(candidates), sum(n * (n - 1) // 2 for n in candidates)
        if total > MAX_NMS_CANDIDATES or pairs > MAX_NMS_PAIRS:
            raise self.fail(f"non-maximum suppression over {total} candidates ({pairs} overlaps) is "
                            f"past the bound of {MAX_NMS_CANDIDATES} candidates and {MAX_NMS_PAIRS} "
                            "overlaps: set nms_param top_k (SSD's nets use 400) or a "
                            "confidence_threshold")
