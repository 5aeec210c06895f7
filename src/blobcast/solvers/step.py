"""One Caffe iteration's update in NumPy (SGDSolver::ApplyUpdate).

The rate from the iteration (GetLearningRate), ClipGradients, Regularize,
then each parameter's update by its solver type, subtracted as Net::Update
does. Float32 throughout, as Caffe's CPU solver computes; where Caffe's BLAS
fuses a*x + y into one rounding this rounds twice (float32 round-off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..params import Message
from .base import SOLVER_TYPES, f32, solver_type_of


def learning_rate(solver: Message, iteration: int, current_step: int) -> tuple[np.float32, int]:
    """(the rate, the new current_step): GetLearningRate. fixed, step, exp and
    multistep are computed in double (pow of a float and an int promotes) and
    rounded to float; inv, poly and sigmoid in float."""
    policy, base = solver.lr_policy, f32(solver.base_lr)
    if policy == "fixed":
        return base, current_step
    if policy in ("step", "exp", "multistep"):
        if policy == "step":
            current_step = iteration // solver.stepsize
        elif policy == "multistep":
            values = list(solver.stepvalue)
            if current_step < len(values) and iteration >= values[current_step]:
                current_step += 1
        exponent = iteration if policy == "exp" else current_step
        return f32(float(base) * float(f32(solver.gamma)) ** exponent), current_step
    gamma, it = f32(solver.gamma), f32(iteration)
    if policy == "inv":
        factor = (f32(1) + gamma * it) ** -f32(solver.power)
    elif policy == "poly":
        factor = (f32(1) - it / f32(solver.max_iter)) ** f32(solver.power)
    elif policy == "sigmoid":
        factor = f32(1) / (f32(1) + np.exp(-gamma * (it - f32(solver.stepsize))))
    else:
        raise FormatError(f"lr_policy {policy!r} is not one of Caffe's")
    return f32(base * factor), current_step


def clipped(gradients: list[np.ndarray], clip: float) -> list[np.ndarray]:
    """ClipGradients: every gradient scaled by clip / L2 norm when the norm exceeds clip."""
    total = f32(0)
    for gradient in gradients:
        flat = np.ascontiguousarray(gradient, np.float32).reshape(-1)
        total = f32(total + np.dot(flat, flat))
    norm, limit = f32(np.sqrt(total)), f32(clip)
    if norm <= limit:
        return gradients
    scale = f32(limit / norm)
    return [gradient * scale for gradient in gradients]


def regularized(solver: Message, value: np.ndarray, gradient: np.ndarray, decay_mult) -> np.ndarray:
    """Regularize: L2 adds local_decay * w, L1 local_decay * sign(w)."""
    decay = f32(f32(solver.weight_decay) * f32(decay_mult))
    if not decay:
        return gradient
    if solver.regularization_type == "L2":
        return decay * value + gradient
    if solver.regularization_type == "L1":
        return decay * np.sign(value) + gradient
    raise FormatError(f"regularization_type {solver.regularization_type!r}: Caffe knows L1 and L2")


@dataclass
class StepResult:
    values: list[np.ndarray]   # the parameters after the step
    history: list[np.ndarray]  # in the state's order: set by set, parameters in order
    iteration: int
    current_step: int
    rate: np.float32           # the rate the step used


def apply_update(solver: Message, values: list, gradients: list, history: list, *,
                 lr_mults: list, decay_mults: list, iteration: int, current_step: int = 0) -> StepResult:
    """One update of the learnable parameters `values` (Caffe's order) from
    their raw gradients and the state's history at `iteration`."""
    name = solver_type_of(solver)
    if name not in SOLVER_TYPES:
        raise FormatError(f"unknown solver type {name!r}; Caffe has " + ", ".join(SOLVER_TYPES))
    kind = SOLVER_TYPES[name].from_solver(solver)
    n = len(values)
    if len(gradients) != n or len(history) != len(kind.history) * n:
        raise FormatError(f"{len(values)} parameters, {len(gradients)} gradients and {len(history)} "
                          f"history tensors: a {name} step takes one gradient and "
                          f"{len(kind.history)} history tensor(s) per parameter")
    values = [np.asarray(v, np.float32) for v in values]
    grads = [np.asarray(g, np.float32) for g in gradients]
    rate, current_step = learning_rate(solver, iteration, current_step)
    if solver.clip_gradients >= 0:
        grads = clipped(grads, solver.clip_gradients)
    new_values, new_history = [], [None] * len(history)
    for i in range(n):
        gradient = regularized(solver, values[i], grads[i], decay_mults[i])
        local_rate = f32(rate * f32(lr_mults[i]))
        mine = [np.asarray(history[s * n + i], np.float32) for s in range(len(kind.history))]
        step, updated = kind.update(gradient, mine, local_rate, iteration + 1)
        new_values.append(values[i] - step)
        for s, tensor in enumerate(updated):
            new_history[s * n + i] = tensor
    return StepResult(new_values, new_history, iteration + 1, current_step, rate)
