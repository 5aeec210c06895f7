"""NetParameter (protobuf, blobs kept apart) <-> canonical Model."""

from __future__ import annotations

import warnings

from blobcast.errors import BlobcastWarning
from blobcast.model import Blob, Layer, Model
from blobcast.params import Message
from blobcast.tensor import reshaped, same_bits

from . import caffe_pb2 as pb
from .messages import fill_pb, message_from_pb

# Natural rank of each blob of the layer types that legacy (V0/V1-era) files
# store as 4-D num/channels/height/width; Caffe maps them onto these shapes
# when it loads them (Blob::ShapeEquals), and writes these shapes to HDF5.
_NATURAL_RANKS = {
    "InnerProduct": (2, 1), "Embed": (2, 1), "Convolution": (None, 1),
    "Deconvolution": (None, 1),
}


def _natural_shape(layer_type: str, index: int, blob: Blob) -> tuple[int, ...] | None:
    ranks = _NATURAL_RANKS.get(layer_type)
    if not ranks or index >= len(ranks) or ranks[index] is None:
        return None
    rank = ranks[index]
    shape = blob.shape
    if len(shape) <= rank or any(d != 1 for d in shape[: len(shape) - rank]):
        return None
    return shape[len(shape) - rank:]


def _with_shape(blob: Blob, shape) -> Blob:
    diff = reshaped(blob.diff, shape) if blob.diff is not None else None
    return Blob(reshaped(blob.data, shape), diff, blob.legacy_shape)


def model_from_net(net, blobs_per_layer: list[list[Blob]], *, source_format: str,
                   source_version: str, notes: list[str], path: str = "") -> Model:
    net_settings = pb.NetParameter()
    net_settings.CopyFrom(net)
    net_settings.ClearField("layer")
    net_settings.ClearField("layers")
    model = Model(net=message_from_pb(net_settings), source_format=source_format,
                  source_version=source_version, notes=list(notes))
    for layer_pb, blobs in zip(net.layer, blobs_per_layer):
        layer = Layer(spec=message_from_pb(layer_pb))
        for i, blob in enumerate(blobs):
            if blob.legacy_shape is not None:
                natural = _natural_shape(layer.type, i, blob)
                if natural is not None:
                    blob = _with_shape(blob, natural)
            layer.blobs.append(blob)
        model.layers.append(layer)
    _link_duplicated_shared_params(model, path)
    return model


def _link_duplicated_shared_params(model: Model, path: str) -> None:
    """Binary files repeat a shared blob in every sharing layer: keep one object.

    When the copies differ, Caffe's loader keeps the one written last (each
    layer's copy overwrites the shared memory in turn); so does blobcast.
    """
    for (li, bi), (oi, obi) in model.param_owners().items():
        layer, owner = model.layers[li], model.layers[oi]
        if bi >= len(layer.blobs) or obi >= len(owner.blobs):
            continue
        copy, original = layer.blobs[bi], owner.blobs[obi]
        if copy is original:
            continue
        if copy.shape == original.shape and not same_bits(copy.data, original.data):
            warnings.warn(
                f"{path}: shared parameter {layer.param_name(bi)!r} differs between layers "
                f"{owner.name!r} and {layer.name!r}; using {layer.name!r}'s copy as Caffe does",
                BlobcastWarning, stacklevel=2)
            owner.blobs[obi] = copy
            original = copy
        if copy.shape == original.shape:
            layer.blobs[bi] = original
    model.link_shared_params()


def _input_fields_layer(model: Model):
    """The Input layer written as the net's input/input_shape fields, if any."""
    first = model.layers[0] if model.layers else None
    if model.legacy_inputs and first is not None and first.type == "Input" and first.name == "input":
        return first
    return None


def written_layers(model: Model) -> list[Layer]:
    """The layers a file lists (an Input layer held for the net's input fields is not one)."""
    return model.layers[1:] if _input_fields_layer(model) is not None else model.layers


def net_settings_pb(model: Model, with_unknown: bool = True, fork_settings: str = "binary"):
    """The net-level NetParameter fields (no layers)."""
    net = pb.NetParameter()
    _fill(net, model.net, with_unknown, fork_settings)
    net.ClearField("layer")
    net.ClearField("layers")
    inputs = _input_fields_layer(model)
    if inputs is not None:
        net.input.extend(inputs.tops)
        for shape in inputs.spec.input_param.shape:
            net.input_shape.add().dim.extend(shape.dim)
    return net


def layer_pb(layer: Layer, with_unknown: bool = True, fork_settings: str = "binary"):
    """A layer's LayerParameter; `fork_settings` as messages.fill_pb takes it."""
    message = pb.LayerParameter()
    _fill(message, layer.spec, with_unknown, fork_settings)
    message.ClearField("blobs")
    return message


def _fill(target, message: Message, with_unknown: bool, fork_settings: str = "binary") -> None:
    if with_unknown:
        fill_pb(target, message, fork_settings)
        return
    unknown = message.unknown_fields
    object.__setattr__(message, "unknown_fields", b"")
    try:
        fill_pb(target, message, fork_settings)
    finally:
        object.__setattr__(message, "unknown_fields", unknown)


def architecture_pb(model: Model, fork_settings: str = "binary"):
    """The whole NetParameter without blobs (what a .prototxt holds)."""
    net = net_settings_pb(model, fork_settings=fork_settings)
    for layer in written_layers(model):
        net.layer.append(layer_pb(layer, fork_settings=fork_settings))
    return net
