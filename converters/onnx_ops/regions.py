"""ONNX export of pooling over regions of interest: Fast R-CNN's ROIPooling
as MaxRoiPool, R-FCN's PSROIPooling as averages from a summed-area table;
each a model-local function."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .detection import NodeSteps
from .registry import NEWEST_OPSET, NoStandardForm, exporter


def _rois_as_rows(s, name):
    return s("Reshape", [name, s.const([-1, 5], np.int64, "roi_rows")], "rois")


@exporter("ROIPooling", as_function=True, newest_opset=21)
def export_roi_pooling(g, layer, ins, outs):
    # MaxRoiPool is Fast R-CNN's layer: corners rounded after scaling, max per bin.
    s, p = NodeSteps(g, layer), layer.type_params
    if g.opset > NEWEST_OPSET["ROIPooling"]:
        raise NoStandardForm(f"onnxruntime has no MaxRoiPool for opset {g.opset}; --opset 21 writes it")
    g.node(
        "MaxRoiPool",
        [ins[0], _rois_as_rows(s, ins[1])],
        outs,
        layer.name,
        pooled_shape=[p.pooled_h, p.pooled_w],
        spatial_scale=float(p.spatial_scale),
    )


def _c_round(s, values, step):
    """C's round (halves away from zero); ONNX's Round goes to even."""
    magnitude = s(
        "Floor",
        [
            s(
                "Add",
                [s("Abs", [values], f"{step}_abs"), s.const(np.float32(0.5), role="half")],
                f"{step}_shifted",
            )
        ],
        f"{step}_floor",
    )
    return s("Mul", [s("Sign", [values], f"{step}_sign"), magnitude], step)


@exporter("PSROIPooling", as_function=True)
def export_psroi_pooling(g, layer, ins, outs):
    # Each bin's sum from a summed-area table in float64 (four corners per bin),
    # so bins whose edges depend on the ROIs need no loop.
    s, p = NodeSteps(g, layer), layer.type_params
    n, channels, height, width = g.shape(layer.bottoms[0])
    group, dim = p.group_size, p.output_dim
    rois = _rois_as_rows(s, s("Cast", [ins[1]], "rois_f32", to=TensorProto.FLOAT))
    column = lambda index, step: s("Gather", [rois, s.const(index, np.int64, "roi_column")], step, axis=1)  # noqa: E731
    cells = s.const(np.arange(group, dtype=np.float32).reshape(1, group), role="cells")
    next_cells = s.const(np.arange(1, group + 1, dtype=np.float32).reshape(1, group), role="next_cells")
    scale = s.const(np.float32(p.spatial_scale), role="spatial_scale")
    one, tenth = s.const(np.float32(1), role="one"), s.const(np.float32(0.1), role="tenth")
    edges = {}
    for axis, first, last, limit in (("h", 2, 4, height), ("w", 1, 3, width)):
        start = s(
            "Mul",
            [_c_round(s, column(first, f"{axis}_first"), f"{axis}_start_round"), scale],
            f"{axis}_start",
        )
        end = s(
            "Mul",
            [
                s(
                    "Add",
                    [_c_round(s, column(last, f"{axis}_last"), f"{axis}_end_round"), one],
                    f"{axis}_end_past",
                ),
                scale,
            ],
            f"{axis}_end",
        )
        size = s("Max", [s("Sub", [end, start], f"{axis}_extent"), tenth], f"{axis}_size")
        step = s(
            "Unsqueeze",
            [
                s("Div", [size, s.const(np.float32(group), role="group")], f"{axis}_step_flat"),
                s.const([1], np.int64, "axis1"),
            ],
            f"{axis}_step",
        )
        start = s("Unsqueeze", [start, s.const([1], np.int64, "axis1")], f"{axis}_start_column")
        bounds = []
        for name, op, factors in (("low", "Floor", cells), ("high", "Ceil", next_cells)):
            edge = s(
                op,
                [
                    s(
                        "Add",
                        [s("Mul", [factors, step], f"{axis}_{name}_offset"), start],
                        f"{axis}_{name}_real",
                    )
                ],
                f"{axis}_{name}_edge",
            )
            edge = s(
                "Clip",
                [edge, s.const(np.float32(0), role="zero"), s.const(np.float32(limit), role="limit")],
                f"{axis}_{name}_clipped",
            )
            bounds.append(s("Cast", [edge], f"{axis}_{name}", to=TensorProto.INT64))  # [R, G]
        edges[axis] = bounds
    # summed-area table [N, C, H+1, W+1] in float64
    table = s("Cast", [ins[0]], "features_f64", to=TensorProto.DOUBLE)
    table = s(
        "CumSum",
        [
            s("CumSum", [table, s.const(2, np.int64, "rows_axis")], "row_sums"),
            s.const(3, np.int64, "cols_axis"),
        ],
        "area_sums",
    )
    table = s("Pad", [table, s.const([0, 0, 1, 1, 0, 0, 0, 0], np.int64, "table_pads")], "table")
    images = s("Cast", [column(0, "image_real")], "images", to=TensorProto.INT64)
    count = s("Shape", [rois], "roi_count", start=0, end=1)
    target = s(
        "Concat", [count, s.const([dim, group, group, 1], np.int64, "index_dims")], "index_shape", axis=0
    )

    def spread(values, shape, step):  # a component of the index, broadcast to [R, K, G, G, 1]
        return s(
            "Expand",
            [s("Reshape", [values, s.const(shape, np.int64, f"{step}_shape")], f"{step}_placed"), target],
            step,
        )

    image = spread(images, [-1, 1, 1, 1, 1], "index_image")
    channel = spread(
        s.const(
            (
                np.arange(dim)[:, None, None] * group * group
                + np.arange(group)[None, :, None] * group
                + np.arange(group)[None, None, :]
            ).astype(np.int64),
            np.int64,
            "channels",
        ),
        [1, dim, group, group, 1],
        "index_channel",
    )
    rows = [spread(edge, [-1, 1, group, 1, 1], f"index_h{k}") for k, edge in enumerate(edges["h"])]
    cols = [spread(edge, [-1, 1, 1, group, 1], f"index_w{k}") for k, edge in enumerate(edges["w"])]
    corner = {}
    for a in (0, 1):
        for b in (0, 1):
            index = s("Concat", [image, channel, rows[a], cols[b]], f"corner{a}{b}_index", axis=-1)
            corner[a, b] = s("GatherND", [table, index], f"corner{a}{b}")
    total = s(
        "Add",
        [
            s("Sub", [s("Sub", [corner[1, 1], corner[0, 1]], "sum_upper"), corner[1, 0]], "sum_lower"),
            corner[0, 0],
        ],
        "bin_sums",
    )  # [R, K, G, G]
    heights = s("Sub", [edges["h"][1], edges["h"][0]], "bin_heights")
    widths = s("Sub", [edges["w"][1], edges["w"][0]], "bin_widths")
    heights = s(
        "Reshape", [heights, s.const([-1, 1, group, 1], np.int64, "heights_shape")], "bin_heights_placed"
    )
    widths = s("Reshape", [widths, s.const([-1, 1, 1, group], np.int64, "widths_shape")], "bin_widths_placed")
    zero = s.const(0, np.int64, "zero_cells")
    empty = s(
        "Or",
        [s("LessOrEqual", [heights, zero], "no_height"), s("LessOrEqual", [widths, zero], "no_width")],
        "empty",
    )
    area = s("Cast", [s("Mul", [heights, widths], "cells")], "bin_area", to=TensorProto.DOUBLE)
    safe = s("Where", [empty, s.const(np.float64(1), np.float64, "unit"), area], "safe_area")
    mean = s(
        "Where",
        [empty, s.const(np.float64(0), np.float64, "nothing"), s("Div", [total, safe], "means")],
        "bin_means",
    )
    g.node(
        "Cast",
        [mean],
        outs,
        layer.name,
        to=TensorProto.FLOAT if g.dtype == np.float32 else TensorProto.DOUBLE,
    )
