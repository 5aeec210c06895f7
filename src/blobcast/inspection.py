"""The facts `blobcast inspect` shows, as plain data (JSON-ready): of a
net, of a solver state, of the training a model carries, and whether a net
fits a target (app/inspect.py puts them together per file)."""

from __future__ import annotations

import numpy as np

from .errors import BlobcastError
from .io import converters as _converters
from .io import load
from .io import reading as _reading
from .model import Model
from .shapes import weight_shape_problem
from .solver import SolverState, learnable_slots, tie_history
from .solvers import DEFAULT_TYPE, SOLVER_TYPES, solver_class
from .targets import lower_for, target_named, target_problems
from .tensor import Tensor


def tensor_stats(tensor: Tensor) -> dict:
    """min/max/mean/std over the finite values, and NaN/Inf counts."""
    array = tensor.numpy()
    finite = np.isfinite(array)
    nan = int(np.isnan(array).sum())
    inf = int(array.size - finite.sum() - nan)
    values = array[finite] if (nan or inf) else array
    if values.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "nan": nan, "inf": inf}
    values64 = values.astype(np.float64, copy=False)
    return {"min": float(values.min()), "max": float(values.max()),
            "mean": float(values64.mean()), "std": float(values64.std()), "nan": nan, "inf": inf}


def _tensor_facts(tensor: Tensor, stats: bool) -> dict:
    facts = {"shape": list(tensor.shape), "dtype": tensor.dtype.name, "bytes": tensor.nbytes}
    if stats:
        facts["stats"] = tensor_stats(tensor)
    return facts


def model_facts(model: Model, stats: bool = False) -> dict:
    owners = model.param_owners()
    layers = []
    for li, layer in enumerate(model.layers):
        blobs = []
        for j, blob in enumerate(layer.blobs):
            if blob is None:
                blobs.append({"index": j, "absent": True})
                continue
            entry = {"index": j, **_tensor_facts(blob.data, stats)}
            if (li, j) in owners:
                entry["shared_with"] = model.layers[owners[(li, j)][0]].name
            elif layer.param_name(j):
                entry["param_name"] = layer.param_name(j)
            if blob.diff is not None:
                entry["diff"] = _tensor_facts(blob.diff, stats)
            entry["learnable"] = layer.lr_mult(j) != 0
            blobs.append(entry)
        entry = {"name": layer.name, "type": layer.type, "bottoms": list(layer.bottoms),
                 "tops": list(layer.tops), "settings": layer.key_settings(), "blobs": blobs}
        rules = _phase_rules(layer)
        if rules:
            entry["rules"] = rules
        layers.append(entry)
    return {
        "kind": "model",
        "name": model.name,
        "format": model.source_format,
        "caffe_version": model.source_version or None,
        "has_architecture": model.has_architecture,
        "inputs": model.inputs(),
        "layers": layers,
        "totals": {"layers": len(model.layers), "tensors": len(model.owned_params()),
                   "parameters": model.parameter_count, "bytes": model.nbytes,
                   "learnable_tensors": len(model.params()),
                   "state_tensors": len(model.states())},
        "runs": _deploy_net(model) if model.has_architecture else None,
        "unknown_fields": _converters().messages.unknown_fields(model),
        "notes": list(model.notes) + [
            f"layer {layer!r} reads blob {bottom!r}, which no earlier layer produces"
            for layer, bottom in (model.unproduced_bottoms() if model.has_architecture else [])]
        + ([] if model.has_architecture else [
            "no architecture: the file holds layer names and weights only; pair it with "
            "--prototxt"]) + _weight_shape_notes(model),
    }


def _weight_shape_notes(model: Model) -> list[str]:
    """A file that stores its net with its weights records them as they
    were, so a blob its layer class cannot take is shown, not refused (with
    --prototxt the weights must fit, and such a file is refused at load)."""
    if not model.has_architecture or not model.owned_params():
        return []
    problem = weight_shape_problem(model)
    return [f"{problem}; the net cannot run with it"] if problem else []


def module_facts(model: Model) -> dict:
    """The net as module instances: each top-level instance (with its nested
    ones) in place of its layers, plain layers as they are."""
    from .modules import module_summary, module_tree

    tree = {node["name"]: node for node in module_tree(model)}
    view, shown = [], set()
    for layer in model.layers:
        if not layer.module_path:
            view.append({"kind": "layer", "name": layer.name, "type": layer.type,
                         "bottoms": list(layer.bottoms), "tops": list(layer.tops)})
        elif layer.module_path[0] not in shown:
            shown.add(layer.module_path[0])
            view.append({"kind": "instance", **tree[layer.module_path[0]]})
    return {"modules": module_summary(model), "view": view,
            "instances": len(model.modules)}


def _phase_rules(layer) -> str:
    """A layer's include/exclude rules as one line ('include phase TEST')."""
    parts = []
    for kind in ("include", "exclude"):
        for rule in getattr(layer.spec, kind):
            said = [f"{k} {v}" for k, v in rule.to_dict().items()]
            parts.append(f"{kind} " + ", ".join(said) if said else kind)
    return "; ".join(parts)


def _deploy_net(model: Model) -> dict:
    """The net `run`, `verify` and the forward checks run: Caffe's TEST phase,
    data layers' tops as inputs, losses and evaluation layers left out."""
    from .engine import Net

    try:
        net = Net(model, skip_unrunnable=True)
    except BlobcastError as error:
        return {"phase": "TEST", "error": error.problem}
    return {"phase": "TEST", "layers": len(net.layers), "inputs": dict(net.inputs),
            "outputs": list(net.outputs),
            "not_run": [f"{s.name} ({s.type})" for s in net.skipped
                        if s.type != "input" and all(s.name != layer.name for layer in net.unrun)],
            "cannot_run": [f"{layer.name} ({layer.type})" for layer in net.unrun],
            "dropped_inputs": [s.name for s in net.skipped if s.type == "input"]}


def _state_net(state: SolverState, solver_net: Model | None):
    """The net whose parameter order the history follows, and where it came from."""
    if solver_net is not None:
        return solver_net, "solver"
    weights = state.find_weights()
    if weights is None:
        return None, None
    model = load(weights, format=_converters().weights_format(weights))
    if isinstance(model, Model) and model.has_architecture:
        return model, weights
    return None, None


_SOLVER_KEYS = ("type", "base_lr", "lr_policy", "gamma", "stepsize", "stepvalue", "power",
                "momentum", "momentum2", "weight_decay", "delta", "rms_decay", "max_iter",
                "iter_size", "regularization_type", "clip_gradients")


def _solver_settings(solver) -> dict:
    present = solver.to_dict()
    return {k: present.get(k, solver.type or DEFAULT_TYPE) for k in _SOLVER_KEYS
            if solver.has(k) or k == "type"}


def _grouped_history(entries, solver_type: str | None, stats: bool) -> list[dict]:
    kind = solver_class(solver_type or "")
    roles = kind.roles() if kind else ()
    grouped: dict[tuple[str, int], dict] = {}
    for i, entry in enumerate(entries):
        key = (entry.slot.layer, entry.slot.index)
        group = grouped.setdefault(key, {"layer": key[0], "blob": key[1], "tensors": []})
        role = roles[entry.set_index] if entry.set_index < len(roles) else f"set {entry.set_index}"
        group["tensors"].append({"index": i, "role": role, **_tensor_facts(entry.tensor, stats)})
    return list(grouped.values())


def _update_form(solver_type: str) -> str:
    kind = solver_class(solver_type)
    return kind.update_form if kind else ""


def _types_with(sets: int) -> str | None:
    """The solver types a state of `sets` history sets may come from, where
    that narrows them (one set is most types')."""
    if sets < 2:
        return None
    return " or ".join(name for name, kind in SOLVER_TYPES.items() if len(kind.history) == sets) or None


def training_facts(model: Model, stats: bool = False) -> dict:
    """What a model carrying its training holds: solver, iteration, optimizer state."""
    training = model.training
    kind = training.solver_type
    entries = training.entries(model)
    return {"solver_type": kind, "solver": _solver_settings(training.solver),
            "iter": training.state.iter, "current_step": training.state.current_step,
            "learned_net": training.state.learned_net, "update": _update_form(kind),
            "history_count": len(entries), "history": _grouped_history(entries, kind, stats),
            "bytes": training.state.nbytes}


def state_facts(state: SolverState, *, stats: bool = False, solver_path: str | None = None) -> dict:
    converters = _converters()
    solver_facts, solver_net, solver_type, solver_note = None, None, None, None
    if solver_path:
        solver = _reading(solver_path, lambda: converters.prototxt.read_solver(solver_path))
        solver_type = solver.type
        solver_facts = _solver_settings(solver)
        solver_net, solver_note = _reading(solver_path, lambda: converters.prototxt.net_of_solver(
            solver, solver_path))
    weights = state.find_weights()
    facts = {
        "kind": "solver_state", "format": state.source_format, "iter": state.iter,
        "current_step": state.current_step, "learned_net": state.learned_net,
        "learned_net_found": weights, "learned_net_tried": state.weights_candidates(),
        "solver": solver_facts, "history_count": len(state.history), "history": [],
        "bytes": state.nbytes,
    }
    if solver_note:
        facts["notes"] = [solver_note]
    net, net_source = _state_net(state, solver_net)
    entries = None
    if net is not None:
        entries = tie_history(state, learnable_slots(net), solver_type)
        facts["params_from"] = net_source
    if entries is None:
        facts["history"] = [{"index": i, **_tensor_facts(t, stats)}
                            for i, t in enumerate(state.history)]
        facts["note"] = "history not tied to parameters: no net found (give --solver)"
        return facts
    sets = max(e.set_index for e in entries) + 1 if entries else 1
    facts["history"] = _grouped_history(entries, solver_type, stats)
    facts["history_sets"] = sets
    facts["solver_type"] = solver_type or _types_with(sets)
    return facts


def target_facts(model: Model | None, target: str, extra_problems=(), rewrite: bool = False) -> dict:
    """Whether the net fits the target; with `rewrite` (a net convert writes
    anew, as from ONNX), after the exact rewrites convert --target makes."""
    chosen = target_named(target)
    rewrites = lower_for(model, chosen) if rewrite and model is not None else []
    problems = list(extra_problems) + (target_problems(model, chosen) if model is not None else [])
    facts = {"name": chosen.name, "description": chosen.description, "fits": not problems,
             "problems": problems}
    if rewrites:
        facts["rewrites"] = rewrites
    return facts


def module_view(model: Model) -> dict:
    if not model.modules:
        from .module_discovery import discover_modules

        discover_modules(model)
    return module_facts(model)
