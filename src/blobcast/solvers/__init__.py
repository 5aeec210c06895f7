"""One home per Caffe solver type: importing this package registers them all,
in Caffe's order (the legacy solver_type enum's)."""

from . import sgd, nesterov, adagrad, rmsprop, adadelta, adam  # noqa: F401, I001  (Caffe's order)
from .base import (
    DEFAULT_TYPE,
    PREVIEW_DOMAIN,
    SOLVER_TYPES,
    HistorySet,
    PreviewUpdate,
    SolverType,
    StandardUpdate,
    legacy_type_name,
    preview_solver,
    register,
    solver_class,
    solver_type_of,
)
from .step import apply_update, learning_rate

__all__ = ["DEFAULT_TYPE", "PREVIEW_DOMAIN", "SOLVER_TYPES", "HistorySet", "PreviewUpdate", "SolverType",
           "StandardUpdate", "apply_update", "learning_rate", "legacy_type_name", "preview_solver",
           "register", "solver_class", "solver_type_of"]
