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


TARGETS = {target.name: target for target in (
    Target("caffe", "BVLC Caffe master", BVLC_TYPES),
    Target("caffe-1.0", "BVLC Caffe 1.0 (2017): no Clip, Swish or Pooling round_mode",
           BVLC_TYPES - {"Clip", "Swish"}, (("Pooling", "pooling_param", "round_mode"),)),
    Target("opencv", "OpenCV 4 readNetFromCaffe (no Bias, ArgMax, Clip, Reduction, SPP, Threshold, "
           "Tile, ...; SSD and other fork layers)",
           (BVLC_TYPES - _OPENCV_LACKS - _TRAINING) | _OPENCV_FORKS),
    Target("rknn", "Rockchip RKNN-Toolkit2 1.5.2", frozenset({
        "BatchNorm", "BNLL", "Concat", "Convolution", "ConvolutionDepthwise", "Crop", "Deconvolution",
        "Dropout", "Eltwise", "Flatten", "InnerProduct", "Input", "LRN", "Normalize", "Permute", "Power",
        "Pooling", "PReLU", "Reduction", "ReLU", "ReLU6", "Reshape", "ROIPooling", "Scale", "Sigmoid",
        "Slice", "Softmax", "Split", "TanH", "Tile", "Upsample"})),
    Target("nnie", "HiSilicon NNIE (Caffe 1.0 plus ROIPooling, Normalize, PSROIPooling, SegNet "
           "Upsample)", (BVLC_TYPES - {"Clip", "Swish"} - _TRAINING)
           | {"ROIPooling", "Normalize", "PSROIPooling", "Upsample"},
           (("Pooling", "pooling_param", "round_mode"),)),
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


def lower_for(model: Model, target: Target) -> list[str]:
    """Rewrite, in place, the layers the target lacks that have an exact
    equivalent it takes; say what was rewritten. Clip(0, 6) and ReLU6 are
    the same operation (min(max(x, 0), 6)), and OpenCV, RKNN, TIDL and the
    forks have ReLU6 while BVLC Caffe has Clip. The YOLO forks' nearest
    Upsample by whole factors (and Huawei's, which also multiplies) is a
    grouped Deconvolution whose kernel is the factor, filled with ones (or
    the multiplier): each output is one input times that one value."""
    done = []
    shapes = None
    for layer in model.layers:
        if layer.type in target.types:
            continue
        if layer.type == "Upsample" and "Deconvolution" in target.types and len(layer.bottoms) == 1:
            if shapes is None:
                shapes = _blob_shapes(model)
            if _upsample_as_deconvolution(layer, shapes):
                done.append(f"layer {layer.name!r}: nearest Upsample as a fixed Deconvolution")
            continue
        if layer.type == "Clip" and "ReLU6" in target.types and layer.spec.has("clip_param") and \
                layer.spec.clip_param.min == 0 and layer.spec.clip_param.max == 6:
            layer.spec.clear("clip_param")
            layer.type = "ReLU6"
            done.append(f"layer {layer.name!r}: Clip(0, 6) as ReLU6")
        elif layer.type == "ReLU6" and "Clip" in target.types:
            layer.type = "Clip"
            layer.spec.clip_param.min = 0.0
            layer.spec.clip_param.max = 6.0
            done.append(f"layer {layer.name!r}: ReLU6 as Clip(0, 6)")
    return done


def target_problems(model: Model, target: Target) -> list[str]:
    """Every layer of the net that the target cannot take, and why."""
    problems = []
    for layer in model.layers:
        if layer.type not in target.types:
            problems.append(f"layer {layer.name!r}: {target.name} has no {layer.type} layer")
            continue
        for kind, message, setting in target.forbidden:
            if layer.type == kind and layer.spec.has(message) and getattr(layer.spec, message).has(setting):
                problems.append(f"layer {layer.name!r} ({kind}): {target.name} cannot read "
                                f"{message}.{setting}")
    return problems


def _blob_shapes(model: Model) -> dict:
    from .engine import blob_shapes

    try:
        return blob_shapes(model, skip_unrunnable=True)[1]
    except BlobcastError:
        return {}


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
