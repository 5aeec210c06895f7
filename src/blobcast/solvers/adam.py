"""Adam (Caffe's AdamSolver::ComputeUpdateValue).

m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g; the update is
local_rate * correction * (m / (sqrt(v) + delta)), with the bias correction
sqrt(1 - b2^t) / (1 - b1^t) computed in double and rounded to float32
(t = iter + 1); b1 is the solver's momentum, b2 its momentum2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import HistorySet, PreviewUpdate, SolverType, f32, register, with_decay


@register
@dataclass(frozen=True)
class Adam(SolverType):
    name = "Adam"
    history = (HistorySet("first moment (m)", "adam_m"), HistorySet("second moment (v)", "adam_v"))
    update_form = "ai.onnx.preview.training Adam"
    preview_op = "Adam"

    momentum: np.float32
    momentum2: np.float32
    delta: np.float32

    def correction(self, t: int) -> np.float32:
        if t <= 0:  # ONNX's Adam at T = 0 leaves the rate as it is; Caffe's t starts at 1
            return f32(1)
        return f32(np.sqrt(1.0 - float(self.momentum2) ** int(t)) / (1.0 - float(self.momentum) ** int(t)))

    def update(self, gradient, history, rate, t):
        b1, b2 = self.momentum, self.momentum2
        m = b1 * history[0] + (f32(1) - b1) * gradient
        v = b2 * history[1] + (f32(1) - b2) * (gradient * gradient)
        return (rate * self.correction(t)) * (m / (np.sqrt(v) + self.delta)), [m, v]

    def preview_update(self, lr_mult, decay) -> PreviewUpdate:
        return PreviewUpdate("Adam", dict(alpha=float(self.momentum), beta=float(self.momentum2),
                                          epsilon=float(self.delta), norm_coefficient=float(decay),
                                          norm_coefficient_post=0.0))

    @classmethod
    def run_preview(cls, rate, t, params, gradients, history, *, alpha, beta, epsilon,
                    norm_coefficient, norm_coefficient_post):
        solver = cls(f32(alpha), f32(beta), f32(epsilon))
        new_x, new_m, new_v = [], [], []
        for x, g, m, v in zip(params, gradients, *history):
            step, (m_next, v_next) = solver.update(with_decay(x, g, norm_coefficient), [m, v],
                                                   f32(rate), t)
            x_next = x - step
            if norm_coefficient_post:  # ONNX's decay after the step; Caffe has none
                x_next = (f32(1) - f32(norm_coefficient_post)) * x_next
            new_x.append(x_next)
            new_m.append(m_next)
            new_v.append(v_next)
        return new_x, [new_m, new_v]
