"""Data layers as net inputs.

A data layer (Data, ImageData, HDF5Data, MemoryData, WindowData,
AnnotatedData, VideoData, DummyData, or a Python layer with no bottoms)
reads a database the engine does not have, so its tops become the net's
inputs. That holds too for a data layer of another phase whose tops the
running phase reads: `caffe train` writes the TRAIN net into its snapshots,
and its only data layer is TRAIN-only. Each top is shaped from the layer's
settings where they determine it (batch size, crop size, ImageData's
new_height/new_width, MemoryData's and DummyData's shapes) and from its first
consumer's weights (channels) otherwise; what stays unknown is asked for,
naming the blob and the option.
"""

from __future__ import annotations

from ..layers.base import spec_for
from ..layers.data import batch_size, data_rules
from ..model import Layer


def is_data_layer(layer: Layer) -> bool:
    """A layer whose tops come from outside the net: a data type, or a Python
    layer with no bottoms (py-faster-rcnn's RoIDataLayer, a user's reader)."""
    if layer.type == "Python":
        return not layer.bottoms
    kind = spec_for(layer.type)
    return kind is not None and kind.role == "data"


def feeding_data_layers(layers: list[Layer], chosen: list[Layer]) -> list[Layer]:
    """Data layers left out of the running phase whose tops a chosen layer
    reads before any chosen layer makes them (first such layer per blob)."""
    chosen_ids = {id(layer) for layer in chosen}
    made: set[str] = set()
    wanted: list[str] = []
    for layer in chosen:
        wanted += [bottom for bottom in layer.bottoms if bottom not in made and bottom not in wanted]
        made.update(layer.tops)
    feeding: list[Layer] = []
    for blob in wanted:
        source = next((layer for layer in layers if id(layer) not in chosen_ids
                       and is_data_layer(layer) and blob in layer.tops), None)
        if source is not None and source not in feeding:
            feeding.append(source)
    return feeding


def _first_consumer_channels(top: str, net_layers: list[Layer]) -> int:
    """Channels implied by the first layer that reads `top`: a convolution's
    weights (input channels times group; a ConvolutionDepthwise's filters)."""
    consumer = next((other for other in net_layers if top in other.bottoms), None)
    if consumer is None or not consumer.blobs or consumer.blobs[0] is None:
        return 0
    shape = consumer.blobs[0].shape
    if consumer.type in ("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution") \
            and len(shape) >= 2:
        conv = consumer.spec.convolution_param
        if consumer.type == "ConvolutionDepthwise":
            return shape[0]  # one C x 1 x kh x kw filter per channel
        return shape[1] * conv.group
    return 0


def data_top_dims(layer: Layer, net_layers: list[Layer]) -> list[list[int | None]]:
    """Each top's dimensions as far as the settings and the weights tell
    them, None for each one they do not (the image size in a database)."""
    rules = data_rules(layer.type)
    listed = rules.listed_shapes(layer)
    if listed is not None:
        return [list(listed[i]) if i < len(listed) else None for i in range(len(layer.tops))]
    spec = layer.spec
    batch = batch_size(spec) or None
    transform = spec.transform_param
    channels, height, width = rules.image_dims(layer, transform.crop_size or None)
    if channels is None and len(transform.mean_value) > 1:
        channels = len(transform.mean_value)
    if channels is None and layer.tops:
        channels = _first_consumer_channels(layer.tops[0], net_layers) or None
    dims: list = [[batch, channels, height, width]]
    if rules.label_top and len(layer.tops) > 1:
        dims.append([batch])  # the label
    return dims + [None] * (len(layer.tops) - len(dims))


def data_layer_shapes(layer: Layer, net_layers: list[Layer]) -> list[list[int] | None]:
    """Each top's shape where every dimension is known, else None."""
    return [dims if dims is not None and None not in dims else None
            for dims in data_top_dims(layer, net_layers)]


def unknown_shape_hint(layer: Layer, top: str, net_layers: list[Layer]) -> str:
    """What the settings said of a top whose shape is not fully known."""
    index = layer.tops.index(top)
    dims = data_top_dims(layer, net_layers)[index]
    known = "" if dims is None or all(d is None for d in dims) else (
        " (known so far: [" + ", ".join("?" if d is None else str(d) for d in dims) + "])")
    return f"made by the data layer {layer.name!r} ({layer.type}){known}"
