"""SGD with momentum (Caffe's SGDSolver::ComputeUpdateValue).

h = momentum * h + local_rate * g (caffe_cpu_axpby); the update is h.
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
    PreviewUpdate,
    SolverType,
    StandardUpdate,
    f32,
    history_symbol,
    register,
    with_decay,
)


def momentum_ops(momentum: np.float32) -> tuple[Op, ...]:
    """The new history `history` = momentum * h + local_rate * g, as Caffe's axpby orders it."""
    return (Op("momentum_term", "Mul", (history_symbol(0), Const("momentum", momentum))),
            Op("rate_term", "Mul", (GRADIENT, LOCAL_RATE)),
            Op("history", "Add", ("momentum_term", "rate_term")))


@register
@dataclass(frozen=True)
class SGD(SolverType):
    name = "SGD"
    history = (HistorySet("momentum", "momentum"),)
    update_form = ("ai.onnx.preview.training Momentum when lr_policy is fixed (and regularization L2), "
                   "else standard ops")
    preview_op = "Momentum"

    momentum: np.float32
    base_lr: np.float32 = f32(0)
    fixed_rate: bool = False  # lr_policy "fixed": the rate is a constant Momentum's beta can hold

    @classmethod
    def from_solver(cls, solver) -> SGD:
        return cls(f32(solver.momentum), f32(solver.base_lr), solver.lr_policy == "fixed")

    def update(self, gradient, history, rate, t):
        h = self.momentum * history[0] + rate * gradient
        return h, [h]

    @property
    def uses_preview_op(self) -> bool:
        # With a schedule Caffe keeps the rate inside the history, which
        # Momentum's constant beta cannot follow.
        return self.fixed_rate

    def preview_update(self, lr_mult, decay) -> PreviewUpdate:
        # beta = the local rate, R = 1, and T >= 1 so beta applies
        local = f32(self.base_lr * f32(lr_mult))
        return PreviewUpdate("Momentum", dict(alpha=float(self.momentum), beta=float(local),
                                              mode="standard", norm_coefficient=float(decay)),
                             rate=1.0)

    def standard_update(self) -> StandardUpdate:
        return StandardUpdate(momentum_ops(self.momentum), step="history", history=("history",))

    @classmethod
    def run_preview(cls, rate, t, params, gradients, history, *, alpha, beta, mode,
                    norm_coefficient):
        solver = cls(f32(alpha))
        beta_now = f32(beta if t > 0 else 1.0)  # ONNX's Momentum: beta from T = 1 on
        rate = f32(rate)
        new_x, new_v = [], []
        for x, g, v in zip(params, gradients, history[0]):
            g = with_decay(x, g, norm_coefficient)
            step, (v_next,) = solver.update(g, [v], beta_now, t)
            if mode not in (b"standard", "standard"):  # ONNX's own Nesterov form, not Caffe's
                step = g + solver.momentum * v_next
            new_x.append(x - (step if rate == 1 else rate * step))
            new_v.append(v_next)
        return new_x, [new_v]
