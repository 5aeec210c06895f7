"""Every blob's shape from the layer classes' shape rules, without running
anything or reading a weight; the memory a pass would hold on the way; and
the load-time checks of the weights' shapes: each blob against its layer's
settings as it is copied in (`shape_problem`), then, all in place, against
the shapes its layer class gives it (`weight_shape_problem`)."""

from __future__ import annotations

from math import prod

import numpy as np

from .errors import BlobcastError
from .layers.base import implementation
from .limits import check_allocation
from .model import Layer, Model
from .schedule import Schedule


def by_settings(layer: Layer, bottom_shapes: list, rule):
    """A layer's shape rule on its bottoms' shapes; settings it cannot follow
    (a zero stride, a zero aspect ratio) are the file's problem, said as such."""
    try:
        return rule(bottom_shapes)
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as error:
        shapes = [list(shape) for shape in bottom_shapes]
        raise BlobcastError(f"layer {layer.name!r} ({layer.type}): its settings do not give a "
                            f"shape for inputs of shape {shapes} ({str(error).strip()})") from error


def check_layer_memory(layer: Layer, op, bottom_shapes: list, held_bytes: int, itemsize: int) -> None:
    """What a layer allocates (tops, temporaries) on top of the blobs held, within the budget."""
    check_allocation(held_bytes + by_settings(layer, bottom_shapes, op.values_needed) * itemsize,
                     f"layer {layer.name!r} ({layer.type}) with the blobs held before it")


def check_input_size(name: str, shape, dtype=np.float32) -> None:
    """An input's declared shape within the memory budget, before it is made."""
    if any(int(d) < 0 for d in shape):
        raise BlobcastError(f"the net input {name!r} has a negative dimension in {list(shape)}")
    count = 1
    for d in shape:
        count *= int(d)
    check_allocation(count * np.dtype(dtype).itemsize, f"the net input {name!r} of shape {list(shape)}")


def _input_shapes_of(schedule: Schedule, input_shapes: dict | None, check_memory: bool,
                     dtype) -> dict:
    """The net's input shapes: given, else declared (one line when neither)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, declared in schedule.inputs.items():
        shape = (input_shapes or {}).get(name, declared)
        if shape is None:
            raise schedule.shape_unknown(name)
        shapes[name] = tuple(int(d) for d in shape)
        if check_memory:
            check_input_size(name, shapes[name], dtype)
    return shapes


class _HeldValues:
    """The values each blob held holds, and their running total (summing them
    before every layer made a long net's plan quadratic)."""

    def __init__(self, sizes: dict):
        self.sizes = sizes
        self.total = sum(sizes.values())

    def set(self, name: str, count: int) -> None:
        self.total += count - self.sizes.get(name, 0)
        self.sizes[name] = count

    def drop(self, name: str) -> None:
        self.total -= self.sizes.pop(name, 0)


def blob_shapes(model: Model, input_shapes: dict[str, list[int]] | None = None,
                check_memory: bool = False, given_shapes: dict[str, list[int]] | None = None,
                precision=None, **schedule_options) -> tuple[Schedule, dict[str, tuple[int, ...]]]:
    """Every blob's shape from the layer types' shape rules, without running
    anything or reading a weight; with the schedule they are the shapes of.
    With skip_unrunnable, a layer the engine cannot run (or a Python layer)
    leaves its tops (and what follows from them) without a shape, unless
    `given_shapes` (top -> shape) gives them. Blobs rewritten in place keep
    their final shape.

    With check_memory, what a forward pass would hold at each layer (its
    inputs, the blobs kept for later layers, its tops and temporaries) is
    checked against the memory budget on the way, in `precision` (else the
    weights' dtype): a pass that would not fit is refused before anything
    is allocated."""
    schedule = Schedule(model, **schedule_options)
    dtype = np.dtype(precision) if precision is not None else schedule.dtype
    shapes = _input_shapes_of(schedule, input_shapes, check_memory, dtype)
    given = {name: tuple(int(d) for d in shape) for name, shape in (given_shapes or {}).items()}
    _check_given_shapes(schedule, given)
    propagate(schedule, shapes, given, schedule_options.get("skip_unrunnable", False),
              dtype.itemsize if check_memory else None)
    return schedule, shapes


def known_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """The shapes blob_shapes can tell of a net's blobs, for what only shows
    them (a drawing, a target's rewrites): none where the net cannot be sized."""
    try:
        return blob_shapes(model, skip_unrunnable=True)[1]
    except BlobcastError:
        return {}


def propagate(schedule: Schedule, shapes: dict, given: dict, tolerate: bool,
              itemsize: int | None = None, visit=None) -> dict:
    """Fill `shapes` (inputs' shapes given) with every top's, layer by layer.
    With `tolerate`, a layer whose bottoms' shapes are unknown leaves its
    tops unknown; with `itemsize`, each layer's memory is checked on the way.
    With `visit`, visit(layer, op, bottom_shapes) is called for each layer
    sized, and a layer whose settings give no shape leaves its tops unknown
    instead of being refused (the load-time weight check, which says nothing
    of a net's settings: running it does)."""
    held = _HeldValues({name: prod(shape) for name, shape in shapes.items()})
    in_order = schedule.in_order
    left_out = {id(layer) for layer in schedule.unrun}
    last_use = {bottom: index for index, layer in enumerate(in_order) for bottom in layer.bottoms}
    for index, layer in enumerate(in_order):
        if layer.type == "Python" or id(layer) in left_out:
            _unsaid_tops(layer, shapes, given, held)  # only running it would tell
            continue
        missing = [name for name in layer.bottoms if name not in shapes]
        if missing:
            if tolerate:
                for name in layer.tops:
                    shapes.pop(name, None)
                continue  # downstream of a layer whose shapes are unknown
            raise BlobcastError(f"layer {layer.name!r}: its bottom {missing[0]!r} is never produced")
        bottoms = [shapes[name] for name in layer.bottoms]
        tops = _sized_tops(schedule, layer, bottoms, held, itemsize, visit)
        for name, shape in zip(layer.tops, tops):
            if shape is not None:
                shapes[name] = tuple(int(d) for d in shape)
                held.set(name, prod(shapes[name]))
        for name in layer.bottoms:  # as the forward pass frees what no later layer reads
            if last_use.get(name) == index and name not in schedule.outputs and \
                    name not in layer.tops:
                held.drop(name)
    return shapes


def _unsaid_tops(layer: Layer, shapes: dict, given: dict, held: _HeldValues) -> None:
    """The tops of a layer that cannot be sized: the shapes the user gave, if any."""
    for name in layer.tops:
        shapes.pop(name, None)
        if name in given:
            shapes[name] = given[name]
            held.set(name, prod(given[name]))


def _sized_tops(schedule: Schedule, layer: Layer, bottoms: list, held: _HeldValues,
                itemsize: int | None, visit) -> list:
    """One layer's tops' shapes (None for each unknown one)."""
    try:
        op = implementation(layer.type, layer.name)(layer, np, [], schedule.phase)
        if visit is not None:
            visit(layer, op, bottoms)
        if itemsize is not None:
            check_layer_memory(layer, op, bottoms, held.total * itemsize, itemsize)
        return list(by_settings(layer, bottoms, op.top_shapes))
    except _SETTINGS_ERRORS:
        if visit is None:
            raise
        return [None] * len(layer.tops)


def _check_given_shapes(schedule: Schedule, given: dict) -> None:
    """Shapes may be given only for the tops of layers that do not say theirs."""
    left_out = {id(layer) for layer in schedule.unrun}
    unsaid = {top for layer in schedule.layers + schedule.unrun
              if layer.type == "Python" or id(layer) in left_out for top in layer.tops}
    for name, shape in given.items():
        if name not in unsaid:
            raise BlobcastError(f"--shape {name}: only the tops of layers blobcast cannot run or "
                                f"size take a given shape, and {name!r} is not one")
        if not shape or any(d <= 0 for d in shape):
            raise BlobcastError(f"--shape {name}: every dimension must be positive")


# -- weights' shapes at load --------------------------------------------------------

def _kernel_shape(params) -> tuple[int, ...] | None:
    if params.has("kernel_h") or params.has("kernel_w"):
        return (params.kernel_h, params.kernel_w)
    sizes = list(params.kernel_size)
    if len(sizes) == 1:
        return None  # rank depends on the input; only the values can be checked
    return tuple(sizes) if sizes else None


def shape_problem(layer: Layer, index: int, shape: tuple[int, ...]) -> str | None:
    """What the layer's settings alone say is wrong with a blob shape, if
    anything: checked as each blob is copied in, before any shape is known."""
    spec = layer.spec
    if layer.type in ("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution"):
        params = spec.convolution_param
        # ConvolutionDepthwise ignores num_output: C x 1 x kh x kw, whatever it says.
        counted = layer.type != "ConvolutionDepthwise"
        if index == 0:
            if counted and shape and shape[0] != params.num_output:
                return f"num_output is {params.num_output} but the weights have {shape[0]} filters"
            kernel = _kernel_shape(params)
            if kernel is not None and tuple(shape[2:]) != kernel:
                return f"kernel is {list(kernel)} but the weights' kernel is {list(shape[2:])}"
            if len(params.kernel_size) == 1 and any(d != params.kernel_size[0] for d in shape[2:]):
                return (f"kernel_size is {params.kernel_size[0]} but the weights' kernel is "
                        f"{list(shape[2:])}")
        elif index == 1 and counted and shape != (params.num_output,):
            return f"num_output is {params.num_output} but the bias has shape {list(shape)}"
    elif layer.type == "InnerProduct":
        params = spec.inner_product_param
        if index == 0 and len(shape) == 2:
            outputs = shape[1] if params.transpose else shape[0]
            if outputs != params.num_output:
                return f"num_output is {params.num_output} but the weights have shape {list(shape)}"
        elif index == 0:
            return f"the weight must be 2-D, the file has shape {list(shape)}"
        elif index == 1 and shape != (params.num_output,):
            return f"num_output is {params.num_output} but the bias has shape {list(shape)}"
    elif layer.type == "BatchNorm" and index == 2 and shape != (1,):
        return f"the scale-factor blob must have shape [1], the file has {list(shape)}"
    return None


_SETTINGS_ERRORS = (BlobcastError, ValueError, TypeError, IndexError, KeyError, ArithmeticError)


def weight_shape_problem(model: Model) -> str | None:
    """The first weight blob whose shape is not the one its layer class gives
    (LayerOp.blob_shapes) for its bottoms' shapes, as one line; None when
    every blob fits. Caffe refuses such a blob when it copies the weights in
    (Blob::ShapeEquals). Bottom shapes come from the net's declared inputs,
    phase by phase; a layer whose bottoms no phase sizes is checked against
    its own blobs where its type makes them agree (Scale's and Bias's
    blobs, BatchNorm's mean and variance)."""
    checked: set[int] = set()
    problems: list[str] = []

    def check(layer, op, bottoms) -> None:  # each layer once, in the first phase that sizes it
        if id(layer) not in checked:
            checked.add(id(layer))
            problem = _against_class(layer, op, bottoms)
            if problem:
                problems.append(problem)

    for phase in ("TEST", "TRAIN"):
        try:
            schedule = Schedule(model, phase=phase, skip_unrunnable=True)
        except BlobcastError:
            continue  # a net Caffe refuses is refused when it runs, not here
        declared = {name: tuple(int(d) for d in shape) for name, shape in schedule.inputs.items()
                    if shape is not None}
        propagate(schedule, declared, {}, tolerate=True, visit=check)
        if problems:
            return problems[0]
    for layer in model.layers:
        problem = None if id(layer) in checked else _against_own_blobs(layer)
        if problem:
            return problem
    return None


def _fits(expected, blob) -> bool:
    """Blob::ShapeEquals: the same shape, or a legacy 4-D num/channels/
    height/width equal to the expected shape padded with leading 1s."""
    expected = tuple(int(d) for d in expected)
    if tuple(blob.shape) == expected:
        return True
    legacy = blob.legacy_shape
    return legacy is not None and len(expected) <= 4 and \
        tuple(legacy) == (1,) * (4 - len(expected)) + expected


def _line(layer: Layer, index: int, expected, actual, why: str = "") -> str:
    return (f"layer {layer.name!r} ({layer.type}) blob {index}: expected shape "
            f"{list(expected)}{why}, the file has {list(actual)}")


def _against_class(layer: Layer, op, bottoms: list) -> str | None:
    try:
        expected = op.blob_shapes(bottoms)
    except _SETTINGS_ERRORS:
        return None
    if len(expected) != len(layer.blobs):
        return None  # the blob count is checked as the weights are copied
    for index, (shape, blob) in enumerate(zip(expected, layer.blobs)):
        if blob is not None and not _fits(shape, blob):
            return _line(layer, index, shape, blob.shape,
                         f" (for inputs of shape {[list(b) for b in bottoms]})")
    return None


# Types whose blobs all have one shape, and which of them (BatchNorm's third is its factor).
_ONE_SHAPE = {"Scale": None, "Bias": None, "BatchNorm": 2}


def _natural(blob) -> tuple:
    """A blob's shape, without the leading 1s a legacy 4-D shape pads it with."""
    shape = tuple(blob.shape)
    if blob.legacy_shape is not None:
        while len(shape) > 1 and shape[0] == 1:
            shape = shape[1:]
    return shape


def _against_own_blobs(layer: Layer) -> str | None:
    """What the settings alone fix where no bottom shape is known: the blobs
    a type gives one shape agree with its first."""
    if layer.type not in _ONE_SHAPE:
        return None
    blobs = [blob for blob in layer.blobs[:_ONE_SHAPE[layer.type]] if blob is not None]
    if not blobs:
        return None
    first = _natural(blobs[0])
    for index, blob in enumerate(blobs[1:], start=1):
        if _natural(blob) != first:
            return _line(layer, index, first, blob.shape, " (blob 0's)")
    return None
