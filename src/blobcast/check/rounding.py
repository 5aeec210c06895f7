"""Whether a failed comparison is float32 rounding or a real difference.

When blobs differ beyond their tolerances, the engine runs the net again in
float64 (the model of a side the engine runs; an ONNX file or a recording
cannot be run so) and each failed blob's two sides are measured against that
run. The engine's own float32 error at a blob is the scale of float32
rounding there: a side within ROUNDING_FACTOR times it (or within a few
float32 steps of the blob's largest value, where that is more) is within
float32 rounding; a side beyond it strays.
"""

from __future__ import annotations

import numpy as np

from ..errors import BlobcastError
from .compare import BlobComparison, RoundingCheck, to_host
from .sides import runner_for

# Another float32 implementation sums in other orders (blocked GEMMs, other
# convolution algorithms): its rounding error is of the engine's size, not
# the same value; the forward check of `convert` allows the same factor.
ROUNDING_FACTOR = 4
# Float32 steps of the blob's largest value that rounding always explains.
ROUNDING_ULPS = 8
FLOAT32_EPSILON = float(np.finfo(np.float32).eps)
# A blob that float32 rounding alone moves by this much of its largest value
# (about 8000 float32 steps) is too small to judge in float32.
TOO_SMALL = 1e-3


def _deviation(values, exact: np.ndarray) -> float:
    """max |values - exact|, NaN passed over."""
    values = to_host(values)
    if tuple(values.shape) != tuple(exact.shape):
        return float("inf")
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.abs(values.astype(np.float64) - exact)
    return float(np.fmax.reduce(difference.reshape(-1), initial=0.0))


def _suggested_tolerance(comparison: BlobComparison) -> str:
    # rounded up to two digits: 1.1 covers what rounding to two digits takes off
    return f"--tolerance {comparison.name}={comparison.min_atol * 1.1:.2g},{comparison.rtol:g}"


def _judge(comparison: BlobComparison, a, b, exact: np.ndarray, reference: int) -> None:
    deviations = _deviation(a, exact), _deviation(b, exact)
    with np.errstate(invalid="ignore"):
        peak = float(np.fmax.reduce(np.abs(exact).reshape(-1), initial=0.0))
    engine_error = deviations[reference]
    rounding = max(ROUNDING_FACTOR * engine_error, ROUNDING_ULPS * FLOAT32_EPSILON * peak)
    a_within, b_within = (d <= rounding for d in deviations)
    strays = {(True, True): "", (True, False): "B", (False, True): "A"}.get((a_within, b_within),
                                                                          "both")
    measured = f"A is off by {deviations[0]:.3g}, B by {deviations[1]:.3g}"
    if not strays:
        verdict = (f"both sides are within float32 rounding of a float64 run of the engine "
                   f"({measured}; rounding reaches {rounding:.3g} here): not an error; "
                   f"{_suggested_tolerance(comparison)} accepts it")
    elif strays == "both":
        verdict = (f"both sides stray from a float64 run of the engine beyond float32 rounding "
                   f"({rounding:.3g} here): {measured}")
    else:
        verdict = (f"{strays} strays from a float64 run of the engine beyond float32 rounding "
                   f"({rounding:.3g} here): {measured}")
    comparison.rounding = RoundingCheck("AB"[reference], *deviations, rounding, a_within, b_within,
                                        strays, verdict)
    if not comparison.too_small and engine_error > TOO_SMALL * peak:
        comparison.too_small = (f"float32 rounding alone moves it by {engine_error:.3g}, "
                                f"{engine_error / peak:.2g} of its largest value {peak:.3g}: it is "
                                "small against the values it was computed from")


def check_rounding(failed: list[BlobComparison], sides: tuple, inputs: dict, a_values: dict,
                   b_values: dict) -> list[str]:
    """Fill in `rounding` of each failed comparison whose two sides are at
    hand; returns notes on what could not be checked."""
    pending = {c.name: c for c in failed
               if c.name in a_values and c.name in b_values and not c.nan_mismatches
               and tuple(np.shape(a_values[c.name])) == tuple(np.shape(b_values[c.name]))}
    if not pending:
        return []
    # The side that can run its own Caffe model again in float64 (the engine).
    reference = next((i for i, side in enumerate(sides)
                      if side.model is not None and "precision" in side.takes), None)
    if reference is None:
        return ["no float64 check of the differing blobs: neither side is a Caffe model, "
                "which the engine alone can run in float64"]
    side = sides[reference]

    def measure(name, value):
        comparison = pending.pop(name, None)
        if comparison is not None:
            _judge(comparison, a_values[name], b_values[name], to_host(value), reference)

    try:
        exact = runner_for(side.model, device=side.device, precision="f8", skip_unrunnable=True,
                           allow_python_layers=side.allow_python_layers,
                           python_path=side.python_path, random_weights=side.random_weights)
        exact.forward(inputs, on_blob=measure, final_only=True,
                      tolerate_missing=bool(exact.uncomputed))
    except BlobcastError as error:
        return [f"no float64 check of the differing blobs: {error.problem}"]
    return []
