"""Running a canonical Model forward with Caffe's semantics: the layers its
schedule (blobcast.schedule) runs, in order, with the weights on the device."""

from __future__ import annotations

import numpy as np

from .. import layers  # noqa: F401  (registers the layer types)
from ..check.runner import OPTION_FLAGS, Runner
from ..errors import BlobcastError
from ..layers import allocation, compiled
from ..layers.base import LAYER_TYPES, implementation
from ..layers.compiled import run_in_place
from ..model import Layer, Model
from ..schedule import Schedule
from ..shapes import check_layer_memory
from ..tensor import aligned_values
from ..threads import products_on_engine_threads
from ..weights import check_has_weights, lacks_weights
from .buffers import ArrayPool
from .memory import ForwardPass, makes_new_memory, plan_memory
from .python_layer import PythonLayer


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


class Net(Runner):
    """A model ready to run: layers of one phase, weights on the device."""

    engine_name, runtime = "blobcast engine", "the engine"
    takes = frozenset(OPTION_FLAGS)
    plans_memory = streams_blobs = True

    def __init__(self, model: Model, *, device: str = "cpu", phase: str = "TEST", level: int = 0,
                 stages=(), allow_python_layers: bool = False, python_path=(),
                 skip_unrunnable: bool = False, precision=None, random_weights: int | None = None,
                 winograd: bool = True, hold_weights: bool = True):
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
        # Stride-1 3x3 convolutions by Winograd's F(2x2, 3x3) where it is
        # faster (layers/winograd.py); False: all in Caffe's summation order.
        self.winograd = winograd
        # False for a net run once (a check): each layer's weights are read
        # just before it runs and freed after, so the run holds the largest
        # layer's, not the whole net's (VGG16: 411 of 553 MB).
        self.hold_weights = hold_weights
        self.phase = phase
        self.allow_python_layers = allow_python_layers
        self.python_path = tuple(python_path)
        self.schedule = schedule = Schedule(
            model, phase=phase, level=level, stages=stages,
            allow_python_layers=allow_python_layers, skip_unrunnable=skip_unrunnable)
        # The schedule's, by the names the engine's callers know.
        self.caffe_layers, self.layers, self.unrun = schedule.caffe_layers, schedule.layers, schedule.unrun
        self.inputs, self.declared_inputs = schedule.inputs, schedule.declared_inputs
        self.input_sources, self.skipped = schedule.input_sources, schedule.skipped
        self.outputs, self.uncomputed = schedule.outputs, schedule.uncomputed
        self.shape_unknown = schedule.shape_unknown
        self.memory = plan_memory(schedule)
        self._ops = None
        # (layer index, blob, shape) -> the in-place chain there (_steps_from), while
        # ops are held; ("top", index, bottom shapes) -> the top's shape (_chain_after)
        self._chains: dict = {}
        self._budget_checked: set = set()
        self._passes = 0  # passes run: the compiled kernels apply from compiled.FROM_PASS on
        self._pool = ArrayPool()  # the arrays of released blobs, for the next layers and passes
        self._pool_signature = None

    @property
    def dtype(self):
        if self.precision is not None:
            return self.precision
        return self.schedule.dtype

    def _op_at(self, index: int):
        """The op of layer `index`, built on first use; None for a layer whose
        random weights wait for its bottoms' shapes (with random_weights)."""
        if self._ops is None:
            self._ops = [_UNBUILT] * len(self.layers)
        op = self._ops[index]
        if op is _UNBUILT:
            layer = self.layers[index]
            if self.random_weights is not None and lacks_weights(layer):
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
        if hasattr(op, "winograd"):
            op.winograd = self.winograd
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
        shapes = [tuple(b.shape) for b in bottoms]
        if self._pool.free_bytes:  # the pool's arrays count, or are let go
            try:
                check_layer_memory(layer, op, shapes, run.held_bytes + self._pool.free_bytes,
                                   run.itemsize)
                return
            except BlobcastError:
                self._pool.clear()
        check_layer_memory(layer, op, shapes, run.held_bytes, run.itemsize)

    def release(self) -> None:
        """Drop the weights the net holds on the device (aligned copies
        included) and the arrays its passes left for the next; they are
        built again if it runs again."""
        self._ops = None
        self._chains = {}
        self._pool.clear()

    def _in_place_chain(self, index: int, bottoms: list, owned: set) -> tuple[int, list]:
        """How many layers from `index` rewrite one blob in place (BatchNorm,
        Scale, ReLU, ...), and their element-wise steps in order, when that
        blob's memory is the engine's alone (`owned`: made this pass by a layer
        that allocates its tops, read by no other layer). (0, []) when the
        layers must run one by one."""
        layer = self.layers[index]
        if self.xp is not np or len(bottoms) != 1 or layer.tops != layer.bottoms or \
                layer.tops[0] not in owned or not isinstance(bottoms[0], np.ndarray) or \
                not bottoms[0].flags.writeable:
            return 0, []
        return self._steps_from(index, layer.tops[0], bottoms[0].shape)

    def _chain_after(self, index: int, op, bottoms: list, run: ForwardPass) -> tuple[int, list]:
        """The in-place chain right after layer `index` on its only top, for
        the layer to apply to each part of that top while the part is in
        cache: where the layer takes steps (`takes_steps`) and allocates the
        top, and no one sees the top before the chain has run."""
        layer = self.layers[index]
        if self.xp is not np or not op.takes_steps or len(layer.tops) != 1 or \
                layer.tops[0] in layer.bottoms or not makes_new_memory(layer) or \
                not (run.on_blob is None or run.final_only):
            return 0, []
        shapes = tuple(tuple(b.shape) for b in bottoms)
        shape = self._chains.get(("top", index, shapes))
        if shape is None:
            try:
                shape = op.top_shapes(list(shapes))[0]
            except (ValueError, TypeError, IndexError, BlobcastError):
                return 0, []  # the layer's own run says what is wrong
            if shape is None:
                return 0, []
            self._chains[("top", index, shapes)] = shape = tuple(shape)
        return self._steps_from(index + 1, layer.tops[0], shape)

    def _steps_from(self, index: int, name: str, shape: tuple) -> tuple[int, list]:
        """How many layers from `index` rewrite blob `name` in place, one
        after another, and their element-wise steps in order (found once
        for each shape while the net holds its ops: each pass asks again)."""
        key = (index, name, tuple(shape))
        found = self._chains.get(key)
        if found is None:
            found = self._find_steps(index, name, tuple(shape))
            if self.hold_weights:
                self._chains[key] = found
        return found

    def _find_steps(self, index: int, name: str, shape: tuple) -> tuple[int, list]:
        count, steps = 0, []
        for position in range(index, len(self.layers)):
            later = self.layers[position]
            if later.bottoms != [name] or later.tops != [name] or later.type not in LAYER_TYPES:
                break
            op = self._op_at(position)
            if op is None:
                break
            layer_steps = op.in_place(shape)
            if layer_steps is None:
                break
            count, steps = count + 1, steps + layer_steps
        return count, steps

    def _run_chain(self, layer: Layer, array, steps: list) -> None:
        try:
            run_in_place(array, steps)
        except (ValueError, TypeError, FloatingPointError) as error:
            raise BlobcastError(f"layer {layer.name!r} ({layer.type}) and the in-place layers "
                                f"after it cannot run on a blob of shape {list(array.shape)}: "
                                f"{error}") from error

    def _run_layer(self, layer: Layer, op, bottoms: list, steps: list = ()):
        """The layer's tops; `steps`, those of the in-place layers after it,
        applied to its top by the layer itself (_chain_after)."""
        try:
            tops = op.forward_with_steps(list(steps), *bottoms) if steps else op.forward(*bottoms)
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
        pool = self._pool_for(signature, keep_all or on_blob is not None)
        run = ForwardPass(self.memory, values, dict(values) if keep_all else {}, keep_all, on_blob,
                          final_only, check_budget=signature not in self._budget_checked,
                          itemsize=np.dtype(self.dtype).itemsize, pool=pool)
        run_until = 0  # layers before this index ran in place, in a chain
        # Shared at batch > 1 only: a single sample's unfolded parts went faster
        # on BLAS's own threads (VGG16 at batch 1, 2 cores: 195 against 242 ms),
        # and its 1x1 products are single products, which are not shared.
        batch = max((v.shape[0] for v in values.values() if v.ndim), default=1)
        try:
            with compiled.for_pass(self._passes), allocation.drawing_from(pool), \
                    products_on_engine_threads(self.xp is np and compiled.enabled(), batch):
                for index, layer in enumerate(self.layers):
                    if index < run_until:
                        continue
                    if tolerate_missing and any(name not in values for name in layer.bottoms):
                        continue  # downstream of a layer that was not run
                    run_until = self._step(index, run)
        finally:
            self._pool.end_pass()
            if not self.hold_weights:  # run once: hold nothing after it
                self._pool.clear()
        self._passes += 1
        self._budget_checked.add(signature)
        if keep_all:
            return {name: run.current(name) for name in run.kept}
        return {name: run.current(name) for name in self.outputs if name in values}

    def _pool_for(self, signature, shown: bool):
        """The pool this pass draws from: none where the caller sees every
        blob (keep_all, on_blob) or on the GPU (CuPy keeps its own); emptied
        when the input shapes change, so it holds one set of shapes' arrays."""
        if shown or self.xp is not np:
            return None
        if signature != self._pool_signature:
            self._pool.clear()
            self._pool_signature = signature
        return self._pool

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
        chained, steps = self._in_place_chain(index, bottoms, run.owned)
        fused = 0
        if not chained:
            fused, steps = self._chain_after(index, op, bottoms, run)
        end = index + max(chained, 1) + fused
        if not self.hold_weights:  # the local references keep them for this run
            self._ops[index:end] = [_UNBUILT] * (end - index)
        if chained:
            self._run_chain(layer, bottoms[0], steps)
            tops = [bottoms[0]]
        else:
            tops = self._run_layer(layer, op, bottoms, steps)
            for name in layer.tops:  # reported (on_blob) versions stay as they are
                if makes_new_memory(layer) and (run.on_blob is None or run.final_only):
                    run.owned.add(name)
                else:
                    run.owned.discard(name)
        steps = op = bottoms = None
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


def known_layer_types() -> list[str]:
    return sorted(LAYER_TYPES)
