"""What blobcast knows about each Caffe solver type, in one place per type.

A solver type is one class (like Caffe's SGDSolver and its subclasses): its
name, its history sets (what each holds, and the name of its value in
ONNX), its settings (dataclass fields named as the SolverParameter's
fields), what Caffe's constructor refuses, its update
(ComputeUpdateValue) in NumPy, and its ONNX update described as plain
data: the converters write the nodes, since nothing here imports a
file-format library. `register` (like Caffe's REGISTER_SOLVER_CLASS)
refuses duplicates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..params import Message
from ..schema import ENUMS

PREVIEW_DOMAIN = "ai.onnx.preview.training"
DEFAULT_TYPE = "SGD"  # SolverParameter.type's default

# Symbols a StandardUpdate reads: the parameter's gradient (clipped and
# regularized), its local rate (the schedule's rate times lr_mult), and
# `history_symbol(k)`: its k-th history set's value before the step.
GRADIENT, LOCAL_RATE = "gradient", "local_rate"


def history_symbol(k: int) -> str:
    return f"history{k}"


def f32(value) -> np.float32:
    return np.float32(value)


@dataclass(frozen=True)
class HistorySet:
    role: str    # what it holds, as `inspect` names it
    suffix: str  # its ONNX value: `<parameter value>.<suffix>`


@dataclass(frozen=True)
class Const:
    """A float32 scalar; `hint` names its initializer."""

    hint: str
    value: np.float32


@dataclass(frozen=True)
class Op:
    """One standard ONNX node, `name = op(*inputs)`; an input is a symbol
    (given, or the name of an earlier Op) or a Const."""

    name: str
    op: str
    inputs: tuple


@dataclass(frozen=True)
class StandardUpdate:
    """One parameter's update in standard ONNX ops: `step` is subtracted
    from the parameter; `history` are the new values of its history sets."""

    ops: tuple[Op, ...]
    step: str
    history: tuple[str, ...]


@dataclass(frozen=True)
class PreviewUpdate:
    """One node of ONNX's training domain for the parameters that share an
    lr_mult and a decay_mult. Its inputs are laid out as the op defines:
    R (`rate`: a constant, or None for the local rate computed in the
    graph), T (the iteration after the step), the parameters, their
    gradients, then each history set; its outputs the new parameters, then
    each history set."""

    op: str
    attributes: dict
    rate: float | None = None
    domain: str = PREVIEW_DOMAIN


SOLVER_TYPES: dict[str, type[SolverType]] = {}
_PREVIEW_OPS: dict[str, type[SolverType]] = {}


def register(cls: type[SolverType]) -> type[SolverType]:
    """Class decorator: the solver type `cls.name`, and the preview op it answers to."""
    if cls.name in SOLVER_TYPES:
        raise RuntimeError(f"solver type {cls.name!r} is registered twice")
    if cls.preview_op is not None:
        if cls.preview_op in _PREVIEW_OPS:
            raise RuntimeError(f"preview op {cls.preview_op!r} is claimed twice")
        _PREVIEW_OPS[cls.preview_op] = cls
    SOLVER_TYPES[cls.name] = cls
    return cls


def solver_type_of(solver: Message) -> str:
    """The type a SolverParameter names (Caffe's default when it names none)."""
    return solver.type if solver.has("type") else DEFAULT_TYPE


def solver_class(name: str) -> type[SolverType] | None:
    return SOLVER_TYPES.get(name)


def preview_solver(op: str) -> type[SolverType] | None:
    """The solver type whose update the training domain's op `op` is."""
    return _PREVIEW_OPS.get(op)


def legacy_type_name(number: int) -> str | None:
    """The type the legacy `solver_type` enum value names (Caffe's
    UpgradeSolverType: the enum's names are the types' in capitals)."""
    for name, value in ENUMS["SolverParameter.SolverType"].items():
        if value == number:
            return next((n for n in SOLVER_TYPES if n.upper() == name), None)
    return None


@dataclass(frozen=True)
class SolverType:
    """A Caffe solver type. Subclasses are frozen dataclasses whose fields
    are the SolverParameter settings their update reads, as float32 and
    named as the message names them (`from_solver` reads them so; a type
    that needs more overrides it)."""

    name: ClassVar[str] = ""
    history: ClassVar[tuple[HistorySet, ...]] = ()
    update_form: ClassVar[str] = ""         # how the ONNX step writes it, as `inspect` says
    preview_op: ClassVar[str | None] = None  # the training-domain op its update can be
    takes_momentum: ClassVar[bool] = True    # AdaGrad and RMSProp check momentum is 0

    @classmethod
    def from_solver(cls, solver: Message) -> SolverType:
        return cls(**{f.name: f32(getattr(solver, f.name)) for f in dataclasses.fields(cls)})

    @classmethod
    def refusal(cls, solver: Message) -> str | None:
        """What Caffe's solver constructor refuses in `solver`, else None."""
        if not cls.takes_momentum and solver.momentum != 0:
            return f"{cls.name} takes no momentum (Caffe checks it is 0)"
        return None

    @classmethod
    def roles(cls) -> tuple[str, ...]:
        return tuple(h.role for h in cls.history)

    @classmethod
    def suffixes(cls) -> tuple[str, ...]:
        return tuple(h.suffix for h in cls.history)

    def update(self, gradient: np.ndarray, history: list[np.ndarray], rate: np.float32,
               t: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Caffe's ComputeUpdateValue for one parameter, in float32: (the
        value Net::Update subtracts, the new history). `gradient` is clipped
        and regularized, `rate` the local rate, `t` Caffe's iter_ + 1."""
        raise NotImplementedError

    # -- ONNX --------------------------------------------------------------------------

    @property
    def uses_preview_op(self) -> bool:
        return self.preview_op is not None

    def preview_update(self, lr_mult: np.float32, decay: np.float32) -> PreviewUpdate:
        """The training-domain node for one (lr_mult, decay_mult) group;
        `decay` is the group's L2 decay, 0 when the op leaves it out."""
        raise NotImplementedError(f"{self.name} is written in standard ops")

    def standard_update(self) -> StandardUpdate:
        raise NotImplementedError(f"{self.name} is written as {self.preview_op}")

    @classmethod
    def run_preview(cls, rate, t: int, params: list, gradients: list, history: list[list],
                    **attributes) -> tuple[list, list[list]]:
        """The preview op's own semantics, run in NumPy on Caffe's update:
        (new parameters, new history sets)."""
        raise NotImplementedError(f"{cls.name} writes no preview op")


def with_decay(param, gradient, norm_coefficient):
    """The preview ops' L2 term, as Caffe's Regularize adds it (axpy)."""
    return gradient if norm_coefficient == 0 else f32(norm_coefficient) * param + gradient


def split_preview_inputs(data: tuple, sets: int) -> tuple[list, list, list[list]]:
    """(parameters, gradients, history sets) of a preview op's inputs after R and T."""
    n = len(data) // (2 + sets)
    return (list(data[:n]), list(data[n:2 * n]),
            [list(data[(2 + s) * n:(3 + s) * n]) for s in range(sets)])
