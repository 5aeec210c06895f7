"""RMSProp (Caffe's RMSPropSolver::ComputeUpdateValue).

h = rms_decay * h + (1 - rms_decay) * g * g; the update is
local_rate * (g / (sqrt(h) + delta)).
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
class RMSProp(SolverType):
    name = "RMSProp"
    history = (HistorySet("mean squared gradient", "rmsprop_mean_sq"),)
    update_form = "standard ops"
    takes_momentum = False

    rms_decay: np.float32
    delta: np.float32

    def update(self, gradient, history, rate, t):
        h = self.rms_decay * history[0] + (f32(1) - self.rms_decay) * (gradient * gradient)
        return (gradient / (np.sqrt(h) + self.delta)) * rate, [h]

    def standard_update(self) -> StandardUpdate:
        decay = self.rms_decay
        ops = (Op("grad_sq", "Mul", (GRADIENT, GRADIENT)),
               Op("kept", "Mul", (history_symbol(0), Const("rms_decay", decay))),
               Op("fresh", "Mul", ("grad_sq", Const("one_minus_rms_decay", f32(1) - decay))),
               Op("mean_sq", "Add", ("kept", "fresh")),
               Op("rms", "Sqrt", ("mean_sq",)),
               Op("rms_delta", "Add", ("rms", Const("delta", self.delta))),
               Op("scaled_grad", "Div", (GRADIENT, "rms_delta")),
               Op("rmsprop_step", "Mul", ("scaled_grad", LOCAL_RATE)))
        return StandardUpdate(ops, step="rmsprop_step", history=("mean_sq",))
