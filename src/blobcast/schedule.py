"""Which layers one phase of a net runs, in order: its schedule.

A `Schedule` says which layers a phase runs (Caffe's FilterNet, then its
Net::Init refusals and Split insertion, caffe_rules.check_net), the net's
inputs with their shapes where the net declares them, its outputs, and the
layers it leaves out, each with why: loss and evaluation layers are reported,
not run; layers the engine cannot run are left out with skip_unrunnable.
The engine (engine.Net) runs a schedule; shapes.blob_shapes sizes one.

Data layers as net inputs. A data layer (Data, ImageData, HDF5Data,
MemoryData, WindowData, AnnotatedData, VideoData, DummyData, or a Python
layer with no bottoms) reads a database the engine does not have, so its tops
become the net's inputs. That holds too for a data layer of another phase
whose tops the running phase reads: `caffe train` writes the TRAIN net into
its snapshots, and its only data layer is TRAIN-only. Each top is shaped from
the layer's settings where they determine it (batch size, crop size,
ImageData's new_height/new_width, MemoryData's and DummyData's shapes) and
from its first consumer's weights (channels) otherwise; what stays unknown is
asked for, naming the blob and the option.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .caffe_rules import check_net
from .errors import BlobcastError
from .layers.base import LAYER_TYPES, implementation, spec_for, unknown_settings
from .layers.data import batch_size, data_rules
from .model import Layer, Model, layer_included


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


def _role(layer: Layer) -> str:
    if is_data_layer(layer):
        return "data"
    kind = spec_for(layer.type)
    if kind is not None:
        return kind.role
    return "loss" if layer.type.endswith("Loss") else "compute"  # a fork's loss layer


def is_not_run(layer: Layer) -> bool:
    """Loss, evaluation and data layers: reported, not run."""
    return _role(layer) in ("loss", "data")


@dataclass
class SkippedLayer:
    name: str
    type: str
    reason: str


class Schedule:
    """The layers one phase of `model` runs (`layers`, in order), its inputs
    (name -> declared shape or None), outputs, and what it leaves out
    (`skipped`, each with a reason; `unrun`: layers it cannot run, with
    skip_unrunnable)."""

    def __init__(self, model: Model, *, phase: str = "TEST", level: int = 0, stages=(),
                 allow_python_layers: bool = False, skip_unrunnable: bool = False):
        if not model.has_architecture:
            raise BlobcastError("the model has weights but no layer definitions; give the "
                                "architecture with --prototxt")
        self.model = model
        self.phase = phase
        chosen = [layer for layer in model.layers if layer_included(layer, phase, level, stages)]
        self.chosen = chosen
        # Data layers of another phase that feed this one stand where Caffe
        # would have its own data layer.
        feeding = feeding_data_layers(model.layers, chosen)
        # What Caffe refuses is refused; the layers as Caffe connects them (its Split layers).
        self.caffe_layers = check_net(feeding + chosen)
        self.inputs: dict[str, list[int] | None] = {}
        self.skipped: list[SkippedLayer] = []
        self.layers: list[Layer] = []
        self.unrun: list[Layer] = []  # with skip_unrunnable: layers left out
        self.input_sources: dict[str, Layer] = {}  # data tops: the layer that makes them
        for layer in feeding:
            self._add_data_inputs(layer, f"data layer of another phase: its tops are {phase} "
                                  "inputs")
        for layer in chosen:
            self._place(layer, allow_python_layers, skip_unrunnable)
        # Every data top, a training net's labels too (a training step reads them).
        self.declared_inputs = dict(self.inputs)
        self._drop_unused_inputs()
        self.outputs = self._output_names()
        self.uncomputed = self._uncomputed_outputs()

    def _place(self, layer: Layer, allow_python_layers: bool, skip_unrunnable: bool) -> None:
        """Put a layer of the phase where it belongs: an input, skipped, left
        out (skip_unrunnable) or run."""
        role = _role(layer)
        if role == "input":
            self.inputs.update(self._input_shapes(layer))
        elif role == "data":
            self._add_data_inputs(layer, "data layer: its tops are inputs")
        elif is_not_run(layer):
            self.skipped.append(SkippedLayer(layer.name, layer.type,
                                             "loss/evaluation layer: not run"))
        else:
            runnable = layer.type in LAYER_TYPES or (layer.type == "Python" and allow_python_layers)
            if not runnable and skip_unrunnable:
                reason = ("not run: a Python layer runs only with --allow-python-layers (it "
                          "imports and runs its module)" if layer.type == "Python" else
                          "not run: the engine has no implementation (a --layer-plugin can "
                          "give one)")
                self.skipped.append(SkippedLayer(layer.name, layer.type, reason))
                self.unrun.append(layer)
                return
            if layer.type != "Python":
                problem = implementation(layer.type, layer.name).arity_problem(layer)
                if problem:  # fail early, as Caffe's CheckBlobCounts does
                    raise BlobcastError(f"layer {layer.name!r} ({layer.type}) {problem}")
                unknown = unknown_settings(layer)
                if unknown and skip_unrunnable:
                    self.skipped.append(SkippedLayer(layer.name, layer.type, f"not run: {unknown}"))
                    self.unrun.append(layer)
                    return
                if unknown:
                    raise BlobcastError(f"layer {layer.name!r} ({layer.type}): {unknown}")
            self.layers.append(layer)

    def _add_data_inputs(self, layer: Layer, reason: str) -> None:
        self.inputs.update(self._input_shapes(layer))
        self.input_sources.update(dict.fromkeys(layer.tops, layer))
        self.skipped.append(SkippedLayer(layer.name, layer.type, reason))

    def shape_unknown(self, name: str) -> BlobcastError:
        """The one-line refusal for an input whose shape nothing gives."""
        source = self.input_sources.get(name)
        origin = f", {unknown_shape_hint(source, name, self.chosen)}" if source else ""
        return BlobcastError(f"the net input {name!r} has no known shape{origin}; give one with "
                             f"--input {name}=SHAPE (or --input {name}=file.npy)")

    def _input_shapes(self, layer: Layer) -> dict:
        shapes: list = []
        spec = layer.spec
        if layer.type == "Input" and spec.has("input_param"):
            shapes = [list(s.dim) for s in spec.input_param.shape]
        elif _role(layer) == "data":
            shapes = data_layer_shapes(layer, self.chosen)
            return dict(zip(layer.tops, shapes + [None] * len(layer.tops)))
        out = {}
        for i, top in enumerate(layer.tops):
            out[top] = shapes[i] if i < len(shapes) else (shapes[0] if len(shapes) == 1 else None)
        return out

    def _drop_unused_inputs(self) -> None:
        """Inputs no layer that runs reads (a training net's labels, which only
        its losses and accuracy read) are not inputs of the deploy net."""
        read = {bottom for layer in self.layers + self.unrun for bottom in layer.bottoms}
        for name in [n for n in self.inputs if n not in read and self.layers]:
            del self.inputs[name]
            self.skipped.append(SkippedLayer(name, "input", "read only by layers that are not run "
                                             "(losses, accuracy): not an input of the deploy net"))

    @property
    def in_order(self) -> list[Layer]:
        """The layers run and those left out (skip_unrunnable), in net order."""
        position = {id(layer): i for i, layer in enumerate(self.chosen)}
        return sorted(self.layers + self.unrun, key=lambda layer: position[id(layer)])

    def _output_names(self) -> list[str]:
        """Blobs produced and never consumed afterwards (Caffe's net outputs),
        counting the layers left out (skip_unrunnable) too."""
        available: dict[str, None] = dict.fromkeys(self.inputs)
        for layer in self.in_order:
            for bottom in layer.bottoms:
                available.pop(bottom, None)
            for top in layer.tops:
                available.pop(top, None)
                available[top] = None
        return list(available)

    def _uncomputed_outputs(self) -> dict[str, str]:
        """The net's outputs that depend on a layer left out (skip_unrunnable),
        each with the first such layer, as "'name' (Type)"."""
        if not self.unrun:
            return {}
        left_out = {id(layer) for layer in self.unrun}
        blocked: dict[str, str] = {}
        available: dict[str, None] = dict.fromkeys(self.inputs)
        for layer in self.in_order:
            cause = next((blocked[b] for b in layer.bottoms if b in blocked), None)
            if cause is None and id(layer) in left_out:
                cause = f"{layer.name!r} ({layer.type})"
            for bottom in layer.bottoms:
                available.pop(bottom, None)
            for top in layer.tops:
                available.pop(top, None)
                available[top] = None
                if cause is None:
                    blocked.pop(top, None)
                else:
                    blocked[top] = cause
        return {name: blocked[name] for name in available if name in blocked}

    @property
    def dtype(self):
        """The dtype of the weights of the layers run (float32 when none has any)."""
        for layer in self.layers:
            for blob in layer.blobs:
                if blob is not None:
                    # NumPy copies an input asked for as an equal dtype that
                    # is not its own ('<f4' for float32): every pass did.
                    return np.dtype(blob.dtype.name) if blob.dtype.isnative else blob.dtype
        return np.dtype(np.float32)
