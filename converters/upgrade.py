"""Upgrade legacy Caffe nets to the current (V2) form, as Caffe does on load.

Mirrors src/caffe/util/upgrade_proto.cpp: V0 (padding layers merged, nested
`layers.layer`) -> V1 (`layers` with enum types), old data-transformation
fields -> transform_param, V1 -> V2 (`layer` with string types), legacy net
inputs -> an Input layer named "input", and BatchNorm's old three param
specs -> lr_mult/decay_mult 0. Layer blobs travel beside the messages (they
are kept out of them for zero-copy reading), so each step maps blob lists too.
"""

from __future__ import annotations

from . import caffe_pb2 as pb
from .text_fields import MARK_NUMBER
from .wire import iter_fields

V0_TYPE_TO_V1 = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

V1_TYPE_TO_V2 = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V0 field -> {V0 type: (V1 sub-message, field, how)}; how is "set", "add" or "copy".
_V0_FIELD_MAP = {
    "num_output": {"conv": ("convolution_param", "num_output", "set"),
                   "innerproduct": ("inner_product_param", "num_output", "set")},
    "biasterm": {"conv": ("convolution_param", "bias_term", "set"),
                 "innerproduct": ("inner_product_param", "bias_term", "set")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler", "copy"),
                      "innerproduct": ("inner_product_param", "weight_filler", "copy")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler", "copy"),
                    "innerproduct": ("inner_product_param", "bias_filler", "copy")},
    "pad": {"conv": ("convolution_param", "pad", "add"), "pool": ("pooling_param", "pad", "set")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size", "add"),
                   "pool": ("pooling_param", "kernel_size", "set")},
    "group": {"conv": ("convolution_param", "group", "set")},
    "stride": {"conv": ("convolution_param", "stride", "add"),
               "pool": ("pooling_param", "stride", "set")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio", "set")},
    "local_size": {"lrn": ("lrn_param", "local_size", "set")},
    "alpha": {"lrn": ("lrn_param", "alpha", "set")},
    "beta": {"lrn": ("lrn_param", "beta", "set")},
    "k": {"lrn": ("lrn_param", "k", "set")},
    "source": {"data": ("data_param", "source", "set"),
               "hdf5_data": ("hdf5_data_param", "source", "set"),
               "images": ("image_data_param", "source", "set"),
               "window_data": ("window_data_param", "source", "set"),
               "infogain_loss": ("infogain_loss_param", "source", "set")},
    "batchsize": {"data": ("data_param", "batch_size", "set"),
                  "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                  "images": ("image_data_param", "batch_size", "set"),
                  "window_data": ("window_data_param", "batch_size", "set")},
    "rand_skip": {"data": ("data_param", "rand_skip", "set"),
                  "images": ("image_data_param", "rand_skip", "set")},
    "shuffle_images": {"images": ("image_data_param", "shuffle", "set")},
    "new_height": {"images": ("image_data_param", "new_height", "set")},
    "new_width": {"images": ("image_data_param", "new_width", "set")},
    "concat_dim": {"concat": ("concat_param", "concat_dim", "set")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold", "set")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold", "set")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction", "set")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad", "set")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode", "set")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None, "copy")},
}
# V0 fields that move to transform_param whatever the layer type.
_V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size",
                        "mirror": "mirror"}


class UpgradeError(ValueError):
    pass


def net_version(net) -> str:
    if any(layer.HasField("layer") for layer in net.layers):
        return "V0"
    if len(net.layers):
        return "V1"
    return "V2"


def upgrade_net(net, v1_blobs: list, v2_blobs: list, notes: list[str]):
    """Upgrade `net` in place; return the blob lists of its (V2) layers, in order."""
    if net_version(net) == "V0":
        v1_blobs = _upgrade_v0(net, v1_blobs, notes)
    if _needs_data_upgrade(net):
        _upgrade_data_transformation(net)
        notes.append("moved legacy data transformation fields into transform_param")
    if len(net.layers):
        if len(net.layer):
            notes.append("the file has both V1 'layers' and V2 'layer' fields; "
                         "the V2 layers were ignored, as Caffe does")
        v2_blobs = _upgrade_v1(net, v1_blobs, notes)
    if len(net.input):
        v2_blobs = _upgrade_input(net, v2_blobs)
        notes.append("turned legacy net inputs into an Input layer named 'input'")
    for layer in net.layer:
        # Caffe zeroes lr_mult and decay_mult of a BatchNorm layer with three
        # param specs. Where every lr_mult is already 0 (as Caffe itself writes
        # them) decay_mult has no effect, so the file is left as it is and
        # round-trips byte for byte.
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            if any(spec.lr_mult != 0 for spec in layer.param):
                for spec in layer.param:
                    spec.lr_mult = 0.0
                    spec.decay_mult = 0.0
                notes.append(f"BatchNorm layer {layer.name!r}: set its param lr_mult and "
                             "decay_mult to 0, as Caffe does")
    return v2_blobs


def _upgrade_v0(net, v0_blobs: list, notes: list[str]) -> list:
    # Padding layers merge into the conv/pool layer they feed (UpgradeV0PaddingLayers).
    last_producer: dict[str, int] = {name: -1 for name in net.input}
    kept, kept_blobs = [], []
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        upgraded = pb.V1LayerParameter()
        upgraded.CopyFrom(connection)
        for j, bottom in enumerate(connection.bottom):
            if bottom not in last_producer:
                raise UpgradeError(f"unknown blob input {bottom!r} to V0 layer {v0.name!r}")
            source_index = last_producer[bottom]
            if source_index == -1:
                continue
            source = net.layers[source_index]
            if source.layer.type == "padding":
                if v0.type not in ("conv", "pool"):
                    raise UpgradeError(f"padding layer feeds non-conv/pool layer {v0.name!r}")
                upgraded.layer.pad = source.layer.pad
                upgraded.bottom[j] = source.bottom[0]
        for top in connection.top:
            last_producer[top] = i
        if v0.type != "padding":
            kept.append(upgraded)
            kept_blobs.append(v0_blobs[i])
    result = []
    for connection in kept:
        result.append(_upgrade_v0_layer(connection, notes))
    del net.layers[:]
    net.layers.extend(result)
    return kept_blobs


def _upgrade_v0_layer(connection, notes: list[str]):
    out = pb.V1LayerParameter()
    out.bottom.extend(connection.bottom)
    out.top.extend(connection.top)
    if not connection.HasField("layer"):
        return out
    v0 = connection.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_TYPE_TO_V1:
            raise UpgradeError(f"unknown V0 layer type {kind!r} (layer {v0.name!r})")
        out.type = pb.V1LayerParameter.LayerType.Value(V0_TYPE_TO_V1[kind])
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELD_MAP.items():
        if not v0.HasField(field):
            continue
        if kind not in targets:
            notes.append(f"V0 layer {v0.name!r}: parameter {field} is unknown for type {kind!r}")
            continue
        sub_name, target_field, how = targets[kind]
        sub = getattr(out, sub_name)
        value = getattr(v0, field)
        if how == "copy" and target_field is None:
            sub.CopyFrom(value)
        elif how == "copy":
            getattr(sub, target_field).CopyFrom(value)
        elif how == "add":
            getattr(sub, target_field).append(value)
        else:
            setattr(sub, target_field, value)
    if v0.HasField("pool"):
        if kind != "pool":
            notes.append(f"V0 layer {v0.name!r}: parameter pool is unknown for type {kind!r}")
        else:
            out.pooling_param.pool = v0.pool  # same numbering in both enums
    for field, target in _V0_TRANSFORM_FIELDS.items():
        if v0.HasField(field):
            setattr(out.transform_param, target, getattr(v0, field))
    return out


_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                "WINDOW_DATA": "window_data_param"}


def _needs_data_upgrade(net) -> bool:
    for layer in net.layers:
        field = _DATA_PARAMS.get(pb.V1LayerParameter.LayerType.Name(layer.type))
        if field:
            params = getattr(layer, field)
            if any(params.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror")):
                return True
    return False


def _upgrade_data_transformation(net) -> None:
    for layer in net.layers:
        field = _DATA_PARAMS.get(pb.V1LayerParameter.LayerType.Name(layer.type))
        if not field:
            continue
        params = getattr(layer, field)
        for name in ("scale", "mean_file", "crop_size", "mirror"):
            if params.HasField(name):
                setattr(layer.transform_param, name, getattr(params, name))
                params.ClearField(name)


_V1_COPIED_PARAMS = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param", "image_data_param",
    "infogain_loss_param", "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param",
    "slice_param", "tanh_param", "threshold_param", "window_data_param", "transform_param",
    "loss_param",
)


def _carry_unknown(v1, layer, notes: list[str]) -> None:
    """A V1 layer's fields kept from text go with it (they have names); its
    unknown binary fields, numbered for V1, are dropped, as Caffe's upgrade does."""
    raw = v1.SerializeToString()
    known = v1.DESCRIPTOR.fields_by_number
    texts, dropped = bytearray(), 0
    for number, _wire, tag_start, _start, end in iter_fields(raw, 0, len(raw)):
        if number == MARK_NUMBER:
            texts += raw[tag_start:end]
        elif number not in known:
            dropped += end - tag_start
    layer.MergeFromString(bytes(texts))
    if dropped:
        notes.append(f"V1 layer {v1.name!r}: {dropped} bytes of fields unknown to V1 were dropped "
                     "by the upgrade, as Caffe's does")


def _upgrade_v1(net, v1_blobs: list, notes: list[str]) -> list:
    upgraded = []
    for v1 in net.layers:
        layer = pb.LayerParameter()
        layer.bottom.extend(v1.bottom)
        layer.top.extend(v1.top)
        if v1.HasField("name"):
            layer.name = v1.name
        layer.include.extend(v1.include)
        layer.exclude.extend(v1.exclude)
        if v1.HasField("type"):
            layer.type = V1_TYPE_TO_V2[pb.V1LayerParameter.LayerType.Name(v1.type)]
        count = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
        for _ in range(count):
            layer.param.add()
        for i, name in enumerate(v1.param):
            layer.param[i].name = name
        for i, mode in enumerate(v1.blob_share_mode):
            layer.param[i].share_mode = mode  # STRICT/PERMISSIVE share numbering
        for i, lr in enumerate(v1.blobs_lr):
            layer.param[i].lr_mult = lr
        for i, decay in enumerate(v1.weight_decay):
            layer.param[i].decay_mult = decay
        layer.loss_weight.extend(v1.loss_weight)
        for field in _V1_COPIED_PARAMS:
            if v1.HasField(field):
                getattr(layer, field).CopyFrom(getattr(v1, field))
        _carry_unknown(v1, layer, notes)
        upgraded.append(layer)
    del net.layers[:]
    del net.layer[:]
    net.layer.extend(upgraded)
    return list(v1_blobs)


def _upgrade_input(net, blobs: list) -> list:
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        layer = pb.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                if i >= len(net.input_shape):
                    raise UpgradeError(f"net input {name!r} has no input_shape")
                shape.CopyFrom(net.input_shape[i])
            else:
                dims = net.input_dim[4 * i: 4 * i + 4]
                if len(dims) != 4:
                    raise UpgradeError(f"net input {name!r} needs 4 input_dim values")
                shape.dim.extend(dims)
        existing = list(net.layer)
        del net.layer[:]
        net.layer.append(layer)
        net.layer.extend(existing)
        blobs = [[]] + list(blobs)
    elif len(net.input):
        # Names without shapes (common in deploy files OpenCV reads): Caffe's
        # upgrade drops them, leaving a net that cannot run; they stay as an
        # Input layer without shapes, which --input NAME=SHAPE completes.
        layer = pb.LayerParameter(name="input", type="Input", top=list(net.input))
        existing = list(net.layer)
        del net.layer[:]
        net.layer.append(layer)
        net.layer.extend(existing)
        blobs = [[]] + list(blobs)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    return blobs
