"""Element-wise steps: what an in-place layer (BatchNorm with stored
statistics, Scale, Bias, ReLU, ReLU6, Dropout) does to a blob, as a short
list of single operations, each with a value per channel or one for all.

The engine runs a chain of such layers on one blob as their steps in order:
block by block in NumPy here (the reference), or in one compiled pass
(`compiled.run_steps`) that applies the same operations to each value in the
same order, so both give the same results.
"""

from __future__ import annotations

from typing import NamedTuple

SUBTRACT, DIVIDE, MULTIPLY, ADD, RELU, CLIP = "subtract", "divide", "multiply", "add", "relu", "clip"
OPERATIONS = (SUBTRACT, DIVIDE, MULTIPLY, ADD, RELU, CLIP)


class Step(NamedTuple):
    """One operation on every value of a blob. `values`: a vector with one
    value per channel (axis 1), or a Python number for all values (cast to
    the blob's type, as NumPy casts a scalar). RELU's `values` is its
    negative slope; CLIP's are the low and high bounds (`high`)."""

    operation: str
    values: object
    high: float | None = None


def per_channel(values) -> bool:
    return not isinstance(values, (int, float))


def _operand(step_values, x, channels: slice):
    if not per_channel(step_values):
        return x.dtype.type(step_values)
    return step_values[channels].reshape((-1,) + (1,) * (x.ndim - 1))


def apply_steps(xp, x, steps: list, channels: slice) -> None:
    """Overwrite `x`, one sample's values for the channels `channels` (a
    slice of axis 1), with the steps applied in order."""
    for step in steps:
        value = _operand(step.values, x, channels)
        if step.operation == SUBTRACT:
            x -= value
        elif step.operation == DIVIDE:
            x /= value
        elif step.operation == MULTIPLY:
            x *= value
        elif step.operation == ADD:
            x += value
        elif step.operation == RELU:
            _relu(xp, x, value)
        elif step.operation == CLIP:
            xp.clip(x, value, x.dtype.type(step.high), out=x)
        else:
            raise ValueError(f"unknown element-wise step {step.operation!r}")


def _relu(xp, x, slope) -> None:
    """Caffe's max(x, 0) + slope * min(x, 0)."""
    if slope:
        negative = xp.minimum(x, 0)
        negative *= slope
        xp.maximum(x, 0, out=x)
        x += negative
    else:
        xp.maximum(x, 0, out=x)

