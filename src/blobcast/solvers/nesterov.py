"""Nesterov's accelerated gradient (Caffe's NesterovSolver::ComputeUpdateValue).

h_new = momentum * h + local_rate * g; the update is
(1 + momentum) * h_new - momentum * h_old (caffe_cpu_axpby).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Const, HistorySet, Op, SolverType, StandardUpdate, f32, history_symbol, register
from .sgd import momentum_ops


@register
@dataclass(frozen=True)
class Nesterov(SolverType):
    name = "Nesterov"
    history = (HistorySet("momentum", "momentum"),)
    update_form = "standard ops"

    momentum: np.float32

    def update(self, gradient, history, rate, t):
        h = self.momentum * history[0] + rate * gradient
        step = -self.momentum * history[0] + (f32(1) + self.momentum) * h
        return step, [h]

    def standard_update(self) -> StandardUpdate:
        m = self.momentum
        ops = momentum_ops(m) + (
            Op("step_back", "Mul", (history_symbol(0), Const("minus_momentum", -m))),
            Op("step_over", "Mul", ("history", Const("one_plus_momentum", f32(1) + m))),
            Op("nesterov_step", "Add", ("step_back", "step_over")))
        return StandardUpdate(ops, step="nesterov_step", history=("history",))
