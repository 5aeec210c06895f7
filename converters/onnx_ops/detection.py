"""Detection layers in standard ONNX ops: SSD's PriorBox (one constant, the
shapes being fixed), Faster R-CNN's Proposal, and SSD's DetectionOutput as
one model-local function: box decoding, per-class NonMaxSuppression after the fork's top_k
pre-selection, keep_top_k across classes, and the fork's output rows.

Exact where the fork's rules allow: NonMaxSuppression takes scores strictly
above the threshold, suppresses strictly above the overlap and breaks ties
by the lower index, as the fork does; it has no adaptive threshold, so a
layer with eta < 1 is written as a custom-domain node instead.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .registry import ExportError, NoStandardForm, exporter

_FLT_MAX = float(np.finfo(np.float32).max)


class NodeSteps:
    """Names the nodes of one layer's decomposition: <layer>/<step>."""

    def __init__(self, g, layer):
        self.g, self.layer = g, layer

    def __call__(self, op, inputs, step, **attributes):
        name = f"{self.layer.name}/{step}"
        return self.g.node(op, inputs, [name], name, **attributes)

    def const(self, values, dtype=np.float32, role="c"):
        return self.g.constant(self.layer.name, values, dtype, role)

    def columns(self, data, start, end, step):
        """data[..., start:end]"""
        return self(
            "Slice", [data, self.const([start], np.int64, "start"), self.const([end], np.int64, "end"),
                      self.const([-1], np.int64, "axes")], step)


def _decode(s, layer, priors, variances, loc):
    """DecodeBBox for [B, P, 4] offsets against [P, 4] priors, in the order
    of the engine's float32 arithmetic (detection.decode_boxes)."""
    p = layer.type_params
    scaled = loc if p.variance_encoded_in_target else s("Mul", [variances, loc], "scaled")
    if p.code_type == "CORNER":
        return s("Add", [priors, scaled], "boxes")
    x0, y0 = s.columns(priors, 0, 1, "px0"), s.columns(priors, 1, 2, "py0")
    x1, y1 = s.columns(priors, 2, 3, "px1"), s.columns(priors, 3, 4, "py1")
    width, height = s("Sub", [x1, x0], "pw"), s("Sub", [y1, y0], "ph")
    sizes = s("Concat", [width, height], "sizes", axis=-1)
    if p.code_type == "CORNER_SIZE":
        scale = s("Concat", [sizes, sizes], "size_scale", axis=-1)
        return s("Add", [priors, s("Mul", [scaled, scale], "offsets")], "boxes")
    two = s.const(np.float32(2), role="two")
    centres = s("Concat", [s("Div", [s("Add", [x0, x1], "pcx_sum"), two], "pcx"),
                           s("Div", [s("Add", [y0, y1], "pcy_sum"), two], "pcy")], "centres", axis=-1)
    centre = s("Add", [s("Mul", [s.columns(scaled, 0, 2, "centre_offsets"), sizes], "centre_shift"),
                       centres], "centre")
    size = s("Mul", [s("Exp", [s.columns(scaled, 2, 4, "size_logs")], "size_factors"), sizes], "size")
    half = s("Div", [size, two], "half")
    return s("Concat", [s("Sub", [centre, half], "corner0"), s("Add", [centre, half], "corner1")],
             "boxes", axis=-1)


@exporter("DetectionOutput", as_function=True)
def export_detection_output(g, layer, ins, outs):
    p, nms = layer.type_params, layer.type_params.nms_param
    if nms.eta != 1:
        raise NoStandardForm(f"eta {nms.eta:g} (adaptive NMS)")
    if p.share_location and p.background_label_id == -1:
        raise ExportError(f"layer {layer.name!r}: background_label_id -1 needs share_location false")
    s = NodeSteps(g, layer)
    classes = p.num_classes
    prior_shape = g.shape(layer.bottoms[2])
    count = prior_shape[2] // 4
    locations = 1 if p.share_location else classes
    loc, conf, priors = (s("Cast", [name], f"{role}_f32", to=TensorProto.FLOAT)
                         for name, role in zip(ins[:3], ("loc", "conf", "priors")))
    # priors [1, 2, P*4]: boxes, then variances (none: ones)
    stacked = s("Reshape", [priors, s.const([prior_shape[1], count, 4], np.int64, "prior_shape")],
                "prior_rows")
    prior_boxes = s("Gather", [stacked, s.const(0, np.int64, "first")], "prior_boxes", axis=0)
    variances = (s("Gather", [stacked, s.const(1, np.int64, "second")], "variances", axis=0)
                 if prior_shape[1] > 1 else s.const(np.ones((count, 4), np.float32), role="variances"))
    # loc [N, P*L*4] -> one row of boxes per (image, location class): [N*L, P, 4]
    offsets = s("Reshape", [loc, s.const([-1, count, locations, 4], np.int64, "loc_shape")], "loc_rows")
    offsets = s("Transpose", [offsets], "loc_by_class", perm=[0, 2, 1, 3])
    offsets = s("Reshape", [offsets, s.const([-1, count, 4], np.int64, "box_shape")], "loc_offsets")
    boxes = _decode(s, layer, prior_boxes, variances, offsets)
    # conf [N, P*C] -> [N, C, P] (shared boxes) or [N*C, 1, P] (a box set per class)
    scores = s("Transpose", [s("Reshape", [conf, s.const([-1, count, classes], np.int64, "conf_shape")],
                               "conf_rows")], "class_scores", perm=[0, 2, 1])
    skipped = np.zeros((1, classes, 1), bool)
    if 0 <= p.background_label_id < classes:
        skipped[0, p.background_label_id] = True
    minus_inf = s.const(np.float32(-np.inf), role="minus_inf")
    scores = s("Where", [s.const(skipped, bool, "background"), minus_inf, scores], "candidates")
    if not p.share_location:
        scores = s("Reshape", [scores, s.const([-1, 1, count], np.int64, "score_shape")], "class_rows")
    top_k = nms.top_k if nms.has("top_k") else -1
    if 0 <= top_k < count:  # the fork's candidates: the top_k best, ties to the lower index
        if top_k == 0:
            scores = s("Expand", [minus_inf, s("Shape", [scores], "score_dims")], "none")
        else:
            _, best = g.node("TopK", [scores, s.const([top_k], np.int64, "top_k")],
                             [f"{layer.name}/best_scores", f"{layer.name}/best"], f"{layer.name}/top_k",
                             axis=-1, largest=1, sorted=1)
            ones = s("ConstantOfShape", [s("Shape", [best], "best_shape")], "ones",
                     value=helper.make_tensor("one", TensorProto.BOOL, [1], [True]))
            zeros = s("ConstantOfShape", [s("Shape", [scores], "score_dims")], "zeros",
                      value=helper.make_tensor("zero", TensorProto.BOOL, [1], [False]))
            chosen = s("ScatterElements", [zeros, best, ones], "chosen", axis=-1)
            scores = s("Where", [chosen, scores, minus_inf], "top_scores")
    threshold = p.confidence_threshold if p.has("confidence_threshold") else -_FLT_MAX
    # The fork gives an inverted box no overlap with anything; NonMaxSuppression
    # would sort its corners. As a point it overlaps nothing there either.
    lower, upper = s.columns(boxes, 0, 2, "lower_corner"), s.columns(boxes, 2, 4, "upper_corner")
    inverted = s("ReduceMax", [s("Cast", [s("Less", [upper, lower], "inverted_sides")], "inverted_flags",
                                 to=TensorProto.INT32), s.const([-1], np.int64, "side_axis")],
                 "inverted", keepdims=1)
    points = s("Concat", [lower, lower], "points", axis=-1)
    overlap_boxes = s("Where", [s("Cast", [inverted], "is_inverted", to=TensorProto.BOOL), points, boxes],
                      "overlap_boxes")
    selected = s("NonMaxSuppression", [overlap_boxes, scores, s.const([count], np.int64, "max_boxes"),
                                       s.const([nms.nms_threshold], np.float32, "iou"),
                                       s.const([threshold], np.float32, "threshold")], "selected")
    # rows of `selected`: (box set, class, prior), batch then class ascending, score descending
    score = s("GatherND", [scores, selected], "score")
    box_index = s("Gather", [selected, s.const([0, 2], np.int64, "box_columns")], "box_index", axis=1)
    box = s("GatherND", [boxes, box_index], "box")
    first = s("Gather", [selected, s.const(0, np.int64, "set_column")], "set", axis=1)
    if p.share_location:
        image = first
        label = s("Gather", [selected, s.const(1, np.int64, "class_column")], "label", axis=1)
    else:
        width = s.const(classes, np.int64, "classes")
        image, label = s("Div", [first, width], "image"), s("Mod", [first, width], "label")
    image_f = s("Cast", [s("Unsqueeze", [image, s.const([1], np.int64, "column")], "image_column")],
                "image_value", to=TensorProto.FLOAT)
    label_f = s("Cast", [s("Unsqueeze", [label, s.const([1], np.int64, "column")], "label_column")],
                "label_value", to=TensorProto.FLOAT)
    score_f = s("Unsqueeze", [score, s.const([1], np.int64, "column")], "score_column")
    rows = s("Concat", [image_f, label_f, score_f, box], "rows", axis=1)
    if p.keep_top_k > -1:
        single = not g.dynamic_batch and g.shape(layer.bottoms[0])[0] == 1
        rows = (_keep_top_k_of_one(s, rows, score, p.keep_top_k) if single
                else _keep_top_k(s, rows, image, score, p.keep_top_k))
    # nothing kept in any image: one row (image, -1, ...) per image
    batch = s("Shape", [loc], "batch", start=0, end=1)
    numbers = s("Range", [s.const(0, np.int64, "zero"), s("Squeeze", [batch], "batch_size"),
                          s.const(1, np.int64, "one")], "image_numbers")
    empty = s("Concat", [s("Cast", [s("Unsqueeze", [numbers, s.const([1], np.int64, "column")],
                                      "number_column")], "number_value", to=TensorProto.FLOAT),
                         s("Expand", [s.const(np.full((1, 6), -1, np.float32), role="nothing"),
                                      s("Concat", [batch, s.const([6], np.int64, "six")],
                                        "empty_shape", axis=0)], "empty_values")],
                "empty_rows", axis=1)
    kept = s("Shape", [rows], "kept", start=0, end=1)
    none_kept = s("Cast", [s("Equal", [kept, s.const([0], np.int64, "zero_rows")], "none_kept")],
                  "none_kept_count", to=TensorProto.INT64)
    end = s("Add", [kept, s("Mul", [none_kept, batch], "fallback")], "end")
    chosen_rows = s("Slice", [s("Concat", [rows, empty], "all_rows", axis=0),
                              s.const([0], np.int64, "start"), end, s.const([0], np.int64, "axis")],
                    "output_rows")
    result = s("Reshape", [chosen_rows, s.const([1, 1, -1, 7], np.int64, "layout")], "detections")
    g.node("Cast", [result], outs, layer.name, to=TensorProto.FLOAT if g.dtype == np.float32
           else TensorProto.DOUBLE)


def _keep_top_k_of_one(s, rows, score, keep):
    """One image: the keep best rows (ties to the earlier row, as TopK and the
    engine's stable sort do), back in their order."""
    count = s("Shape", [score], "row_count")
    k = s("Min", [count, s.const([keep], np.int64, "keep_top_k")], "kept_count")
    _, best = s.g.node("TopK", [score, k], [f"{s.layer.name}/kept_scores", f"{s.layer.name}/kept_rows_at"],
                       f"{s.layer.name}/keep_top_k", axis=0, largest=1, sorted=1)
    in_order, _ = s.g.node("TopK", [best, k], [f"{s.layer.name}/kept_in_order",
                                               f"{s.layer.name}/kept_order"],
                           f"{s.layer.name}/restore_order", axis=0, largest=0, sorted=1)
    return s("Gather", [rows, in_order], "kept_rows", axis=0)


def _keep_top_k(s, rows, image, score, keep):
    """The keep best rows of each image, in their order: a row's rank counts
    the rows of its image with a higher score, or an equal score earlier
    (as the engine's stable sort; the fork's std::sort is unstable). K rows
    take K^2 booleans; a batch of one takes the TopK path instead."""
    column = s.const([1], np.int64, "column")
    as_column = s("Unsqueeze", [score, column], "score_rank_column")
    as_row = s("Unsqueeze", [score, s.const([0], np.int64, "row")], "score_rank_row")
    same_image = s("Equal", [s("Unsqueeze", [image, column], "image_rank_column"),
                             s("Unsqueeze", [image, s.const([0], np.int64, "row")], "image_rank_row")],
                   "same_image")
    higher = s("Greater", [as_row, as_column], "higher")
    positions = s("Range", [s.const(0, np.int64, "zero"),
                            s("Squeeze", [s("Shape", [score], "count")], "count_value"),
                            s.const(1, np.int64, "one")], "positions")
    earlier = s("Less", [s("Unsqueeze", [positions, s.const([0], np.int64, "row")], "position_row"),
                         s("Unsqueeze", [positions, column], "position_column")], "earlier")
    tie = s("And", [s("Equal", [as_row, as_column], "equal"), earlier], "tie_before")
    ahead = s("And", [same_image, s("Or", [higher, tie], "better")], "ahead")
    rank = s("ReduceSum", [s("Cast", [ahead], "ahead_count", to=TensorProto.INT64),
                           s.const([1], np.int64, "rank_axis")], "rank", keepdims=0)
    keep_row = s("Less", [rank, s.const(keep, np.int64, "keep_top_k")], "keep")
    return s("Compress", [rows, keep_row], "kept_rows", axis=0)



@exporter("Proposal")
def export_proposal(g, layer, ins, outs):
    """OpenCV's Proposal measures IoU and box sizes with + 1 (pixel boxes);
    NonMaxSuppression does not: no exact standard form."""
    raise NoStandardForm(f"layer {layer.name!r}: Proposal's pixel IoU (sizes + 1) has no exact "
                         "NonMaxSuppression form")


@exporter("PriorBox", as_function=True)
def export_prior_box(g, layer, ins, outs):
    # The boxes depend on the shapes alone: with the input shapes fixed, one constant.
    from blobcast.layers import LAYER_TYPES

    op = LAYER_TYPES["PriorBox"](layer, np, [], "TEST")
    boxes, variances = op.boxes(g.shape(layer.bottoms[0]), g.shape(layer.bottoms[1]))
    values = np.stack([boxes.reshape(-1), variances.reshape(-1)]).reshape(1, 2, -1)
    g.node("Identity", [g.constant(layer.name, values.astype(g.dtype), role="priors")], outs, layer.name)
