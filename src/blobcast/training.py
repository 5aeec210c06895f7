"""A training snapshot carried with its model: solver settings and state.

A `Model` may hold a `Training`: the SolverParameter that trained it and the
SolverState Caffe wrote beside it (iteration, current step, history). The
model's layers are then the training net (every phase), so the history ties
to its learnable parameters as Caffe's `learnable_params_` orders them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FormatError
from .model import Model
from .params import Message
from .solver import HISTORY_ROLES, HISTORY_SETS, HistoryEntry, SolverState, learnable_slots, tie_history

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
REGULARIZATION = ("L1", "L2")

# How the ONNX training step writes each solver's update, and how exactly it
# matches Caffe (docs/training.md, "Training state in ONNX").
UPDATE_FORMS = {
    "SGD": "ai.onnx.preview.training Momentum when lr_policy is fixed (and regularization L2), "
           "else standard ops",
    "Nesterov": "standard ops",
    "AdaGrad": "ai.onnx.preview.training Adagrad",
    "RMSProp": "standard ops",
    "AdaDelta": "standard ops",
    "Adam": "ai.onnx.preview.training Adam",
}

# Value names of the optimizer state in ONNX: `<parameter>.<suffix>`.
HISTORY_SUFFIXES = {
    "SGD": ("momentum",), "Nesterov": ("momentum",), "AdaGrad": ("adagrad_sum_sq",),
    "RMSProp": ("rmsprop_mean_sq",), "AdaDelta": ("adadelta_mean_sq_grad", "adadelta_mean_sq_step"),
    "Adam": ("adam_m", "adam_v"),
}


def solver_type(solver: Message) -> str:
    return solver.type if solver.has("type") else "SGD"


@dataclass
class Training:
    """The solver's settings (a SolverParameter) and the state it left."""

    solver: Message
    state: SolverState

    @property
    def solver_type(self) -> str:
        return solver_type(self.solver)

    def entries(self, model: Model) -> list[HistoryEntry]:
        """Each history tensor with its parameter (FormatError on a mismatch)."""
        return tie_history(self.state, learnable_slots(model), self.solver_type)

    def check(self, model: Model, where: str | None = None) -> list[HistoryEntry]:
        """What Caffe's solver would refuse, as one FormatError; else the tied history."""
        kind, solver = self.solver_type, self.solver
        if kind not in HISTORY_SETS:
            raise FormatError(f"unknown solver type {kind!r}; Caffe has " + ", ".join(HISTORY_SETS),
                              where)
        policy = solver.lr_policy
        if policy not in LR_POLICIES:
            raise FormatError(f"lr_policy {policy!r} is not one of Caffe's: " + ", ".join(LR_POLICIES)
                              + " (a fork's policy has no ONNX form here)", where)
        if solver.regularization_type not in REGULARIZATION:
            raise FormatError(f"regularization_type {solver.regularization_type!r}: Caffe knows "
                              "L1 and L2", where)
        if policy == "step" and solver.stepsize <= 0:
            raise FormatError("lr_policy step needs a positive stepsize", where)
        if policy == "poly" and solver.max_iter <= 0:
            raise FormatError("lr_policy poly needs a positive max_iter", where)
        if policy == "multistep" and list(solver.stepvalue) != sorted(solver.stepvalue):
            raise FormatError("lr_policy multistep needs its stepvalues in increasing order", where)
        if kind in ("AdaGrad", "RMSProp") and solver.momentum != 0:
            raise FormatError(f"{kind} takes no momentum (Caffe checks it is 0)", where)
        if not model.has_architecture:
            raise FormatError("the weights file holds no layer definitions; give the training "
                              "net with --prototxt", where)
        return self.entries(model)


def optimizer_state(model: Model) -> list[HistoryEntry]:
    """The optimizer state of a model that carries its training, tied to parameters."""
    if model.training is None:
        return []
    return model.training.entries(model)


__all__ = ["HISTORY_ROLES", "HISTORY_SUFFIXES", "LR_POLICIES", "Training", "UPDATE_FORMS",
           "optimizer_state", "solver_type"]
