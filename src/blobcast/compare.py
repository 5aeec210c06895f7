"""Bit-exact comparison of models and solver states (the check after writing)."""

from __future__ import annotations

from .model import Model
from .solver import SolverState
from .tensor import same_bits


def _tensor_map(model: Model) -> dict:
    out = {}
    for layer in model.layers:
        for j, blob in enumerate(layer.blobs):
            if blob is not None:
                out[(layer.name, j)] = blob
    return out


def model_differences(source: Model, written: Model, *, architecture: bool = True,
                      tensors: bool = True, diffs: bool = True, limit: int = 10) -> list[str]:
    """What differs between a model and its written copy (empty when identical)."""
    problems: list[str] = []
    if architecture and source.has_architecture and written.has_architecture:
        if [layer.name for layer in source.layers] != [layer.name for layer in written.layers]:
            problems.append("the layers differ in names or order")
        else:
            if source.net.to_dict() != written.net.to_dict():
                problems.append("net-level settings differ")
            for a, b in zip(source.layers, written.layers):
                if a.spec.to_dict() != b.spec.to_dict():
                    problems.append(f"layer {a.name!r}: settings differ")
    if not tensors:
        return problems
    ours, theirs = _tensor_map(source), _tensor_map(written)
    for key in ours.keys() - theirs.keys():
        problems.append(f"layer {key[0]!r} blob {key[1]}: missing from the output")
    for key in theirs.keys() - ours.keys():
        problems.append(f"layer {key[0]!r} blob {key[1]}: not in the source")
    for key in ours.keys() & theirs.keys():
        a, b = ours[key], theirs[key]
        if not same_bits(a.data, b.data):
            problems.append(f"layer {key[0]!r} blob {key[1]}: values differ")
        elif diffs and (a.diff is None) != (b.diff is None):
            problems.append(f"layer {key[0]!r} blob {key[1]}: gradient present in only one")
        elif diffs and a.diff is not None and not same_bits(a.diff, b.diff):
            problems.append(f"layer {key[0]!r} blob {key[1]}: gradients differ")
        if len(problems) >= limit:
            break
    return problems


def state_differences(source: SolverState, written: SolverState) -> list[str]:
    problems = []
    for name in ("iter", "current_step", "learned_net"):
        if getattr(source, name) != getattr(written, name):
            problems.append(f"{name} differs")
    if len(source.history) != len(written.history):
        problems.append(f"history count {len(source.history)} became {len(written.history)}")
    else:
        for i, (a, b) in enumerate(zip(source.history, written.history)):
            if not same_bits(a, b):
                problems.append(f"history tensor {i} differs")
    return problems
