"""Running a canonical Model forward with Caffe's semantics."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from .. import layers  # noqa: F401  (registers the layer types)
from ..check.runner import OPTION_FLAGS, Runner
from ..errors import BlobcastError
from ..layers.base import LAYER_TYPES, implementation, spec_for, unknown_settings
from ..limits import check_allocation
from ..model import Layer, Model, layer_included
from ..tensor import aligned_values
from ..weights import expected_blob_count
from .caffe_rules import check_net
from .data_inputs import data_layer_shapes, feeding_data_layers, is_data_layer, unknown_shape_hint
from .memory import ForwardPass, makes_new_memory, plan_memory, run_in_place
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


class Net(Runner):
    """A model ready to run: layers of one phase, weights on the device."""

    engine_name, runtime = "blobcast engine", "the engine"
    takes = frozenset(OPTION_FLAGS)
    plans_memory = streams_blobs = True

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
                    unknown = unknown_settings(layer)
                    if unknown and skip_unrunnable:
                        self.skipped.append(SkippedLayer(layer.name, layer.type, f"not run: {unknown}"))
                        self.unrun.append(layer)
                        continue
                    if unknown:
                        raise BlobcastError(f"layer {layer.name!r} ({layer.type}): {unknown}")
                self.layers.append(layer)
        # Every data top, a training net's labels too (a training step reads them).
        self.declared_inputs = dict(self.inputs)
        self._drop_unused_inputs()
        self.outputs = self._output_names()
        self.uncomputed = self._uncomputed_outputs()
        self.memory = plan_memory(self.layers, self.inputs, self.outputs)
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

    def _check_budget(self, layer: Layer, op, bottoms: list, run: ForwardPass) -> None:
        """Refuse, before it runs, a layer that would take the blobs held so far
        past the memory budget (a tiny net can declare enormous blobs)."""
        _check_layer_memory(layer, op, [tuple(b.shape) for b in bottoms], run.held_bytes,
                            run.itemsize)

    def release(self) -> None:
        """Drop the weights the net holds on the device (aligned copies
        included); they are built again if it runs again."""
        self._ops = None

    def _in_place_chain(self, index: int, bottoms: list, owned: set) -> list:
        """The apply functions of the run of element-wise layers from `index`
        that rewrite one blob in place (BatchNorm, Scale, ReLU, ...), when that
        blob's memory is the engine's alone (`owned`: made this pass by a layer
        that allocates its tops, read by no other layer). Empty when the layers
        must run one by one."""
        layer = self.layers[index]
        if self.xp is not np or len(bottoms) != 1 or layer.tops != layer.bottoms or \
                layer.tops[0] not in owned or not isinstance(bottoms[0], np.ndarray) or \
                not bottoms[0].flags.writeable:
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

    def _run_chain(self, layer: Layer, array, chain: list) -> None:
        try:
            run_in_place(array, chain)
        except (ValueError, TypeError, FloatingPointError) as error:
            raise BlobcastError(f"layer {layer.name!r} ({layer.type}) and the in-place layers "
                                f"after it cannot run on a blob of shape {list(array.shape)}: "
                                f"{error}") from error

    def _run_layer(self, layer: Layer, op, bottoms: list):
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
        return tops

    def _host_weight(self, array: np.ndarray) -> np.ndarray:
        if self.precision is not None and array.dtype != self.precision:
            return array.astype(self.precision)
        return array

    def forward(self, inputs: dict, *, keep_all: bool = False, on_blob=None,
                final_only: bool = False, tolerate_missing: bool = False) -> dict:
        """Run the net; return its outputs (every blob with keep_all) as device arrays.

        `on_blob(name, array)` is called for every top as it is produced;
        with final_only, only for a blob's last version (no later layer
        rewrites it or a blob sharing its memory), which is the value keep_all
        returns.
        """
        values = self._bind_inputs(inputs)
        # Memory depends on the shapes alone: planned once per set of input shapes.
        signature = (keep_all, tuple((name, tuple(v.shape)) for name, v in values.items()))
        run = ForwardPass(self.memory, values, dict(values) if keep_all else {}, keep_all, on_blob,
                          final_only, check_budget=signature not in self._budget_checked,
                          itemsize=np.dtype(self.dtype).itemsize)
        run_until = 0  # layers before this index ran in place, in a chain
        for index, layer in enumerate(self.layers):
            if index < run_until:
                continue
            if tolerate_missing and any(name not in values for name in layer.bottoms):
                continue  # downstream of a layer that was not run
            run_until = self._step(index, run)
        self._budget_checked.add(signature)
        if keep_all:
            return {name: run.current(name) for name in run.kept}
        return {name: run.current(name) for name in self.outputs if name in values}

    def _bind_inputs(self, inputs: dict) -> dict:
        values = {}
        for name, shape in self.inputs.items():
            if name not in inputs:
                raise BlobcastError(f"the net input {name!r} needs a value")
            array = self.xp.asarray(inputs[name], dtype=self.dtype)
            if shape is not None and list(array.shape) != list(shape) and len(shape) != array.ndim:
                raise BlobcastError(f"input {name!r} has shape {list(array.shape)}; the net "
                                    f"declares {shape}")
            values[name] = array
        extra = set(inputs) - set(self.inputs)
        if extra:
            raise BlobcastError("the net has no input named " + ", ".join(sorted(extra)))
        return values

    def _step(self, index: int, run: ForwardPass) -> int:
        """Run layer `index` (and the in-place layers after it, as one chain
        when they can); return the index of the next layer to run."""
        layer, values = self.layers[index], run.values
        bottoms = [run.current(name) if name in values else None for name in layer.bottoms]
        missing = next((name for name, b in zip(layer.bottoms, bottoms) if b is None), None)
        if missing is not None:
            raise BlobcastError(f"layer {layer.name!r}: its bottom {missing!r} is never produced")
        op = self._op_at(index)
        if op is None:
            op = self._random_op(index, layer, bottoms)
        if run.check_budget:
            self._check_budget(layer, op, bottoms, run)
        chain = self._in_place_chain(index, bottoms, run.owned)
        if not self.hold_weights:  # the local references keep them for this run
            self._ops[index:index + max(len(chain), 1)] = [_UNBUILT] * max(len(chain), 1)
        end = index + max(len(chain), 1)
        if chain:
            self._run_chain(layer, bottoms[0], chain)
            tops = [bottoms[0]]
        else:
            tops = self._run_layer(layer, op, bottoms)
            for name in layer.tops:  # reported (on_blob) versions stay as they are
                if makes_new_memory(layer) and (run.on_blob is None or run.final_only):
                    run.owned.add(name)
                else:
                    run.owned.discard(name)
        chain = op = bottoms = None
        for position, (name, value) in enumerate(zip(layer.tops, tops)):
            in_place = position < len(layer.bottoms) and layer.bottoms[position] == name
            run.store(name, value, end - 1, in_place)
        tops = value = None
        for ran in range(index, end):
            for name in self.memory.changed_at.get(ran, ()):  # through a blob sharing its memory
                if name in values or name in run.kept:
                    run.report(name, ran)
            for name in run.release_after.get(ran, ()):  # what no later layer needs
                run.release(name)
        return end
def _by_settings(layer: Layer, bottom_shapes: list, rule):
    """A layer's shape rule on its bottoms' shapes; settings it cannot follow
    (a zero stride, a zero aspect ratio) are the file's problem, said as such."""
    try:
        return rule(bottom_shapes)
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as error:
        shapes = [list(shape) for shape in bottom_shapes]
        raise BlobcastError(f"layer {layer.name!r} ({layer.type}): its settings do not give a "
                            f"shape for inputs of shape {shapes} ({str(error).strip()})") from error


def _check_layer_memory(layer: Layer, op, bottom_shapes: list, held_bytes: int, itemsize: int) -> None:
    """What a layer allocates (tops, temporaries) on top of the blobs held, within the budget."""
    check_allocation(held_bytes + _by_settings(layer, bottom_shapes, op.values_needed) * itemsize,
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


def _input_shapes_of(net: Net, input_shapes: dict | None, check_memory: bool) -> dict:
    """The net's input shapes: given, else declared (one line when neither)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, declared in net.inputs.items():
        shape = (input_shapes or {}).get(name, declared)
        if shape is None:
            raise net.shape_unknown(name)
        shapes[name] = tuple(int(d) for d in shape)
        if check_memory:
            check_input_size(name, shapes[name], net.dtype)
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
    shapes = _input_shapes_of(net, input_shapes, check_memory)
    itemsize = np.dtype(net.dtype).itemsize
    given = {name: tuple(int(d) for d in shape) for name, shape in (given_shapes or {}).items()}
    _check_given_shapes(net, given)
    position = {id(layer): i for i, layer in enumerate(model.layers)}
    left_out = {id(layer) for layer in net.unrun}
    in_order = sorted(net.layers + net.unrun, key=lambda layer: position[id(layer)])
    last_use = {bottom: index for index, layer in enumerate(in_order) for bottom in layer.bottoms}
    held = _HeldValues({name: prod(shape) for name, shape in shapes.items()})
    for index, layer in enumerate(in_order):
        if layer.type == "Python" or id(layer) in left_out:
            # Only running it would tell: the shapes the user gave, if any.
            for name in layer.tops:
                shapes.pop(name, None)
                if name in given:
                    shapes[name] = given[name]
                    held.set(name, prod(given[name]))
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
            _check_layer_memory(layer, op, bottoms, held.total * itemsize, itemsize)
        tops = _by_settings(layer, bottoms, op.top_shapes)
        for name, shape in zip(layer.tops, tops):
            if shape is not None:
                shapes[name] = tuple(int(d) for d in shape)
                held.set(name, prod(shapes[name]))
        for name in layer.bottoms:  # as the forward pass frees what no later layer reads
            if last_use.get(name) == index and name not in net.outputs and name not in layer.tops:
                held.drop(name)
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
