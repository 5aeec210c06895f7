"""AdaDelta (Caffe's AdaDeltaSolver::ComputeUpdateValue).

With h1 the mean squared gradient and h2 the mean squared update:
h1 = m * h1 + (1 - m) * g * g; u = g * sqrt((h2 + delta) / (h1 + delta))
(h2 before this step); h2 = m * h2 + (1 - m) * u * u; the update is local_rate * u.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import (
    GRADIENT,
    LOCAL_RATE,
    Const,
    HistorySet,
    Op,
    SolverType,
    StandardUpdate,
    f32,
    history_symbol,
    register,
)


@register
@dataclass(frozen=True)
class AdaDelta(SolverType):
    name = "AdaDelta"
    history = (HistorySet("mean squared gradient", "adadelta_mean_sq_grad"),
               HistorySet("mean squared update", "adadelta_mean_sq_step"))
    update_form = "standard ops"

    momentum: np.float32
    delta: np.float32

    def update(self, gradient, history, rate, t):
        m, kept = self.momentum, f32(1) - self.momentum
        h1 = m * history[0] + kept * (gradient * gradient)
        u = gradient * np.sqrt((history[1] + self.delta) / (h1 + self.delta))
        h2 = m * history[1] + kept * (u * u)
        return u * rate, [h1, h2]

    def standard_update(self) -> StandardUpdate:
        m, delta = Const("momentum", self.momentum), Const("delta", self.delta)
        kept = Const("one_minus_momentum", f32(1) - self.momentum)
        ops = (Op("grad_sq", "Mul", (GRADIENT, GRADIENT)),
               Op("kept_grad", "Mul", (history_symbol(0), m)),
               Op("fresh_grad", "Mul", ("grad_sq", kept)),
               Op("mean_sq_grad", "Add", ("kept_grad", "fresh_grad")),
               Op("step_delta", "Add", (history_symbol(1), delta)),
               Op("grad_delta", "Add", ("mean_sq_grad", delta)),
               Op("ratio", "Div", ("step_delta", "grad_delta")),
               Op("rms_ratio", "Sqrt", ("ratio",)),
               Op("adadelta_update", "Mul", (GRADIENT, "rms_ratio")),
               Op("kept_step", "Mul", (history_symbol(1), m)),
               Op("update_sq", "Mul", ("adadelta_update", "adadelta_update")),
               Op("fresh_step", "Mul", ("update_sq", kept)),
               Op("mean_sq_step", "Add", ("kept_step", "fresh_step")),
               Op("adadelta_step", "Mul", ("adadelta_update", LOCAL_RATE)))
        return StandardUpdate(ops, step="adadelta_step", history=("mean_sq_grad", "mean_sq_step"))
