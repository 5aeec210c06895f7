"""Proposal: Faster R-CNN's region proposals, as OpenCV's proposal_layer.cpp
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

import numpy as np

from .base import LayerOp, register


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
