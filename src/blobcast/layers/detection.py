"""Detection layers: SSD's PriorBox and DetectionOutput, and Faster R-CNN's
Proposal.

DetectionOutput: SSD's (weiliu89 detection_output_layer.cpp, bbox_util.cpp),
on the CPU path's rules: decoding, per-class greedy NMS with top_k and the
adaptive eta, keep_top_k across classes, and the fork's output layout.
The selection is sequential and small (a few thousand priors), so it runs
on the host in NumPy whatever the array module; only the result goes back.

Proposal: Faster R-CNN's region proposals, as OpenCV's proposal_layer.cpp
computes them for `proposal_param` (the C++ form of py-faster-rcnn's Python
proposal layer, which OpenCV and Huawei ATC read).

OpenCV builds it from three of its layers, and so does this one:
prior boxes (one per feature cell and ratio x scale, pixel coordinates,
xmax = centre + w/2 - 1), the RPN deltas decoded CENTER_SIZE against them
(sizes + 1, clipped to the image of im_info's rows x cols), then greedy NMS
over the object scores (the second half of the score channels), the pre_nms_topn
best first, kept while the IoU (sizes + 1) stays <= nms_thresh, up to
post_nms_topn. Top 0: post_nms_topn x 5 rows (0, x1, y1, x2, y2), zeros past
the boxes kept; top 1 (optional): their scores, post_nms_topn x 1. min_size
is not used (OpenCV ignores it).
"""

from __future__ import annotations

from math import prod

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


@register("PriorBox", settings="prior_box_param",
          key_settings=("min_size", "max_size", "aspect_ratio", "flip", "clip", "step"), bottoms=(2, 2))
class PriorBox(LayerOp):
    """SSD's default boxes (weiliu89 prior_box_layer.cpp), which depend on the
    shapes alone: top [1, 2, H*W*priors*4], channel 0 the boxes as
    (xmin, ymin, xmax, ymax) over the image size, channel 1 the variances."""

    origin = 'SSD (weiliu89)'
    exactness = "bit for bit the SSD fork's output, in its float32 arithmetic"

    def aspect_ratios(self) -> list[float]:
        """[1, each given ratio not already there, its inverse with flip], as
        the fork keeps them: float32 values, 1/ar computed in double."""
        import math

        import numpy as np

        def bucket(value: float):  # 1e-6 wide: a value within 1e-6 lies in a neighbouring one
            return math.floor(value * 1e6) if math.isfinite(value) else value

        def seen(value: float) -> bool:
            near = (bucket(value) + step for step in (-1, 0, 1)) if math.isfinite(value) else [value]
            return any(abs(value - other) < 1e-6 for b in near for other in known.get(b, ()))

        ratios = [np.float32(1.0)]
        known: dict = {bucket(1.0): [1.0]}
        for ratio in self.params.aspect_ratio:
            ratio = np.float32(ratio)
            if seen(float(ratio)):
                continue
            added = [ratio]
            if self.params.flip:
                with np.errstate(divide="ignore"):  # 1/0: inf, as the fork's 1./ar
                    added.append(np.float32(np.float64(1.0) / np.float64(ratio)))
            ratios += added
            for value in map(float, added):
                known.setdefault(bucket(value), []).append(value)
        return ratios

    def _checked(self):
        p = self.params
        if not p.min_size:
            raise self.fail("needs a min_size")
        if any(size <= 0 for size in p.min_size) or any(ratio <= 0 for ratio in p.aspect_ratio):
            raise self.fail("every min_size and aspect_ratio must be positive")
        if p.max_size and len(p.max_size) != len(p.min_size):
            raise self.fail("needs as many max_size as min_size values")
        if any(top <= bottom for bottom, top in zip(p.min_size, p.max_size)):
            raise self.fail("every max_size must be greater than its min_size")
        if len(p.variance) not in (0, 1, 4):
            raise self.fail(f"takes 1 or 4 variances, not {len(p.variance)}")
        return p

    def priors_per_location(self) -> int:
        p = self._checked()
        return len(self.aspect_ratios()) * len(p.min_size) + len(p.max_size)

    def top_shapes(self, shapes):
        height, width = shapes[0][2:4]
        return [(1, 2, height * width * self.priors_per_location() * 4)]

    def values_needed(self, shapes):
        """The priors come from the settings, not the bottoms: at the peak,
        the corners in float64 (as many bytes as the top) beside the boxes,
        the variances and their stack (about 2.8 times the top, measured)."""
        (top,) = self.top_shapes(shapes)
        return 3 * prod(top) + sum(prod(shape) for shape in shapes)

    def boxes(self, feature_shape, image_shape):
        """The prior boxes and variances as NumPy float32 arrays, [priors, 4] each."""
        import numpy as np

        p = self._checked()
        height, width = feature_shape[2:4]
        if p.has("img_h") or p.has("img_w"):
            image_h, image_w = p.img_h, p.img_w
        elif p.has("img_size"):
            image_h = image_w = p.img_size
        else:
            image_h, image_w = image_shape[2:4]
        # The fork's arithmetic: steps, centres and box sizes in float32, each
        # coordinate (centre - size / 2.) / image size in double, stored as float.
        f32 = np.float32
        if p.has("step_h") or p.has("step_w"):
            step_h, step_w = f32(p.step_h), f32(p.step_w)
        elif p.has("step"):
            step_h = step_w = f32(p.step)
        else:
            step_h, step_w = f32(image_h) / f32(height), f32(image_w) / f32(width)
        sizes = []  # (width, height) per prior at a location, in the fork's order
        ratios = self.aspect_ratios()
        for index, minimum in enumerate(p.min_size):
            minimum = int(minimum)  # the fork truncates: int min_size_ = min_sizes_[s]
            sizes.append((f32(minimum), f32(minimum)))
            if p.max_size:
                side = f32(np.sqrt(float(minimum * int(p.max_size[index]))))
                sizes.append((side, side))
            for ratio in ratios:
                if abs(float(ratio) - 1.0) < 1e-6:
                    continue
                root = np.sqrt(ratio)  # float32, as sqrt of a float
                sizes.append((f32(minimum) * root, f32(minimum) / root))
        sizes = np.asarray(sizes, np.float32).astype(np.float64)
        offset = f32(p.offset)
        centre_x = ((np.arange(width, dtype=np.float32) + offset) * step_w).astype(np.float64)
        centre_y = ((np.arange(height, dtype=np.float32) + offset) * step_h).astype(np.float64)
        cy, cx = np.meshgrid(centre_y, centre_x, indexing="ij")
        cx, cy = cx[..., None], cy[..., None]
        half_w, half_h = sizes[:, 0] / 2.0, sizes[:, 1] / 2.0
        boxes = np.stack([(cx - half_w) / image_w, (cy - half_h) / image_h,
                          (cx + half_w) / image_w, (cy + half_h) / image_h], axis=-1).reshape(-1, 4)
        boxes = boxes.astype(np.float32)
        if p.clip:
            boxes = np.clip(boxes, np.float32(0), np.float32(1))
        variance = list(p.variance) or [0.1]
        variances = np.tile(np.asarray(variance * (4 // len(variance)), np.float32), (len(boxes), 1))
        return boxes, variances

    def forward(self, feature, image):
        boxes, variances = self.boxes(feature.shape, image.shape)
        top = self.xp.asarray(self.xp.stack([self.xp.asarray(boxes.reshape(-1)),
                                             self.xp.asarray(variances.reshape(-1))]))
        return (top.reshape((1, 2, -1)).astype(feature.dtype),)


@register("Proposal", settings="proposal_param", key_settings=(
    "feat_stride", "base_size", "ratio", "scale", "pre_nms_topn", "post_nms_topn", "nms_thresh"),
    bottoms=(3, 3), tops=(1, 2))
class Proposal(LayerOp):
    origin = "Faster R-CNN (py-faster-rcnn's RPN, as OpenCV's proposal_layer.cpp computes it)"

    def anchor_sizes(self) -> np.ndarray:
        """(width, height) per anchor, ratio-major, as OpenCV rounds them."""
        p = self.params
        sizes = []
        for ratio in p.ratio:
            ratio = np.float32(ratio)
            width = np.floor(np.float32(p.base_size) / np.sqrt(ratio) + np.float32(0.5))
            height = np.floor(width * ratio + np.float32(0.5))
            for scale in p.scale:
                sizes.append((np.float32(scale) * width, np.float32(scale) * height))
        if not sizes:
            raise self.fail("needs at least one ratio and one scale")
        return np.asarray(sizes, np.float32)

    def top_shapes(self, shapes):
        scores, deltas, info = (tuple(s) for s in shapes)
        anchors = len(self.anchor_sizes())
        if len(scores) != 4 or scores[0] != 1 or scores[1] != 2 * anchors:
            raise self.fail(f"the scores must be 1 x {2 * anchors} x H x W, not {list(scores)}")
        if deltas != (1, 4 * anchors) + scores[2:]:
            raise self.fail(f"the deltas must be 1 x {4 * anchors} x {scores[2]} x {scores[3]}, "
                            f"not {list(deltas)}")
        if int(np.prod(info)) < 2:
            raise self.fail("im_info must hold the image's rows and columns")
        rows = self.params.post_nms_topn
        return [(rows, 5), (rows, 1)][:len(self.layer.tops)]

    def values_needed(self, shapes):
        return 40 * int(np.prod(shapes[0])) + 8 * self.params.post_nms_topn

    def priors(self, height: int, width: int) -> np.ndarray:
        """[H * W * anchors, 4] prior boxes in pixels, cell-major."""
        p = self.params
        step = np.float32(p.feat_stride)
        offset = np.float32(0.5 * p.base_size / p.feat_stride)
        sizes = self.anchor_sizes()
        cy = (np.arange(height, dtype=np.float32) + offset) * step
        cx = (np.arange(width, dtype=np.float32) + offset) * step
        cy, cx = (a[..., None] for a in np.meshgrid(cy, cx, indexing="ij"))
        half_w, half_h = sizes[:, 0] * np.float32(0.5), sizes[:, 1] * np.float32(0.5)
        one = np.float32(1)
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w - one, cy + half_h - one], axis=-1)
        return boxes.reshape(-1, 4).astype(np.float32)

    def forward(self, scores, deltas, info):
        xp, p = self.xp, self.params
        self.top_shapes([scores.shape, deltas.shape, info.shape])
        host = [np.asarray(a.get() if hasattr(a, "get") else a, np.float32) for a in (scores, deltas, info)]
        scores, deltas, info = host
        anchors = len(self.anchor_sizes())
        height, width = scores.shape[2:]
        objectness = scores[0, anchors:].transpose(1, 2, 0).reshape(-1)
        codes = deltas[0].transpose(1, 2, 0).reshape(-1, 4)
        boxes = _decode(self.priors(height, width), codes, int(info.reshape(-1)[0]),
                        int(info.reshape(-1)[1]))
        kept = _nms(boxes, objectness, p.pre_nms_topn, np.float32(p.nms_thresh), p.post_nms_topn)
        rois = np.zeros((p.post_nms_topn, 5), np.float32)
        rois[:len(kept), 1:] = boxes[kept]
        top_scores = np.zeros((p.post_nms_topn, 1), np.float32)
        top_scores[:len(kept), 0] = objectness[kept]
        return tuple(xp.asarray(a) for a in (rois, top_scores)[:len(self.layer.tops)])


def _decode(priors: np.ndarray, codes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """CENTER_SIZE decoding in pixels (widths + 1), clipped to the image."""
    f32 = np.float32
    width = priors[:, 2] - priors[:, 0] + f32(1)
    height = priors[:, 3] - priors[:, 1] + f32(1)
    centre_x = (priors[:, 0].astype(np.float64) + width * 0.5).astype(f32)
    centre_y = (priors[:, 1].astype(np.float64) + height * 0.5).astype(f32)
    new_x = codes[:, 0] * width + centre_x
    new_y = codes[:, 1] * height + centre_y
    new_w = np.exp(codes[:, 2]) * width
    new_h = np.exp(codes[:, 3]) * height
    half_w, half_h = new_w.astype(np.float64) * 0.5, new_h.astype(np.float64) * 0.5
    boxes = np.stack([new_x - half_w, new_y - half_h, new_x + half_w, new_y + half_h], axis=1)
    boxes = boxes.astype(f32)
    np.clip(boxes[:, 0::2], f32(0), f32(cols - 1), out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], f32(0), f32(rows - 1), out=boxes[:, 1::2])
    return boxes


def _sizes(boxes: np.ndarray) -> np.ndarray:
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    sizes = (width + np.float32(1)) * (height + np.float32(1))
    return np.where((width < 0) | (height < 0), np.float32(0), sizes)


def _nms(boxes: np.ndarray, scores: np.ndarray, top_k: int, threshold, limit: int) -> list[int]:
    """OpenCV's NMSFast_: candidates by score (stable, descending), the top_k
    first, each kept when its IoU with every kept box is <= threshold."""
    order = np.argsort(-scores, kind="stable")[:top_k] if top_k > -1 else np.argsort(-scores, kind="stable")
    areas = _sizes(boxes)
    kept: list[int] = []
    for index in order:
        if kept:
            others, box = boxes[kept], boxes[index]
            inner = np.concatenate([np.maximum(others[:, :2], box[:2]),
                                    np.minimum(others[:, 2:], box[2:])], axis=1)
            overlap = _sizes(inner)
            iou = np.where(overlap > 0, overlap / (areas[kept] + areas[index] - overlap), np.float32(0))
            if (iou > threshold).any():
                continue
        kept.append(int(index))
        if len(kept) >= limit:
            break
    return kept
