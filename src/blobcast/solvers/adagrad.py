"""AdaGrad (Caffe's AdaGradSolver::ComputeUpdateValue).

h += g * g; the update is local_rate * (g / (sqrt(h) + delta)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import HistorySet, PreviewUpdate, SolverType, f32, register, with_decay


@register
@dataclass(frozen=True)
class AdaGrad(SolverType):
    name = "AdaGrad"
    history = (HistorySet("sum of squared gradients", "adagrad_sum_sq"),)
    update_form = "ai.onnx.preview.training Adagrad"
    preview_op = "Adagrad"
    takes_momentum = False

    delta: np.float32

    def update(self, gradient, history, rate, t):
        h = history[0] + gradient * gradient
        return rate * (gradient / (np.sqrt(h) + self.delta)), [h]

    def preview_update(self, lr_mult, decay) -> PreviewUpdate:
        return PreviewUpdate("Adagrad", dict(epsilon=float(self.delta), decay_factor=0.0,
                                             norm_coefficient=float(decay)))

    @classmethod
    def run_preview(cls, rate, t, params, gradients, history, *, epsilon, decay_factor,
                    norm_coefficient):
        solver = cls(f32(epsilon))
        # ONNX's Adagrad may decay its rate with T; Caffe's does not (decay_factor 0)
        rate = f32(rate) if decay_factor == 0 else f32(rate / (1 + t * decay_factor))
        new_x, new_h = [], []
        for x, g, h in zip(params, gradients, history[0]):
            step, (h_next,) = solver.update(with_decay(x, g, norm_coefficient), [h], rate, t)
            new_x.append(x - step)
            new_h.append(h_next)
        return new_x, [new_h]
