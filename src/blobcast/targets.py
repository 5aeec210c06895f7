"""What each runtime that still takes Caffe input accepts: one declarative
record per target (layer types, forbidden settings), checked against a net
by `inspect --target` and `convert --target`.

Sources: BVLC Caffe's registered layer classes (REGISTER_LAYER_CLASS at
master; tag 1.0 lacks Clip, Swish and Pooling's round_mode), OpenCV 4's
dnn/src/init.cpp against them, RKNN-Toolkit2 1.5.2's operator list, the TI
TIDL user guide's layer table (SDK 08_02) and HiSilicon NNIE's "Caffe 1.0
plus extension layers". A target's list is what its makers publish; a type
missing from it may still work there, and one on it may have limits of its
own (kernel sizes, batch one). Split is on every list: Caffe inserts Split
layers itself wherever a blob has several readers, and writes them into
its snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BlobcastError
from .model import Model

_TRAINING = frozenset({
    "Accuracy", "ContrastiveLoss", "Data", "DummyData", "EuclideanLoss", "HDF5Data", "HDF5Output",
    "HingeLoss", "ImageData", "InfogainLoss", "MemoryData", "MultinomialLogisticLoss",
    "SigmoidCrossEntropyLoss", "SoftmaxWithLoss", "WindowData"})

BVLC_TYPES = frozenset({
    "AbsVal", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip", "Concat", "Convolution",
    "Crop", "Deconvolution", "Dropout", "ELU", "Eltwise", "Embed", "Exp", "Filter", "Flatten", "Im2col",
    "InnerProduct", "Input", "LRN", "LSTM", "Log", "MVN", "PReLU", "Parameter", "Pooling",
    "Power", "Python", "RNN", "ReLU", "Reduction", "Reshape", "SPP", "Scale", "Sigmoid", "Silence",
    "Slice", "Softmax", "Split", "Swish", "TanH", "Threshold", "Tile"}) | _TRAINING

_OPENCV_LACKS = frozenset({
    "Bias", "ArgMax", "Clip", "Embed", "Filter", "Im2col", "Parameter", "RNN", "Reduction",
    "SPP", "Threshold", "BatchReindex", "Python", "Tile"})
_OPENCV_FORKS = frozenset({
    "ReLU6", "Permute", "PriorBox", "DetectionOutput", "Normalize", "ShuffleChannel", "ROIPooling",
    "PSROIPooling", "Interp", "ConvolutionDepthwise"})


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    types: frozenset
    # (layer type, settings message, field): settings the target's Caffe cannot read
    forbidden: tuple = field(default=())
    # Which of Upsample's meanings the target's Upsample has: "nearest" (the
    # YOLO forks'; one bottom) or "unpool" (SegNet's; data and pooling mask).
    upsample: str = "nearest"
    # "layer": Input layers; "net": only the net's own input/input_shape fields.
    inputs: str = "layer"


TARGETS = {target.name: target for target in (
    Target("caffe", "BVLC Caffe master", BVLC_TYPES),
    Target("caffe-1.0", "BVLC Caffe 1.0 (2017): no Clip, Swish or Pooling round_mode",
           BVLC_TYPES - {"Clip", "Swish"}, (("Pooling", "pooling_param", "round_mode"),)),
    # OpenCV's own caffe.proto has `optional bool ceil_mode = 13` where BVLC
    # has round_mode, and its text reader passes over round_mode unread.
    Target("opencv", "OpenCV 4 readNetFromCaffe (no Bias, ArgMax, Clip, Reduction, SPP, Threshold, "
           "Tile, ...; SSD and other fork layers; no Pooling round_mode)",
           (BVLC_TYPES - _OPENCV_LACKS - _TRAINING) | _OPENCV_FORKS,
           (("Pooling", "pooling_param", "round_mode"),)),
    Target("rknn", "Rockchip RKNN-Toolkit2 1.5.2", frozenset({
        "BatchNorm", "BNLL", "Concat", "Convolution", "ConvolutionDepthwise", "Crop", "Deconvolution",
        "Dropout", "Eltwise", "Flatten", "InnerProduct", "Input", "LRN", "Normalize", "Permute", "Power",
        "Pooling", "PReLU", "Reduction", "ReLU", "ReLU6", "Reshape", "ROIPooling", "Scale", "Sigmoid",
        "Slice", "Softmax", "Split", "TanH", "Tile", "Upsample"})),
    Target("nnie", "HiSilicon NNIE (Caffe 1.0 plus ROIPooling, Normalize, PSROIPooling, SegNet "
           "Upsample)", (BVLC_TYPES - {"Clip", "Swish"} - _TRAINING)
           | {"ROIPooling", "Normalize", "PSROIPooling", "Upsample"},
           (("Pooling", "pooling_param", "round_mode"),), upsample="unpool"),
    Target("ncsdk", "Intel Movidius NCSDK (its Caffe layer list; inputs only as the net's "
           "input/input_shape fields)", frozenset({
               "Bias", "ELU", "PReLU", "ReLU", "Scale", "Sigmoid", "TanH", "InnerProduct",
               "BatchNorm", "LRN", "Concat", "Eltwise", "Flatten", "Parameter", "Reshape", "Slice",
               "Softmax", "Convolution", "Deconvolution", "Pooling", "Split", "Dropout", "Input"}),
           inputs="net"),
    Target("tidl", "TI TIDL-RT (the user guide's named layers)", frozenset({
        "Input", "Convolution", "ConvolutionDepthwise", "Pooling", "ReLU", "Eltwise", "InnerProduct",
        "Softmax", "Bias", "Concat", "Scale", "BatchNorm", "ReLU6", "DetectionOutput", "ArgMax", "PReLU",
        "Slice", "Crop", "Flatten", "ShuffleChannel", "Split"})),
)}


def target_named(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BlobcastError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}") from None


_MEANINGS = {"nearest": "the YOLO forks' nearest one", "unpool": "SegNet's unpooling"}


def _upsample_kind(layer) -> str:
    return "unpool" if len(layer.bottoms) == 2 else "nearest"


def lower_for(model: Model, target: Target) -> list[str]:
    """Rewrite, in place, what the target lacks where an exact equivalent it
    takes exists; say what was rewritten.

    Clip(0, 6) and ReLU6 are one operation, min(max(x, 0), 6): OpenCV, RKNN,
    TIDL and the forks have ReLU6, BVLC Caffe has Clip, and Caffe 1.0 (NNIE)
    has neither, so there it becomes ReLU / Eltwise MAX / Power layers that
    compute it exactly. Swish (not in Caffe 1.0) becomes the Sigmoid and
    product its layer computes inside. The YOLO forks' nearest Upsample by
    whole factors (and Huawei's, which also multiplies) is a grouped
    Deconvolution whose kernel is the factor, filled with ones (or the
    multiplier). A target that reads inputs only as the net's input fields
    gets them so."""
    done = _ceil_mode_as_round_mode(model, target)
    done += _lower_floor_pooling(model, target) + _lower_channel_shuffles(model, target)
    shapes = None
    for layer in list(model.layers):
        if layer.type == "Swish" and layer.type not in target.types and \
                {"Sigmoid", "Eltwise", "Power"} <= target.types:
            _swish_as_sigmoid_product(model, layer)
            done.append(f"layer {layer.name!r}: Swish as Sigmoid and Eltwise PROD layers")
            continue
        clip = _clip_bounds(layer)
        if layer.type == "Upsample" and _upsample_kind(layer) == "nearest" and (
                "Upsample" not in target.types or target.upsample != "nearest") \
                and "Deconvolution" in target.types:
            if shapes is None:
                shapes = _known_shapes(model)
            if _upsample_as_deconvolution(layer, shapes):
                done.append(f"layer {layer.name!r}: nearest Upsample as a fixed Deconvolution")
        elif layer.type in target.types or clip is None:
            continue
        elif clip == (0.0, 6.0) and "ReLU6" in target.types:
            layer.spec.clear("clip_param")
            layer.type = "ReLU6"
            done.append(f"layer {layer.name!r}: Clip(0, 6) as ReLU6")
        elif "Clip" in target.types:
            layer.type = "Clip"
            settings = layer.spec.mutable("clip_param")
            settings.min, settings.max = clip
            done.append(f"layer {layer.name!r}: ReLU6 as Clip(0, 6)")
        elif {"ReLU", "Eltwise", "Power"} <= target.types:
            _clip_as_max_and_power(model, layer, clip)
            done.append(f"layer {layer.name!r}: {layer.type}({clip[0]:g}, {clip[1]:g}) as ReLU, "
                        "Eltwise MAX and Power layers")
    if target.inputs == "net" and not model.legacy_inputs:
        if _inputs_as_net_fields(model):
            done.append("the net's inputs as its input/input_shape fields")
    return done


_ROUND_MODE = ("Pooling", "pooling_param", "round_mode")


def _ceil_mode_as_round_mode(model: Model, target: Target) -> list[str]:
    """OpenCV's and other forks' `ceil_mode` is OpenCV's own field; every other
    target reads BVLC's round_mode (or, lacking it, gets FLOOR lowered next)."""
    if target.name == "opencv":
        return []
    done = []
    for layer in model.layers:
        if layer.type == "Pooling" and layer.spec.has("pooling_param") and \
                layer.spec.pooling_param.has("ceil_mode"):
            settings = layer.spec.pooling_param
            settings.round_mode = "CEIL" if settings.ceil_mode else "FLOOR"
            settings.clear("ceil_mode")
            done.append(f"layer {layer.name!r}: ceil_mode written as round_mode "
                        f"{settings.round_mode}")
    return done


def _lower_floor_pooling(model: Model, target: Target) -> list[str]:
    """Pooling with round_mode FLOOR, for a target that cannot read the
    field: where FLOOR and CEIL give the same size the field is dropped;
    else CEIL pooling, whose first windows are FLOOR's windows (same starts,
    same clipping, same AVE divisors), then a Slice that keeps those rows and
    columns and a Silence for the rest: the same values, exactly."""
    if _ROUND_MODE not in target.forbidden:
        return []
    done = []
    shapes = None
    for layer in list(model.layers):
        if layer.type != "Pooling" or not layer.spec.has("pooling_param") or \
                layer.spec.pooling_param.round_mode != "FLOOR":
            continue
        if shapes is None:
            shapes = _known_shapes(model)
        said = _floor_pool_as_ceil(model, layer, shapes.get(layer.bottoms[0]), target)
        if said:
            done.append(f"layer {layer.name!r}: {said}")
    return done


def _floor_pool_as_ceil(model: Model, layer, shape, target: Target) -> str | None:
    from .layers.pooling import pool_geometry, pooled_size
    from .model import Layer

    settings = layer.spec.pooling_param
    if shape is None or len(shape) != 4 or len(layer.tops) != 1:
        return None
    try:
        geometry = pool_geometry(settings, int(shape[2]), int(shape[3]))
    except ValueError:
        return None
    if geometry is None:  # global pooling: one window either way
        settings.clear("round_mode")
        return "round_mode dropped (global pooling)"
    kernel, stride, pad, floor_out = geometry
    ceil_out = [pooled_size(int(n), k, s, p, True)
                for n, k, s, p in zip(shape[2:], kernel, stride, pad)]
    if list(ceil_out) == list(floor_out):
        settings.clear("round_mode")
        return "round_mode FLOOR dropped (CEIL gives the same size)"
    if not {"Slice", "Silence"} <= target.types:
        return None
    settings.clear("round_mode")
    name, top = layer.name, layer.tops[0]
    source = f"{name}/ceil"
    layer.spec.top = [source]
    made, dropped = [], []
    cuts = [(axis, kept) for axis, kept, more in zip((2, 3), floor_out, ceil_out) if more > kept]
    for number, (axis, kept) in enumerate(cuts):
        output = top if number == len(cuts) - 1 else f"{name}/kept{axis}"
        dropped.append(f"{name}/overhang{axis}")
        made.append(Layer(f"{name}/keep{axis}", "Slice", bottoms=[source],
                          tops=[output, dropped[-1]],
                          slice_param={"axis": axis, "slice_point": [kept]}))
        source = output
    made.append(Layer(f"{name}/overhang", "Silence", bottoms=dropped))
    index = model.layers.index(layer)
    model.layers[index + 1:index + 1] = made
    return "FLOOR pooling as CEIL pooling and a Slice dropping the last window"


def _lower_channel_shuffles(model: Model, target: Target) -> list[str]:
    """ShuffleChannel (group g over C = g * n channels; out channel
    j * g + i is in channel i * n + j) for a target without it: a Slice into
    single channels and a Concat of them in the shuffled order, which moves
    the same values to the same places."""
    if "ShuffleChannel" in target.types or not {"Slice", "Concat"} <= target.types:
        return []
    from .model import Layer

    done, shapes = [], None
    for layer in list(model.layers):
        if layer.type != "ShuffleChannel" or len(layer.tops) != 1:
            continue
        if shapes is None:
            shapes = _known_shapes(model)
        shape = shapes.get(layer.bottoms[0])
        group = int(layer.spec.shuffle_channel_param.group) if \
            layer.spec.has("shuffle_channel_param") else 1
        if shape is None or len(shape) < 2 or group <= 0 or int(shape[1]) % group:
            continue
        channels, name = int(shape[1]), layer.name
        pieces = [f"{name}/channel{c}" for c in range(channels)]
        per_group = channels // group
        order = [pieces[i * per_group + j] for j in range(per_group) for i in range(group)]
        made = [Layer(f"{name}/split", "Slice", bottoms=list(layer.bottoms), tops=pieces,
                      slice_param={"axis": 1, "slice_point": list(range(1, channels))}),
                Layer(name, "Concat", bottoms=order, tops=list(layer.tops), concat_param={"axis": 1})]
        index = model.layers.index(layer)
        model.layers[index:index + 1] = made
        done.append(f"layer {name!r}: ShuffleChannel as a Slice into channels and a Concat")
    return done


def _clip_bounds(layer) -> tuple[float, float] | None:
    if layer.type == "ReLU6":
        return 0.0, 6.0
    if layer.type == "Clip" and layer.spec.has("clip_param"):
        return float(layer.spec.clip_param.min), float(layer.spec.clip_param.max)
    return None


def _clip_as_max_and_power(model: Model, layer, clip: tuple[float, float]) -> None:
    """min(max(x, lo), hi) from layers every Caffe has, exactly: max(x, lo)
    is ReLU when lo is 0, else Eltwise MAX with a blob of lo; min(y, hi) is
    -max(-y, -hi). Power with scale 0 fills its top with shift**power without
    reading its bottom's values, which makes the constant blobs; negation is
    exact."""
    from .model import Layer

    low, high = clip
    name, bottom, top = layer.name, layer.bottoms[0], layer.tops[0]

    def power(suffix, source, scale, shift, output=None):
        return Layer(f"{name}/{suffix}", "Power", bottoms=[source],
                     tops=[output or f"{name}/{suffix}"], power_param={"scale": scale, "shift": shift})

    if low == 0:
        first = [Layer(f"{name}/relu", "ReLU", bottoms=[bottom], tops=[f"{name}/relu"])]
    else:
        first = [power("low", bottom, 0.0, low),
                 Layer(f"{name}/max_low", "Eltwise", bottoms=[bottom, f"{name}/low"],
                       tops=[f"{name}/max_low"], eltwise_param={"operation": "MAX"})]
    lifted = first[-1].tops[0]
    rest = [power("negated", lifted, -1.0, 0.0),
            power("minus_high", lifted, 0.0, -high),
            Layer(f"{name}/max", "Eltwise", bottoms=[f"{name}/negated", f"{name}/minus_high"],
                  tops=[f"{name}/max"], eltwise_param={"operation": "MAX"}),
            power("out", f"{name}/max", -1.0, 0.0, output=top)]
    rest[-1].name = name  # the last layer keeps the name and the top
    index = model.layers.index(layer)
    model.layers[index:index + 1] = first + rest


def _swish_as_sigmoid_product(model: Model, layer) -> None:
    """x * sigmoid(beta * x) as Caffe's SwishLayer computes it (an inner
    Sigmoid layer on beta * x, then the product), from Caffe 1.0's layers."""
    from .model import Layer

    name, bottom, top = layer.name, layer.bottoms[0], layer.tops[0]
    beta = float(layer.spec.swish_param.beta) if layer.spec.has("swish_param") else 1.0
    made = []
    source = bottom
    if beta != 1.0:
        made.append(Layer(f"{name}/scaled", "Power", bottoms=[bottom], tops=[f"{name}/scaled"],
                          power_param={"scale": beta}))
        source = f"{name}/scaled"
    made.append(Layer(f"{name}/sigmoid", "Sigmoid", bottoms=[source], tops=[f"{name}/sigmoid"]))
    made.append(Layer(name, "Eltwise", bottoms=[bottom, f"{name}/sigmoid"], tops=[top],
                      eltwise_param={"operation": "PROD"}))
    index = model.layers.index(layer)
    model.layers[index:index + 1] = made


def _inputs_as_net_fields(model: Model) -> bool:
    """The Input layers as one layer named as Caffe's upgrade names the net's
    input fields, written back as those fields (Model.legacy_inputs)."""
    inputs = [layer for layer in model.layers if layer.type == "Input"]
    if not inputs:
        return False
    from .model import Layer

    merged = Layer("input", "Input", tops=[top for layer in inputs for top in layer.tops])
    shapes = merged.spec.mutable("input_param").shape
    for layer in inputs:
        given = list(layer.spec.input_param.shape) if layer.spec.has("input_param") else []
        for i in range(len(layer.tops)):
            shape = given[i] if i < len(given) else (given[0] if len(given) == 1 else None)
            if shape is None:
                raise BlobcastError(f"input {layer.tops[i]!r} has no shape; the net's "
                                    "input_shape needs one (give --input NAME=SHAPE)")
            shapes.add(dim=list(shape.dim))
    model.layers = [merged] + [layer for layer in model.layers if layer.type != "Input"]
    model.legacy_inputs = True
    return True


def target_problems(model: Model, target: Target) -> list[str]:
    """Every layer of the net that the target cannot take, and why."""
    problems = []
    for layer in model.layers:
        if layer.type not in target.types:
            problems.append(f"layer {layer.name!r}: {target.name} has no {layer.type} layer")
            continue
        kind = _upsample_kind(layer) if layer.type == "Upsample" else None
        if kind is not None and kind != target.upsample:
            problems.append(f"layer {layer.name!r}: {target.name}'s Upsample is "
                            f"{_MEANINGS[target.upsample]}; this one is {_MEANINGS[kind]}")
        if layer.type == "Input" and target.inputs == "net" and not model.legacy_inputs:
            problems.append(f"layer {layer.name!r}: {target.name} reads inputs only as the net's "
                            "input/input_shape fields (convert --target writes them so)")
        for kind, message, setting in target.forbidden:
            if layer.type == kind and layer.spec.has(message) and getattr(layer.spec, message).has(setting):
                problems.append(f"layer {layer.name!r} ({kind}): {target.name} cannot read "
                                f"{message}.{setting}")
    return problems



def _known_shapes(model: Model) -> dict:
    from .shapes import known_shapes  # imported on use: the command line lists targets at start

    return known_shapes(model)


def _upsample_as_deconvolution(layer, shapes: dict) -> bool:
    import numpy as np

    from .layers.base import implementation
    from .model import Blob

    shape = shapes.get(layer.bottoms[0])
    op = implementation("Upsample", layer.name)(layer, np, [], "TEST")
    try:
        if shape is None or len(shape) != 4 or op.unpools():
            return False
        scale_h, scale_w = op.scales()
        multiplier = op.multiplier()
    except BlobcastError:
        return False
    channels = int(shape[1])
    for name in layer.spec.present_fields():
        if name.endswith("_param"):
            layer.spec.clear(name)
    layer.type = "Deconvolution"
    settings = layer.spec.mutable("convolution_param")
    settings.num_output, settings.group, settings.bias_term = channels, channels, False
    settings.kernel_h, settings.kernel_w = scale_h, scale_w
    settings.stride_h, settings.stride_w = scale_h, scale_w
    layer.blobs = [Blob(np.full((channels, 1, scale_h, scale_w), multiplier, np.float32))]
    return True
