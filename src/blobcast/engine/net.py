"""Running a canonical Model forward with Caffe's semantics."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from math import prod

import numpy as np

from .. import layers  # noqa: F401  (registers the layer types)
from ..errors import BlobcastError
from ..layers.base import LAYER_TYPES, implementation, spec_for
from ..limits import check_allocation
from ..model import Layer, Model, layer_included
from ..tensor import aligned_values
from ..threads import run_channel_blocks
from ..weights import expected_blob_count
from .data_inputs import data_layer_shapes, feeding_data_layers, is_data_layer, unknown_shape_hint
from .python_layer import PythonLayer


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


def array_module(device: str = "cpu"):
    """numpy for "cpu", cupy for "gpu", whichever fits for "auto"."""
    if device not in ("cpu", "gpu", "auto"):
        raise BlobcastError(f"unknown device {device!r}; use cpu, gpu or auto")
    if device == "cpu":
        return np
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
        problem = "CuPy finds no GPU"
    except Exception as error:  # ImportError, or CUDA failing to initialise
        problem = f"CuPy is not usable ({type(error).__name__}: {error})"
    if device == "gpu":
        raise BlobcastError(f"--device gpu: {problem}; install blobcast[gpu] on a machine "
                            "with an NVIDIA GPU, or use --device cpu")
    return np


_UNBUILT = object()  # an op not built yet, or freed after a run (hold_weights=False)


def _lacks_weights(layer: Layer) -> bool:
    expected = expected_blob_count(layer)
    return bool(expected) and sum(blob is not None for blob in layer.blobs) < expected


def check_has_weights(layer: Layer) -> None:
    expected = expected_blob_count(layer)
    present = sum(blob is not None for blob in layer.blobs)
    if expected and present < expected:
        held = "no weights" if not present else f"{present} of its {expected} blobs"
        raise BlobcastError(f"layer {layer.name!r} ({layer.type}) has {held}; a net definition "
                            "alone holds none: give the weights file (a .caffemodel, or "
                            "weights with --prototxt), or run --random-weights for a shape and "
                            "speed check")


@dataclass
class SkippedLayer:
    name: str
    type: str
    reason: str


class Net:
    """A model ready to run: layers of one phase, weights on the device."""

    def __init__(self, model: Model, *, device: str = "cpu", phase: str = "TEST", level: int = 0,
                 stages=(), allow_python_layers: bool = False, python_path=(),
                 skip_unrunnable: bool = False, precision=None, random_weights: int | None = None,
                 winograd: bool = False, hold_weights: bool = True):
        if not model.has_architecture:
            raise BlobcastError("the model has weights but no layer definitions; give the "
                                "architecture with --prototxt")
        self.model = model
        self.xp = array_module(device)
        self.device = "gpu" if self.xp is not np else "cpu"
        # float64 to measure a net's float32 rounding noise; None: as stored
        self.precision = None if precision is None else np.dtype(precision)
        # A seed: layers without weights get seeded random ones (Caffe's fillers).
        self.random_weights = random_weights
        # Opt-in: stride-1 3x3 convolutions by Winograd's F(2x2, 3x3), faster,
        # not Caffe's summation order (layers/winograd.py).
        self.winograd = winograd
        # False for a net run once (a check): each layer's weights are read
        # just before it runs and freed after, so the run holds the largest
        # layer's, not the whole net's (VGG16: 411 of 553 MB).
        self.hold_weights = hold_weights
        self.phase = phase
        self.allow_python_layers = allow_python_layers
        self.python_path = tuple(python_path)
        chosen = [layer for layer in model.layers if layer_included(layer, phase, level, stages)]
        self._chosen = chosen
        self.inputs: dict[str, list[int] | None] = {}
        self.skipped: list[SkippedLayer] = []
        self.layers: list[Layer] = []
        self.unrun: list[Layer] = []  # with skip_unrunnable: layers left out
        self.input_sources: dict[str, Layer] = {}  # data tops: the layer that makes them
        for layer in feeding_data_layers(model.layers, chosen):
            self._add_data_inputs(layer, f"data layer of another phase: its tops are {phase} "
                                  "inputs")
        for layer in chosen:
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
                    continue
                if layer.type != "Python":
                    problem = implementation(layer.type, layer.name).arity_problem(layer)
                    if problem:  # fail early, as Caffe's CheckBlobCounts does
                        raise BlobcastError(f"layer {layer.name!r} ({layer.type}) {problem}")
                self.layers.append(layer)
        # Every data top, a training net's labels too (a training step reads them).
        self.declared_inputs = dict(self.inputs)
        self._drop_unused_inputs()
        self.outputs = self._output_names()
        self.uncomputed = self._uncomputed_outputs()
        self._ops = None
        self._budget_checked: set = set()

    def _add_data_inputs(self, layer: Layer, reason: str) -> None:
        self.inputs.update(self._input_shapes(layer))
        self.input_sources.update(dict.fromkeys(layer.tops, layer))
        self.skipped.append(SkippedLayer(layer.name, layer.type, reason))

    def shape_unknown(self, name: str) -> BlobcastError:
        """The one-line refusal for an input whose shape nothing gives."""
        source = self.input_sources.get(name)
        origin = f", {unknown_shape_hint(source, name, self._chosen)}" if source else ""
        return BlobcastError(f"the net input {name!r} has no known shape{origin}; give one with "
                             f"--input {name}=SHAPE (or --input {name}=file.npy)")

    def _input_shapes(self, layer: Layer) -> dict:
        shapes: list = []
        spec = layer.spec
        if layer.type == "Input" and spec.has("input_param"):
            shapes = [list(s.dim) for s in spec.input_param.shape]
        elif _role(layer) == "data":
            shapes = data_layer_shapes(layer, self._chosen)
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

    def _output_names(self) -> list[str]:
        """Blobs produced and never consumed afterwards (Caffe's net outputs),
        counting the layers left out (skip_unrunnable) too."""
        available: dict[str, None] = dict.fromkeys(self.inputs)
        position = {id(layer): i for i, layer in enumerate(self._chosen)}
        for layer in sorted(self.layers + self.unrun, key=lambda layer: position[id(layer)]):
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
        position = {id(layer): i for i, layer in enumerate(self._chosen)}
        left_out = {id(layer) for layer in self.unrun}
        blocked: dict[str, str] = {}
        available: dict[str, None] = dict.fromkeys(self.inputs)
        for layer in sorted(self.layers + self.unrun, key=lambda layer: position[id(layer)]):
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
        if self.precision is not None:
            return self.precision
        for layer in self.layers:
            for blob in layer.blobs:
                if blob is not None:
                    # NumPy copies an input asked for as an equal dtype that
                    # is not its own ('<f4' for float32): every pass did.
                    return np.dtype(blob.dtype.name) if blob.dtype.isnative else blob.dtype
        return np.dtype(np.float32)

    def _op_at(self, index: int):
        """The op of layer `index`, built on first use; None for a layer whose
        random weights wait for its bottoms' shapes (with random_weights)."""
        if self._ops is None:
            self._ops = [_UNBUILT] * len(self.layers)
        op = self._ops[index]
        if op is _UNBUILT:
            layer = self.layers[index]
            if self.random_weights is not None and _lacks_weights(layer):
                op = None
            else:
                if layer.type != "Python":
                    check_has_weights(layer)
                arrays = [blob.data.numpy() if self.precision not in (None, blob.data.dtype)
                          else aligned_values(blob.data) for blob in layer.blobs if blob is not None]
                op = self._op(layer, arrays)
            self._ops[index] = op
        return op

    def _op(self, layer: Layer, arrays: list):
        if layer.type == "Python":
            op_class = type("PythonLayerOp", (PythonLayer,),
                            {"allowed": self.allow_python_layers, "search_path": self.python_path})
        else:
            op_class = implementation(layer.type, layer.name)
        weights = [self.xp.asarray(self._host_weight(array)) for array in arrays]
        op = op_class(layer, self.xp, weights, self.phase)
        if self.winograd and hasattr(op, "winograd"):
            op.winograd = True
        return op

    def _random_op(self, index: int, layer: Layer, bottoms: list):
        """The op of a layer without weights, given seeded random ones (Caffe's
        fillers), now that its bottoms' shapes are known."""
        from ..fillers import random_weights

        rng = np.random.RandomState([self.random_weights, index])
        try:
            arrays = random_weights(layer, [tuple(b.shape) for b in bottoms], rng)
        except (ValueError, IndexError) as error:
            raise BlobcastError(f"layer {layer.name!r} ({layer.type}): cannot make random weights "
                                f"({error})") from error
        self._ops[index] = self._op(layer, arrays)
        return self._ops[index]

    def _check_budget(self, layer: Layer, op, bottoms: list, values: dict, kept: dict) -> None:
        """Refuse, before it runs, a layer that would take the blobs held so far
        past the memory budget (a tiny net can declare enormous blobs)."""
        held = {id(v): v.nbytes for v in list(values.values()) + list(kept.values())}
        _check_layer_memory(layer, op, [tuple(b.shape) for b in bottoms], sum(held.values()),
                            np.dtype(self.dtype).itemsize)

    def release(self) -> None:
        """Drop the weights the net holds on the device (aligned copies
        included); they are built again if it runs again."""
        self._ops = None

    def _in_place_chain(self, index: int, bottoms: list, kept: dict) -> list:
        """The apply functions of the run of element-wise layers from `index`
        that rewrite one blob in place (BatchNorm, Scale, ReLU, ...), when that
        blob's memory is the engine's alone: no other blob, input or caller
        sees it. Empty when the layers must run one by one."""
        layer = self.layers[index]
        if self.xp is not np or len(bottoms) != 1 or layer.tops != layer.bottoms or \
                not isinstance(bottoms[0], np.ndarray):
            return []
        # held by `values`, the bottoms list and, keeping every blob, `kept`
        holders = 2 + int(kept.get(layer.tops[0]) is bottoms[0])
        if not sole_reference(bottoms[0], holders):
            return []
        name, shape = layer.tops[0], bottoms[0].shape
        chain = []
        for position in range(index, len(self.layers)):
            later = self.layers[position]
            if later.bottoms != [name] or later.tops != [name] or later.type not in LAYER_TYPES:
                break
            op = self._op_at(position)
            if op is None:
                break
            apply = op.in_place(shape)
            if apply is None:
                break
            chain.append(apply)
        return chain

    def _host_weight(self, array: np.ndarray) -> np.ndarray:
        if self.precision is not None and array.dtype != self.precision:
            return array.astype(self.precision)
        return array

    def forward(self, inputs: dict, *, keep_all: bool = False, on_blob=None,
                final_only: bool = False, tolerate_missing: bool = False) -> dict:
        """Run the net; return its outputs (every blob with keep_all) as device arrays.

        `on_blob(name, array)` is called for every top as it is produced;
        with final_only, only for a blob's last version (no later layer
        rewrites it in place), which is the value keep_all returns.
        """
        xp = self.xp
        values = {}
        for name, shape in self.inputs.items():
            if name not in inputs:
                raise BlobcastError(f"the net input {name!r} needs a value")
            array = xp.asarray(inputs[name], dtype=self.dtype)
            if shape is not None and list(array.shape) != list(shape) and len(shape) != array.ndim:
                raise BlobcastError(f"input {name!r} has shape {list(array.shape)}; the net "
                                    f"declares {shape}")
            values[name] = array
        extra = set(inputs) - set(self.inputs)
        if extra:
            raise BlobcastError("the net has no input named " + ", ".join(sorted(extra)))
        # Memory depends on the shapes alone: planned once per set of input shapes.
        signature = (keep_all, tuple((name, tuple(v.shape)) for name, v in values.items()))
        check_budget = signature not in self._budget_checked
        last_use, last_write = {}, {}
        for index, layer in enumerate(self.layers):
            for bottom in layer.bottoms:
                last_use[bottom] = index
            for top in layer.tops:
                last_write[top] = index
        keep = set(self.outputs)
        kept = dict(values) if keep_all else {}
        run_until = 0  # layers before this index ran in place, in a chain
        for index, layer in enumerate(self.layers):
            if index < run_until:
                continue
            if tolerate_missing and any(name not in values for name in layer.bottoms):
                continue  # downstream of a layer that was not run
            try:
                bottoms = [values[name] for name in layer.bottoms]
            except KeyError as missing:
                raise BlobcastError(f"layer {layer.name!r}: its bottom {missing.args[0]!r} is "
                                    "never produced") from None
            op = self._op_at(index)
            if op is None:
                op = self._random_op(index, layer, bottoms)
            if check_budget:
                self._check_budget(layer, op, bottoms, values, kept)
            chain = self._in_place_chain(index, bottoms, kept)
            if not self.hold_weights:  # the local references keep them for this run
                self._ops[index:index + max(len(chain), 1)] = [_UNBUILT] * max(len(chain), 1)
            if chain:
                try:
                    run_in_place(bottoms[0], chain)
                except (ValueError, TypeError, FloatingPointError) as error:
                    raise BlobcastError(f"layer {layer.name!r} ({layer.type}) and the in-place "
                                        f"layers after it cannot run on a blob of shape "
                                        f"{list(bottoms[0].shape)}: {error}") from error
                run_until = index + len(chain)
                chain = op = None
                if on_blob is not None and (not final_only or last_write[layer.tops[0]] < run_until):
                    on_blob(layer.tops[0], bottoms[0])
                continue
            try:
                tops = op.forward(*bottoms)
            except (ValueError, TypeError, IndexError, ZeroDivisionError, FloatingPointError) as error:
                # Settings or weights that do not fit the data: the file's problem.
                shapes = [list(b.shape) for b in bottoms]
                raise BlobcastError(f"layer {layer.name!r} ({layer.type}) cannot run on inputs of "
                                    f"shape {shapes}: {str(error).strip()}") from error
            if len(tops) != len(layer.tops):
                raise BlobcastError(f"layer {layer.name!r} gave {len(tops)} outputs for "
                                    f"{len(layer.tops)} tops")
            for name, value in zip(layer.tops, tops):
                values[name] = value
                if keep_all:
                    kept[name] = value
                if on_blob is not None and (not final_only or last_write[name] == index):
                    on_blob(name, value)
            tops = value = op = None  # the tops are held by `values` alone, for _in_place_chain
            for name in layer.bottoms:  # free what no later layer needs
                if last_use.get(name) == index and name not in keep and name not in layer.tops:
                    values.pop(name, None)
        self._budget_checked.add(signature)
        if keep_all:
            return kept
        return {name: values[name] for name in self.outputs if name in values}


def _probe_count(array) -> int:
    return sys.getrefcount(array)


# What sys.getrefcount counts, inside a function, of an array held nowhere
# else (the parameter, the call's own): it differs between interpreters.
_REFERENCE_OFFSET = _probe_count(np.empty(1))


def sole_reference(array: np.ndarray, holders: int) -> bool:
    """Whether the array's memory is reachable only through the `holders`
    references the caller knows of: no view of it, nor of what it views, is
    held anywhere else (an input the caller still has, a weight, a blob
    that shares it). Arrays over memory NumPy did not allocate (a mapped
    file) never are."""
    if sys.getrefcount(array) - _REFERENCE_OFFSET != holders:
        return False
    base = array.base
    while base is not None:
        # held by its one view alone (`base` here stands where `array` did)
        if not isinstance(base, np.ndarray) or sys.getrefcount(base) - _REFERENCE_OFFSET != 1:
            return False
        base = base.base
    return True


BLOCK_BYTES = 1 << 18  # a block of a blob that stays in a core's L2 cache


def run_in_place(array: np.ndarray, chain: list) -> None:
    """Apply each function of `chain` to the array in place, block by block
    (per sample, a run of channels), on the engine's threads. Each value goes
    through the same operations as layer by layer, so the results are
    identical."""
    if array.ndim < 2 or array.size == 0:
        for apply in chain:
            apply(array, slice(None))
        return
    def work(sample: int, selected: slice) -> None:
        view = array[sample, selected]
        for apply in chain:
            apply(view, selected)

    run_channel_blocks(work, array.shape[0], array.shape[1],
                       prod(array.shape[2:]) * array.itemsize, BLOCK_BYTES)


def _check_layer_memory(layer: Layer, op, bottom_shapes: list, held_bytes: int, itemsize: int) -> None:
    """What a layer allocates (tops, temporaries) on top of the blobs held, within the budget."""
    check_allocation(held_bytes + op.values_needed(bottom_shapes) * itemsize,
                     f"layer {layer.name!r} ({layer.type}) with the blobs held before it")


def check_input_size(name: str, shape, dtype=np.float32) -> None:
    """An input's declared shape within the memory budget, before it is made."""
    if any(int(d) < 0 for d in shape):
        raise BlobcastError(f"the net input {name!r} has a negative dimension in {list(shape)}")
    count = 1
    for d in shape:
        count *= int(d)
    check_allocation(count * np.dtype(dtype).itemsize, f"the net input {name!r} of shape {list(shape)}")


def known_layer_types() -> list[str]:
    return sorted(LAYER_TYPES)


def blob_shapes(model: Model, input_shapes: dict[str, list[int]] | None = None,
                check_memory: bool = False, given_shapes: dict[str, list[int]] | None = None,
                **net_options) -> tuple[Net, dict[str, tuple[int, ...]]]:
    """Every blob's shape from the layer types' shape rules, without running
    anything or reading a weight. With skip_unrunnable, a layer the engine
    cannot run (or a Python layer) leaves its tops (and what follows from
    them) without a shape, unless `given_shapes` (top -> shape) gives them.
    Blobs rewritten in place keep their final shape.

    With check_memory, what a forward pass would hold at each layer (its
    inputs, the blobs kept for later layers, its tops and temporaries) is
    checked against the memory budget on the way: a pass that would not
    fit is refused before anything is allocated."""
    net = Net(model, **net_options)
    tolerate = net_options.get("skip_unrunnable", False)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, declared in net.inputs.items():
        shape = (input_shapes or {}).get(name, declared)
        if shape is None:
            raise net.shape_unknown(name)
        shapes[name] = tuple(int(d) for d in shape)
        if check_memory:
            check_input_size(name, shapes[name], net.dtype)
    itemsize = np.dtype(net.dtype).itemsize
    given = {name: tuple(int(d) for d in shape) for name, shape in (given_shapes or {}).items()}
    _check_given_shapes(net, given)
    position = {id(layer): i for i, layer in enumerate(model.layers)}
    left_out = {id(layer) for layer in net.unrun}
    in_order = sorted(net.layers + net.unrun, key=lambda layer: position[id(layer)])
    last_use = {bottom: index for index, layer in enumerate(in_order) for bottom in layer.bottoms}
    held = {name: prod(shape) for name, shape in shapes.items()}
    for index, layer in enumerate(in_order):
        if layer.type == "Python" or id(layer) in left_out:
            # Only running it would tell: the shapes the user gave, if any.
            for name in layer.tops:
                shapes.pop(name, None)
                if name in given:
                    shapes[name] = given[name]
                    held[name] = prod(given[name])
            continue
        missing = [name for name in layer.bottoms if name not in shapes]
        if missing:
            if tolerate:
                for name in layer.tops:
                    shapes.pop(name, None)
                continue  # downstream of a layer whose shapes are unknown
            raise BlobcastError(f"layer {layer.name!r}: its bottom {missing[0]!r} is never produced")
        op = implementation(layer.type, layer.name)(layer, np, [], net.phase)
        bottoms = [shapes[name] for name in layer.bottoms]
        if check_memory:
            _check_layer_memory(layer, op, bottoms, sum(held.values()) * itemsize, itemsize)
        tops = op.top_shapes(bottoms)
        for name, shape in zip(layer.tops, tops):
            if shape is not None:
                shapes[name] = tuple(int(d) for d in shape)
                held[name] = prod(shapes[name])
        for name in layer.bottoms:  # as the forward pass frees what no later layer reads
            if last_use.get(name) == index and name not in net.outputs and name not in layer.tops:
                held.pop(name, None)
    return net, shapes


def _check_given_shapes(net: Net, given: dict) -> None:
    """Shapes may be given only for the tops of layers that do not say theirs."""
    left_out = {id(layer) for layer in net.unrun}
    unsaid = {top for layer in net.layers + net.unrun
              if layer.type == "Python" or id(layer) in left_out for top in layer.tops}
    for name, shape in given.items():
        if name not in unsaid:
            raise BlobcastError(f"--shape {name}: only the tops of layers blobcast cannot run or "
                                f"size take a given shape, and {name!r} is not one")
        if not shape or any(d <= 0 for d in shape):
            raise BlobcastError(f"--shape {name}: every dimension must be positive")
