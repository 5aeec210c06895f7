"""The shapes a data layer feeds its tops, from its settings alone."""

from __future__ import annotations

from ..model import Layer

_BATCH_SETTINGS = ("data_param", "image_data_param", "hdf5_data_param", "window_data_param")


def data_layer_shapes(layer: Layer, net_layers: list[Layer]) -> list[list[int] | None]:
    """The shapes a data layer (Data, ImageData, ...) feeds its tops, from its
    settings as Caffe's TEST phase would: the batch size, the crop size (or
    ImageData's new_height/new_width), channels from ImageData's is_color,
    from the per-channel mean values, or from the weights of the first
    convolution that reads the data. None where the settings cannot say (the
    image size is in the database): --input NAME=SHAPE gives it."""
    spec = layer.spec
    batch = next((getattr(spec, f).batch_size for f in _BATCH_SETTINGS if spec.has(f)), 0)
    transform = spec.transform_param
    height = width = transform.crop_size or 0
    channels = 0
    if layer.type == "ImageData" and spec.has("image_data_param"):
        image = spec.image_data_param
        channels = 3 if image.is_color else 1
        if not height:
            height, width = image.new_height, image.new_width
    elif layer.type == "Data" and spec.has("data_param") and not height:
        height = width = spec.data_param.crop_size  # the pre-transform_param spelling
    if not channels and len(transform.mean_value) > 1:
        channels = len(transform.mean_value)
    if not channels and layer.tops:
        consumer = next((other for other in net_layers if layer.tops[0] in other.bottoms), None)
        blob = consumer.blobs[0] if consumer is not None and consumer.blobs else None
        if consumer is not None and consumer.type == "Convolution" and blob is not None \
                and len(blob.shape) >= 2:
            channels = blob.shape[1] * consumer.spec.convolution_param.group
    data = [batch, channels, height, width] if batch and channels and height and width else None
    label = [batch] if batch else None
    return [data, label][: len(layer.tops)]
