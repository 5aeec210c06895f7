"""A Caffe training snapshot as ONNX training info (ModelProto.training_info).

The algorithm graph is one Caffe iteration, SGDSolver::ApplyUpdate in order:
the training-phase loss layers' loss, its gradients (the preview domain's
Gradient op), ClipGradients, Regularize, the learning rate computed from the
iteration, and the solver's update. Every state tensor (each parameter, its
history, the iteration and current step) is an initializer bound in
update_binding. The initialization graph resets the optimizer state as a
fresh Caffe run starts it; weights keep their values.

What ONNX has no place for rides in metadata_props, so a snapshot comes back
byte for byte: the net of every phase (binary NetParameter without blobs),
the solver's settings (prototxt text), which value holds each Caffe blob and
history tensor, and the state file's own fields.
"""

from __future__ import annotations

import base64
import json
from collections import Counter

import numpy as np
from google.protobuf import text_format
from onnx import TensorProto, helper

from blobcast.model import Layer, Model, layer_included
from blobcast.schedule import Schedule
from blobcast.solver import learnable_params
from blobcast.solvers import PREVIEW_DOMAIN, SOLVER_TYPES
from blobcast.solvers.base import GRADIENT, LOCAL_RATE, Const, history_symbol
from blobcast.tensor import reshaped

from . import caffe_pb2 as pb
from .caffemodel import net_chunks
from .messages import fill_pb
from .onnx_ops.registry import LOSS_EXPORTERS, ExportError

TRAINING_IR_VERSION = 7  # ModelProto.training_info
ITERATION, CURRENT_STEP = "solver.iter", "solver.current_step"
META_SOLVER = "caffe.solver"              # SolverParameter, prototxt text
META_NET = "caffe.net"                    # NetParameter without blobs, base64
META_PARAMS = "caffe.params"              # JSON [[layer, blob, value, legacy shape, shape], ...]
META_HISTORY = "caffe.history"            # JSON [value name, ...] in the state's order
META_LEARNED_NET = "caffe.learned_net"
META_STATE_EXTRA = "caffe.solverstate_extra"  # fields beyond Caffe's four (a fork's), base64
META_HDF5_TIMES = "caffe.solverstate_hdf5_times"  # JSON {dataset: mtime} of a .solverstate.h5
_FLOAT, _DOUBLE, _INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


def f32(value) -> np.float32:
    return np.float32(value)


class StepGraph:
    """Nodes, initializers, inputs and outputs of the algorithm graph."""

    def __init__(self):
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self.bindings: list[tuple[str, str]] = []
        self._counts = Counter()
        self._constants: dict = {}

    def fresh(self, hint: str) -> str:
        self._counts[hint] += 1
        return f"solver/{hint}" if self._counts[hint] == 1 else f"solver/{hint}_{self._counts[hint]}"

    def const(self, hint: str, value, dtype) -> str:
        array = np.asarray(value, dtype)
        key = (hint, array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:  # one initializer per distinct constant
            self._constants[key] = self.fresh(hint)
            self.initializers.append((self._constants[key], array))
        return self._constants[key]

    def node(self, op: str, inputs, hint: str, outputs=None, domain: str = "", **attributes):
        outputs = outputs or [self.fresh(hint)]
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=outputs[0],
                                           domain=domain or None, **attributes))
        return outputs[0] if len(outputs) == 1 else outputs

    def binary(self, op: str, a: str, b: str, hint: str) -> str:
        return self.node(op, [a, b], hint)


# -- the loss of the training net -----------------------------------------------------

def _loss_weight(layer) -> float:
    weights = list(layer.spec.loss_weight)
    return float(weights[0]) if weights else 1.0


def _loss(g: StepGraph, model: Model, builder) -> tuple[str, list[str]]:
    """The training net's total loss, and the training inputs the graph adds."""
    train = Schedule(model, phase="TRAIN", skip_unrunnable=True)
    losses = [layer for layer in model.layers
              if layer_included(layer, "TRAIN") and "Loss" in layer.type]
    if not losses:
        raise ExportError("the training net has no loss layer, so a training step has nothing "
                          "to differentiate")
    shapes = dict(builder.shapes)
    added: list[str] = []
    terms = []
    for layer in losses:
        if layer.type not in LOSS_EXPORTERS:
            raise ExportError(f"loss layer {layer.name!r} is a {layer.type}; the training step "
                              "is written for " + " and ".join(LOSS_EXPORTERS))
        values = []
        for bottom in layer.bottoms:
            if bottom in builder.latest:
                values.append(builder.latest[bottom])
                continue
            shape = train.declared_inputs.get(bottom)
            if shape is None:
                raise ExportError(f"loss layer {layer.name!r} reads {bottom!r}, which neither the "
                                  "exported graph nor a data layer of the training net gives")
            if bottom not in added:
                added.append(bottom)
                g.inputs.append(helper.make_tensor_value_info(bottom, _FLOAT, list(shape)))
            shapes[bottom] = tuple(shape)
            values.append(bottom)
        loss = LOSS_EXPORTERS[layer.type](g, layer, *values[:2], shapes)
        weight = _loss_weight(layer)
        if weight != 1.0:
            loss = g.binary("Mul", loss, g.const("loss_weight", weight, np.float32),
                            f"{layer.name}_weighted")
        terms.append(loss)
    total = terms[0] if len(terms) == 1 else g.node("Sum", terms, "loss")
    g.outputs.append(helper.make_tensor_value_info(total, _FLOAT, []))
    return total, added


# -- the learning rate (SGDSolver::GetLearningRate) -------------------------------------

def _learning_rate(g: StepGraph, solver, iteration: str, current_step: str) -> tuple[str, str]:
    """(the float32 rate, the new current_step), computed from the iteration.

    Caffe computes fixed, step, exp and multistep in double (pow of a float
    and an int promotes) and casts to float; inv, poly and sigmoid mix float
    arithmetic, written here in float32 (Pow and Exp as the runtime has them)."""
    policy = solver.lr_policy
    base = f32(solver.base_lr)
    if policy == "fixed":
        return g.const("rate", base, np.float32), current_step
    if policy in ("step", "exp", "multistep"):
        if policy == "step":
            new_step = g.binary("Div", iteration, g.const("stepsize", solver.stepsize, np.int64),
                                "current_step_next")
            exponent = new_step
        elif policy == "exp":
            new_step, exponent = current_step, iteration
        else:
            values = [int(v) for v in solver.stepvalue] + [np.iinfo(np.int64).max]
            steps = g.const("stepvalues", values, np.int64)
            index = g.binary("Min", current_step, g.const("stepvalue_count", len(values) - 1, np.int64),
                             "stepvalue_index")
            threshold = g.node("Gather", [steps, index], "stepvalue")
            reached = g.binary("GreaterOrEqual", iteration, threshold, "step_reached")
            step_up = g.node("Cast", [reached], "step_up", to=_INT64)
            new_step = g.binary("Add", current_step, step_up, "current_step_next")
            exponent = new_step
        power = g.binary("Pow", g.const("gamma", float(f32(solver.gamma)), np.float64),
                         g.node("Cast", [exponent], "exponent", to=_DOUBLE), "gamma_pow")
        rate = g.binary("Mul", g.const("base_lr", float(base), np.float64), power, "rate_double")
        return g.node("Cast", [rate], "rate", to=_FLOAT), new_step
    it = g.node("Cast", [iteration], "iter_float", to=_FLOAT)
    if policy == "inv":
        grown = g.binary("Add", g.const("one", 1.0, np.float32),
                         g.binary("Mul", g.const("gamma", f32(solver.gamma), np.float32), it,
                                  "gamma_iter"), "inv_base")
        factor = g.binary("Pow", grown, g.const("minus_power", -f32(solver.power), np.float32),
                          "inv_factor")
    elif policy == "poly":
        done = g.binary("Div", it, g.const("max_iter", f32(solver.max_iter), np.float32), "progress")
        left = g.binary("Sub", g.const("one", 1.0, np.float32), done, "remaining")
        factor = g.binary("Pow", left, g.const("power", f32(solver.power), np.float32), "poly_factor")
    else:  # sigmoid
        offset = g.binary("Sub", it, g.const("stepsize", f32(solver.stepsize), np.float32), "offset")
        scaled = g.binary("Mul", g.const("minus_gamma", -f32(solver.gamma), np.float32), offset,
                          "sigmoid_arg")
        exp = g.node("Exp", [scaled], "sigmoid_exp")
        factor = g.binary("Div", g.const("one", 1.0, np.float32),
                          g.binary("Add", g.const("one", 1.0, np.float32), exp, "sigmoid_den"),
                          "sigmoid_factor")
    return g.binary("Mul", g.const("base_lr", base, np.float32), factor, "rate"), current_step


# -- one iteration --------------------------------------------------------------------

class _Param:
    """One learnable parameter: its Caffe place, its ONNX value and its multipliers."""

    def __init__(self, layer, index: int, value: str, in_graph: bool, shape):
        self.layer, self.index, self.value, self.in_graph = layer, index, value, in_graph
        self.blob = layer.blobs[index]
        self.shape = tuple(shape)  # as the ONNX value has it (a reshape of Caffe's)
        self.lr_mult = f32(layer.lr_mult(index))
        self.decay_mult = f32(layer.decay_mult(index))


def _graph_value(builder, layer, index: int, blob, initializers: dict):
    """(name, shape) of the inference-graph initializer holding this blob's
    values as they are or merely reshaped (Scale's C as C x 1 x 1), else None."""
    name = builder.initializer_names.get(id(blob))
    if name is not None:
        return name, blob.shape
    name = f"{layer.name}/param{index}_onnx"
    array = initializers.get(name)
    if array is None:
        return None
    array = np.asarray(array.numpy() if hasattr(array, "numpy") else array)
    if array.size != blob.data.size or not np.array_equal(array.reshape(-1),
                                                          blob.data.numpy().reshape(-1)):
        return None  # a transformed copy (BatchNorm's statistics divided by their factor)
    return name, array.shape


def _params(g: StepGraph, model: Model, builder) -> list[_Param]:
    initializers = dict(builder.initializers)
    taken = set(initializers)
    params = []
    for layer, index in learnable_params(model):
        if index >= len(layer.blobs) or layer.blobs[index] is None:
            raise ExportError(f"layer {layer.name!r} lacks its blob {index}, which the solver "
                              "state has history for")
        blob = layer.blobs[index]
        found = _graph_value(builder, layer, index, blob, initializers)
        if found is None:
            # Not in the inference graph as it is: its own state here.
            value = f"{layer.name}/param{index}"
            while value in taken:
                value += "_state"
            g.initializers.append((value, blob.data))
            found = (value, blob.shape)
            in_graph = False
        else:
            in_graph = True
        taken.add(found[0])
        params.append(_Param(layer, index, found[0], in_graph, found[1]))
    return params


def _gradients(g: StepGraph, params: list[_Param], loss: str, data_inputs: list[str]) -> list[str]:
    trained = [p for p in params if p.lr_mult != 0]
    for p in trained:
        if not p.in_graph:
            raise ExportError(f"the gradient of layer {p.layer.name!r} blob {p.index} cannot be "
                              "taken: the exported graph uses it in a changed form")
    names = [f"{p.value}.gradient" for p in trained]
    if trained:
        g.node("Gradient", [p.value for p in trained] + data_inputs, "gradient", outputs=names,
               domain=PREVIEW_DOMAIN, xs=[p.value for p in trained], zs=data_inputs, y=loss)
    grads, made = [], iter(names)
    for p in params:
        if p.lr_mult != 0:
            grads.append(next(made))
        else:  # Caffe does not propagate to a parameter with lr_mult 0: its diff stays 0
            shape = g.const("shape", list(p.shape), np.int64)
            grads.append(g.node("ConstantOfShape", [shape], f"{p.value}.gradient",
                                value=helper.make_tensor("zero", _FLOAT, [1], [0.0])))
    return grads


def _clip(g: StepGraph, grads: list[str], clip: float) -> list[str]:
    """ClipGradients: every gradient scaled by clip / L2 norm when the norm exceeds clip."""
    squares = [g.node("ReduceSumSquare", [grad], "sum_sq", keepdims=0) for grad in grads]
    total = squares[0] if len(squares) == 1 else g.node("Sum", squares, "sum_sq_total")
    norm = g.node("Sqrt", [total], "gradient_norm")
    limit = g.const("clip_gradients", f32(clip), np.float32)
    over = g.binary("Greater", norm, limit, "clipping")
    scale = g.node("Where", [over, g.binary("Div", limit, norm, "clip_scale"),
                             g.const("one", 1.0, np.float32)], "gradient_scale")
    return [g.binary("Mul", grad, scale, "clipped") for grad in grads]


def _regularized(g: StepGraph, solver, p: _Param, grad: str) -> str:
    decay = f32(f32(solver.weight_decay) * p.decay_mult)
    if not decay:
        return grad
    term = p.value if solver.regularization_type == "L2" else g.node("Sign", [p.value], "sign")
    scaled = g.binary("Mul", term, g.const("local_decay", decay, np.float32), "decay_term")
    return g.binary("Add", grad, scaled, "regularized")


def _local_rate(g: StepGraph, rate: str, p: _Param, cache: dict) -> str:
    if p.lr_mult not in cache:
        cache[p.lr_mult] = rate if p.lr_mult == 1 else g.binary(
            "Mul", rate, g.const("lr_mult", p.lr_mult, np.float32), "local_rate")
    return cache[p.lr_mult]


def _groups(params: list[_Param]) -> dict:
    groups: dict = {}
    for i, p in enumerate(params):
        groups.setdefault((float(p.lr_mult), float(p.decay_mult)), []).append(i)
    return groups


def _preview_update(g: StepGraph, kind, solver, params, grads, history, rate: str,
                    next_iter: str, l2: bool) -> tuple[list[str], list[list[str]]]:
    """The solver type's training-domain node, one per (lr_mult, decay_mult) group."""
    new_x = [None] * len(params)
    new_h = [[None] * len(params) for _ in history]
    rates: dict = {}
    for (lr_mult, decay_mult), members in _groups(params).items():
        decay = f32(f32(solver.weight_decay) * f32(decay_mult)) if l2 else f32(0)
        form = kind.preview_update(f32(lr_mult), decay)
        xs = [params[i].value for i in members]
        gs = [grads[i] for i in members]
        states = [[h[i] for i in members] for h in history]
        outs = [[f"{params[i].value}.next" for i in members]] + [
            [f"{h[i]}.next" for i in members] for h in history]
        given_rate = (_local_rate(g, rate, params[members[0]], rates) if form.rate is None
                      else g.const("one" if form.rate == 1 else "rate", form.rate, np.float32))
        g.node(form.op, [given_rate, next_iter] + xs + gs + [s for group in states for s in group],
               "update", outputs=[name for group in outs for name in group], domain=form.domain,
               **form.attributes)
        for k, i in enumerate(members):
            new_x[i] = outs[0][k]
            for s in range(len(history)):
                new_h[s][i] = outs[1 + s][k]
    return new_x, new_h


def _plain_update(g: StepGraph, kind, params, grads, history, rate: str):
    """The solver type's update in standard ops, term for term as Caffe's
    ComputeUpdateValue computes them, for each parameter."""
    form = kind.standard_update()
    new_x, new_h = [], [[] for _ in history]
    rates: dict = {}
    for i, p in enumerate(params):
        h = [hist[i] for hist in history]
        values = {GRADIENT: grads[i], LOCAL_RATE: _local_rate(g, rate, p, rates),
                  **{history_symbol(s): name for s, name in enumerate(h)}}
        for op in form.ops:
            inputs = [g.const(x.hint, x.value, np.float32) if isinstance(x, Const) else values[x]
                      for x in op.inputs]
            values[op.name] = g.node(op.op, inputs, op.name)
        new_x.append(g.node("Sub", [p.value, values[form.step]], "", outputs=[f"{p.value}.next"]))
        for s, name in enumerate(form.history):
            new_h[s].append(g.node("Identity", [values[name]], "", outputs=[f"{h[s]}.next"]))
    return new_x, new_h


def build_training_info(model: Model, builder):
    """(TrainingInfoProto without initializer values, [(name, array)] of its
    algorithm initializers, metadata {key: value}) for a model carrying training."""
    training = model.training
    solver, state = training.solver, training.state
    training.check(model)
    kind = SOLVER_TYPES[training.solver_type].from_solver(solver)
    g = StepGraph()
    params = _params(g, model, builder)
    suffixes = kind.suffixes()
    n = len(params)
    history_names = [f"{params[k % n].value}.{suffixes[k // n]}" for k in range(len(state.history))]
    # each history tensor in its parameter's shape in the graph: (name, element type, shape)
    typed = [(name, helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype)), params[k % n].shape)
             for k, (name, tensor) in enumerate(zip(history_names, state.history))]
    for (name, _, shape), tensor in zip(typed, state.history):
        g.initializers.append((name, reshaped(tensor, shape)))
    g.initializers.append((ITERATION, np.array(state.iter, np.int64)))
    g.initializers.append((CURRENT_STEP, np.array(state.current_step, np.int64)))

    loss, labels = _loss(g, model, builder)
    grads = _gradients(g, params, loss, list(builder.schedule.inputs) + labels)
    if solver.clip_gradients >= 0:
        grads = _clip(g, grads, solver.clip_gradients)
    # Normalize (iter_size): the gradient is taken of the batch fed, as one pass; see docs/training.md.
    rate, new_step = _learning_rate(g, solver, ITERATION, CURRENT_STEP)
    next_iter = g.binary("Add", ITERATION, g.const("one_step", 1, np.int64), "iter_next")
    history = [typed[s * n:(s + 1) * n] for s in range(len(suffixes))]
    history_values = [[name for name, _, _ in names] for names in history]
    preview = kind.uses_preview_op
    l2_in_op = preview and solver.regularization_type == "L2"
    if not l2_in_op:
        grads = [_regularized(g, solver, p, grad) for p, grad in zip(params, grads)]
    if preview:
        new_x, new_h = _preview_update(g, kind, solver, params, grads, history_values, rate,
                                       next_iter, l2_in_op)
    else:
        new_x, new_h = _plain_update(g, kind, params, grads, history_values, rate)

    for p, updated in zip(params, new_x):
        g.bindings.append((p.value, updated))
        g.outputs.append(helper.make_tensor_value_info(updated, _FLOAT, list(p.shape)))
    for names, updates in zip(history, new_h):
        for (name, element, shape), updated in zip(names, updates):
            g.bindings.append((name, updated))
            g.outputs.append(helper.make_tensor_value_info(updated, element, list(shape)))
    g.bindings.append((ITERATION, next_iter))
    g.outputs.append(helper.make_tensor_value_info(next_iter, _INT64, []))
    if new_step != CURRENT_STEP:
        g.bindings.append((CURRENT_STEP, new_step))
        g.outputs.append(helper.make_tensor_value_info(new_step, _INT64, []))

    algorithm = helper.make_graph(g.nodes, "caffe_training_step", g.inputs, g.outputs,
                                  doc_string=f"One Caffe {kind.name} iteration (SGDSolver::ApplyUpdate)")
    info = helper.make_training_info(algorithm, g.bindings, _initialization(typed),
                                     [(name, f"{name}.reset") for name in history_names]
                                     + [(ITERATION, f"{ITERATION}.reset"),
                                        (CURRENT_STEP, f"{CURRENT_STEP}.reset")])
    return info, g.initializers, _metadata(model, params, history_names, builder)


def _initialization(history: list[tuple]):
    """A fresh Caffe run's optimizer state: zero history, iteration and step 0."""
    nodes, outputs = [], []
    for name, element, shape in history:
        shape = list(shape)
        nodes.append(helper.make_node(
            "ConstantOfShape", [f"{name}.shape"], [f"{name}.reset"], name=f"{name}.reset"))
        nodes.insert(0, helper.make_node("Constant", [], [f"{name}.shape"],
                                         value=helper.make_tensor(f"{name}.shape", _INT64,
                                                                  [len(shape)], shape)))
        outputs.append(helper.make_tensor_value_info(f"{name}.reset", element, shape))
    for name in (ITERATION, CURRENT_STEP):
        nodes.append(helper.make_node("Constant", [], [f"{name}.reset"],
                                      value=helper.make_tensor(name, _INT64, [], [0])))
        outputs.append(helper.make_tensor_value_info(f"{name}.reset", _INT64, []))
    return helper.make_graph(nodes, "caffe_optimizer_reset", [], outputs)


def _metadata(model: Model, params: list[_Param], history_names: list[str], builder) -> dict:
    training = model.training
    bare = Model(net=model.net, layers=[_without_blobs(layer) for layer in model.layers])
    net_bytes = b"".join(bytes(chunk) for chunk in net_chunks(bare, write_diff=False))
    places = []
    learnable = {id(p.blob): p.value for p in params}
    initializers = dict(builder.initializers)
    for li, layer in enumerate(model.layers):
        for bi, blob in enumerate(layer.blobs):
            if blob is None:
                continue
            value = learnable.get(id(blob))
            if value is None:  # not trained: found in the inference graph, or nowhere
                found = _graph_value(builder, layer, bi, blob, initializers)
                value = found[0] if found else None
            if value is None:
                raise ExportError(f"layer {layer.name!r} blob {bi} is in no graph; the training "
                                  "snapshot could not be restored from the ONNX model")
            legacy = list(blob.legacy_shape) if blob.legacy_shape else None
            places.append([li, bi, value, legacy, list(blob.shape)])
    solver = pb.SolverParameter()
    fill_pb(solver, training.solver)
    extra = pb.SolverState()
    fill_pb(extra, training.state.extra)
    return {
        META_SOLVER: text_format.MessageToString(solver),
        META_NET: base64.b64encode(net_bytes).decode("ascii"),
        META_PARAMS: json.dumps(places),
        META_HISTORY: json.dumps(history_names),
        META_LEARNED_NET: training.state.learned_net,
        META_STATE_EXTRA: base64.b64encode(extra.SerializeToString()).decode("ascii"),
        **({META_HDF5_TIMES: json.dumps(training.state.hdf5_times)} if training.state.hdf5_times
           else {}),
    }


def _without_blobs(layer):
    return Layer(spec=layer.spec)
