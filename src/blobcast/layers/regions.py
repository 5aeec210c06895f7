"""Pooling over regions of interest: Fast R-CNN's ROIPooling (max per bin)
and R-FCN's position-sensitive PSROIPooling (average per bin, each bin from
its own channel group), in the forks' float32 arithmetic.

Bottoms: the features [N, C, H, W] and the ROIs [R, 5] (or [R, 5, 1, 1]),
each row (image, x1, y1, x2, y2) in input-image coordinates. ROIs are few
and data-dependent, so the bins are found on the host; the pooling runs on
the array module.
"""

from __future__ import annotations

import numpy as np

from .base import LayerOp, register

_f32 = np.float32
# The bins are visited one by one on the host: past this many (ROIs x bins) a
# file could keep blobcast busy for hours, so such a layer is refused.
MAX_BINS = 2_000_000


def c_round(values):
    """C's round: halves away from zero (numpy rounds them to even)."""
    values = np.asarray(values, np.float32)
    return (np.sign(values) * np.floor(np.abs(values) + _f32(0.5))).astype(np.float32)


class _RegionPooling(LayerOp):
    def _rois(self, rois, features_shape):
        host = rois.get() if hasattr(rois, "get") else np.asarray(rois)
        host = host.reshape(host.shape[0], -1).astype(np.float32)
        if host.shape[1] != 5:
            raise self.fail(f"takes ROIs as rows of 5 (image, x1, y1, x2, y2), got {list(rois.shape)}")
        images = host[:, 0].astype(np.int64)
        if images.size and (images.min() < 0 or images.max() >= features_shape[0]):
            raise self.fail(f"an ROI names image {int(images.max())} of a batch of {features_shape[0]}")
        return host, images

    def values_needed(self, shapes):
        (top,) = self.top_shapes(shapes)
        return int(np.prod(top)) + 2 * int(np.prod(shapes[1]))

    def forward(self, features, rois):
        (top,) = self.top_shapes([features.shape, rois.shape])
        if top[0] * top[2] * top[3] > MAX_BINS:
            raise self.fail(f"{top[0]} ROIs of {top[2]}x{top[3]} bins are more than the "
                            f"{MAX_BINS} bins blobcast pools")
        host, images = self._rois(rois, features.shape)
        (h0, h1), (w0, w1) = self.bins(host, *features.shape[2:])
        source = self.source(features, top)
        out = self.xp.zeros(top, features.dtype)
        for r in range(top[0]):
            for i in range(top[2]):
                for j in range(top[3]):
                    if h1[r, i] > h0[r, i] and w1[r, j] > w0[r, j]:  # an empty bin stays 0
                        rows, cols = slice(h0[r, i], h1[r, i]), slice(w0[r, j], w1[r, j])
                        out[r, :, i, j] = self.pool(source, images[r], i, j, rows, cols)
        return (out,)

    def _check_shapes(self, shapes):
        features, rois = (tuple(shape) for shape in shapes)
        if len(features) != 4 or len(rois) < 2 or int(np.prod(rois[1:])) != 5:
            raise self.fail(f"takes features [N, C, H, W] and ROIs [R, 5], got {list(features)}, "
                            f"{list(rois)}")
        return features, rois


@register("ROIPooling", settings="roi_pooling_param",
          key_settings=("pooled_h", "pooled_w", "spatial_scale"), bottoms=(2, 2))
class ROIPooling(_RegionPooling):
    """roi_pooling_layer.cpp: corners rounded after scaling, bins of
    max(end - start + 1, 1) / pooled cells, floor/ceil bin edges clamped to
    the map; the bin's maximum, 0 for an empty bin."""

    origin = 'Fast/Faster R-CNN (rbgirshick)'
    exactness = "the fork's loop; OpenCV and onnxruntime agree exactly"

    def top_shapes(self, shapes):
        features, rois = self._check_shapes(shapes)
        p = self.params
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise self.fail("pooled_h and pooled_w must be positive")
        return [(rois[0], features[1], p.pooled_h, p.pooled_w)]

    def bins(self, rois_host, height: int, width: int):
        """[R, pooled, 2] start/end rows and columns of every bin."""
        p, scale = self.params, _f32(self.params.spatial_scale)
        start_w, start_h = c_round(rois_host[:, 1] * scale), c_round(rois_host[:, 2] * scale)
        end_w, end_h = c_round(rois_host[:, 3] * scale), c_round(rois_host[:, 4] * scale)
        edges = []
        for start, end, pooled, limit in ((start_h, end_h, p.pooled_h, height),
                                          (start_w, end_w, p.pooled_w, width)):
            size = np.maximum(end - start + 1, 1).astype(np.float32)
            step = size / _f32(pooled)
            cells = np.arange(pooled, dtype=np.float32)
            offset = start[:, None].astype(np.int64)
            low = np.floor(cells[None, :] * step[:, None]).astype(np.int64) + offset
            high = np.ceil((cells[None, :] + 1) * step[:, None]).astype(np.int64) + offset
            edges.append((np.clip(low, 0, limit), np.clip(high, 0, limit)))
        return edges

    def source(self, features, top):
        return features

    def pool(self, features, image, i, j, rows, cols):
        return features[image, :, rows, cols].max(axis=(1, 2))


@register("PSROIPooling", settings="psroi_pooling_param",
          key_settings=("output_dim", "group_size", "spatial_scale"), bottoms=(2, 2))
class PSROIPooling(_RegionPooling):
    """psroi_pooling_layer.cu (the fork has no CPU version): corners rounded
    before scaling (the end one past the corner), bins of max(size, 0.1) /
    group_size with floor/ceil edges clamped to the map; output channel k's
    bin (i, j) averages input channel (k * G + i) * G + j; 0 for an empty bin."""

    origin = 'R-FCN (daijifeng001)'
    exactness = "the fork's CUDA kernel written out (the fork has no CPU version)"

    def top_shapes(self, shapes):
        features, rois = self._check_shapes(shapes)
        p = self.params
        group = p.group_size
        if group <= 0 or p.output_dim <= 0 or features[1] != p.output_dim * group * group:
            raise self.fail(f"{features[1]} channels are not output_dim x group_size^2 = "
                            f"{p.output_dim} x {group}^2")
        return [(rois[0], p.output_dim, group, group)]

    def bins(self, rois_host, height: int, width: int):
        p, scale = self.params, _f32(self.params.spatial_scale)
        group = p.group_size
        edges = []
        for first, last, limit in ((2, 4, height), (1, 3, width)):
            start = c_round(rois_host[:, first]) * scale
            end = (c_round(rois_host[:, last]) + _f32(1)) * scale
            step = np.maximum(end - start, _f32(0.1)) / _f32(group)
            cells = np.arange(group, dtype=np.float32)
            low = np.floor(cells[None, :] * step[:, None] + start[:, None]).astype(np.int64)
            high = np.ceil((cells[None, :] + 1) * step[:, None] + start[:, None]).astype(np.int64)
            edges.append((np.clip(low, 0, limit), np.clip(high, 0, limit)))
        return edges

    def source(self, features, top):
        group = self.params.group_size
        return features.reshape(features.shape[0], top[1], group, group, *features.shape[2:])

    def pool(self, grouped, image, i, j, rows, cols):
        area = (rows.stop - rows.start) * (cols.stop - cols.start)
        return grouped[image, :, i, j, rows, cols].sum(axis=(1, 2)) / grouped.dtype.type(area)
