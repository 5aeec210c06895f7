"""Inputs and data layers: what each type's settings say of its tops' shapes.

A data layer reads a database the engine does not have, so its tops become
the net's inputs (schedule.py decides which and asks for what
stays unknown). Each type here says what its settings fix: the shapes it
lists in full (DummyData, MemoryData), the image size and channels
(ImageData's new_height/new_width and is_color, the crop_size of Data's and
WindowData's older spelling), and whether its second top is a label.
"""

from __future__ import annotations

from .base import SPECS, LayerSpec, declare, register

# The settings fields that carry a batch_size (SSD's AnnotatedData and VideoData read data_param).
BATCH_SETTINGS = ("data_param", "image_data_param", "hdf5_data_param", "window_data_param",
                  "memory_data_param")


def batch_size(spec) -> int:
    """The batch size a layer's settings give, 0 when none does."""
    return next((getattr(spec, f).batch_size for f in BATCH_SETTINGS if spec.has(f)), 0)


class DataLayer(LayerSpec):
    """A type whose tops come from outside the net; also the rules for a
    Python layer with no bottoms, which reads its data the same way."""

    role = "data"
    label_top = False  # a second top holds one label per item

    @classmethod
    def listed_shapes(cls, layer) -> list | None:
        """Shapes the settings spell out in full, one per top, or None."""
        return None

    @classmethod
    def image_dims(cls, layer, crop: int | None) -> tuple:
        """(channels, height, width) of the first top as the settings give
        them, None for each they do not; `crop` is transform_param's crop_size."""
        return None, crop, crop


def _data_type(name: str, settings: str | None = None, origin: str | None = None,
               base: type = DataLayer) -> type:
    return register(name, settings=settings, bottoms=(0, None), tops=(0, None))(
        type(name, (base,), {"origin": origin}))


class _Labelled(DataLayer):
    label_top = True


class _DataLayer(_Labelled):
    @classmethod
    def image_dims(cls, layer, crop):
        if crop is None and layer.spec.has("data_param"):
            crop = layer.spec.data_param.crop_size or None  # the pre-transform_param spelling
        return None, crop, crop


class _ImageData(_Labelled):
    @classmethod
    def image_dims(cls, layer, crop):
        if not layer.spec.has("image_data_param"):
            return None, crop, crop
        image = layer.spec.image_data_param
        height = width = crop
        if height is None and image.new_height and image.new_width:
            height, width = image.new_height, image.new_width
        return (3 if image.is_color else 1), height, width


class _WindowData(_Labelled):
    @classmethod
    def image_dims(cls, layer, crop):
        if crop is None and layer.spec.has("window_data_param"):
            crop = layer.spec.window_data_param.crop_size or None
        return None, crop, crop


class _MemoryData(_Labelled):
    @classmethod
    def listed_shapes(cls, layer):
        if not layer.spec.has("memory_data_param"):
            return None
        m = layer.spec.memory_data_param
        return [[m.batch_size, m.channels, m.height, m.width], [m.batch_size]]


class _DummyData(DataLayer):
    @classmethod
    def listed_shapes(cls, layer):
        if not layer.spec.has("dummy_data_param"):
            return None
        d = layer.spec.dummy_data_param
        shapes = [list(s.dim) for s in d.shape] or [
            [n, c, h, w] for n, c, h, w in zip(d.num, d.channels, d.height, d.width)]
        return shapes * len(layer.tops) if len(shapes) == 1 and len(layer.tops) > 1 else shapes


declare("Input", settings="input_param", role="input", key_settings=("shape",))
_data_type("Data", "data_param", base=_DataLayer)
_data_type("ImageData", "image_data_param", base=_ImageData)
_data_type("HDF5Data", "hdf5_data_param")
_data_type("MemoryData", "memory_data_param", base=_MemoryData)
_data_type("WindowData", "window_data_param", base=_WindowData)
_data_type("DummyData", "dummy_data_param", base=_DummyData)
_data_type("AnnotatedData", origin="SSD (weiliu89)")
_data_type("VideoData", origin="video forks (TSN and others)")
_data_type("DenseImageData", origin="SegNet (alexgkendall/caffe-segnet)")


def data_rules(type_name: str) -> type:
    """The data-layer rules for a type: its class, or the general ones (a
    Python layer with no bottoms, a type blobcast does not know)."""
    kind = SPECS.get(type_name)
    return kind if isinstance(kind, type) and issubclass(kind, DataLayer) else DataLayer
