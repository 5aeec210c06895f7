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
from .solver import HistoryEntry, SolverState, learnable_slots, tie_history
from .solvers import SOLVER_TYPES, solver_type_of

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
REGULARIZATION = ("L1", "L2")


def solver_type(solver: Message) -> str:
    """The type a SolverParameter names (SGD when it names none)."""
    return solver_type_of(solver)


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
        if kind not in SOLVER_TYPES:
            raise FormatError(f"unknown solver type {kind!r}; Caffe has " + ", ".join(SOLVER_TYPES),
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
        refusal = SOLVER_TYPES[kind].refusal(solver)
        if refusal:
            raise FormatError(refusal, where)
        if not model.has_architecture:
            raise FormatError("the weights file holds no layer definitions; give the training "
                              "net with --prototxt", where)
        return self.entries(model)


def optimizer_state(model: Model) -> list[HistoryEntry]:
    """The optimizer state of a model that carries its training, tied to parameters."""
    if model.training is None:
        return []
    return model.training.entries(model)


__all__ = ["LR_POLICIES", "Training", "optimizer_state", "solver_type"]
