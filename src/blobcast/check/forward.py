"""Two models run on the same inputs: `run_pair`, which convert's forward
check (check_forward_pair) and `verify` (verify.py) both run, and
(--target opencv) the written net run in OpenCV as well."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BlobcastError, CheckFailed, about
from ..limits import BudgetExceeded, held_bytes, reserved
from ..model import Model
from .compare import BlobComparison, compare_arrays, to_host
from .inputs import input_shapes, runner_inputs
from .runner import Runner, forward_what_runs
from .sides import runner_for


@dataclass
class PairRun:
    """What run_pair gives: A's blobs and B's, and, when one side streamed
    its blobs, the comparisons made as they came (name -> comparison) in
    `order`; then the streamed side's blobs are only those that differ, as
    host copies."""

    a: dict
    b: dict
    compared: dict | None = None
    order: list = field(default_factory=list)


def run_pair(side_a: Runner, side_b: Runner, inputs: dict, keep_all: bool = False,
             judge=None, paths: tuple = (None, None)) -> PairRun:
    """Run A, then B, on the same inputs, both sides' blobs counted together
    against the memory budget. A runtime that checks nothing as it runs is
    covered by the plan of A's model, the same net as a rule.

    With keep_all and `judge(name, a, b) -> BlobComparison`, a side that
    streams its blobs (the engine) has each compared with the other side's
    as soon as its last version is made, then let go: its blobs are never
    all held at once, and each is compared while it is still in the cache.
    Against a runtime that does not stream, the runtime runs first. Errors
    without a file name are about `paths` (A's, B's)."""
    streams = keep_all and judge is not None
    if streams and side_a.streams_blobs and not side_a.uncomputed and not side_b.streams_blobs:
        with about(paths[1]):
            _plan_for_runtime(side_a, side_b, inputs)
            outputs_b = forward_what_runs(side_b, inputs, keep_all)
        with about(paths[0]), reserved(held_bytes([*inputs.values(), *outputs_b.values()])):
            return _compared_as_produced(side_a, inputs, outputs_b,
                                         lambda name, held, made: judge(name, made, held), True)
    with about(paths[0]):
        outputs_a = forward_what_runs(side_a, inputs, keep_all)
    with about(paths[1]), reserved(held_bytes([*inputs.values(), *outputs_a.values()])):
        if streams and side_b.streams_blobs and not side_b.uncomputed:
            return _compared_as_produced(side_b, inputs, outputs_a, judge, False)
        _plan_for_runtime(side_a, side_b, inputs)
        return PairRun(outputs_a, forward_what_runs(side_b, inputs, keep_all))


def _plan_for_runtime(side_a: Runner, side_b: Runner, inputs: dict) -> None:
    if side_a.plans_memory and not side_b.plans_memory:
        from ..shapes import blob_shapes

        blob_shapes(side_a.model, {name: list(value.shape) for name, value in inputs.items()},
                    check_memory=True, skip_unrunnable=True)


def _compared_as_produced(streaming: Runner, inputs: dict, held: dict, judge,
                          streaming_is_a: bool) -> PairRun:
    compared: dict[str, BlobComparison] = {}
    differing = {}

    def compare(name, value):
        if name in held and name not in inputs:
            compared[name] = judge(name, held[name], value)
            if not compared[name].passed:
                differing[name] = to_host(value).copy()

    streaming.forward(inputs, on_blob=compare, final_only=True)
    if streaming_is_a:
        return PairRun(differing, held, compared, list(compared))
    return PairRun(held, differing, compared, [name for name in held if name in compared])


@dataclass
class ForwardCheck:
    """How convert's forward check runs: inputs (name -> a shape, filled with
    seeded random values, or an array of values: an ROI net needs real ROIs)
    for inputs the net leaves open or to override, the device, the tolerances."""

    inputs: dict = field(default_factory=dict)
    device: str = "cpu"
    atol: float = 1e-5
    rtol: float = 1e-3

    def input_shapes(self) -> dict:
        return input_shapes(self.inputs)


def check_forward(source, written, strict: bool = False, options: ForwardCheck | None = None,
                   record: dict | None = None) -> tuple[dict | None, str | None]:
    """Run the source and the written model (each a Model or an .onnx path) on
    the same seeded inputs.

    Returns (result, note). For Caffe formats a net the engine cannot run (a
    layer type it lacks, an input without a shape) is not a failed conversion:
    the tensors were already checked bit for bit, so that gives a note instead.
    Where ONNX is involved (strict) the forward check is the check, so it must run.
    """
    options = options or ForwardCheck()
    written_side = None
    try:
        if isinstance(source, Model):
            from ..shapes import blob_shapes

            # The whole pass planned within the memory budget before anything runs.
            blob_shapes(source, options.input_shapes(), check_memory=True, skip_unrunnable=True)
        # Layers (or custom nodes) that cannot run leave out the outputs that need them.
        source_side = runner_for(source, device=options.device, skip_unrunnable=True)
        written_side = runner_for(written, device=options.device, skip_unrunnable=True)
        return check_forward_pair(source_side, written_side, options, (source, written), record)
    except CheckFailed:
        raise
    except BudgetExceeded:
        if strict:
            raise
        return None, "forward check skipped: it would exceed the memory budget (--memory-budget)"
    except BlobcastError as error:
        fallback = written_side is not None and written_side.engine_name == "onnx reference evaluator"
        if strict and not fallback:
            raise CheckFailed(f"the forward check could not run: {error.problem}") from error
        if fallback:
            # That evaluator has gaps of its own (grouped ConvTranspose in onnx
            # 1.23): its failure is no evidence against the file.
            return None, (f"forward check skipped: {error.problem}; install onnxruntime "
                          "(pip install 'blobcast[onnxruntime]') for the full check")
        return None, f"forward check skipped: {error.problem}"


def _float32_noise(models, inputs: dict, outputs32: dict, name: str, device: str) -> float | None:
    """How far the output `name` of the first Caffe model among `models` moves
    between float32 and float64 arithmetic: the float32 noise floor of the net."""
    model = next((m for m in models if isinstance(m, Model)), None)
    if model is None:
        return None
    try:
        exact = forward_what_runs(runner_for(model, device=device, precision="f8",
                                             skip_unrunnable=True), inputs)
    except BlobcastError:
        return None
    import numpy as np

    return float(np.max(np.abs(to_host(exact[name]) - to_host(outputs32[name])), initial=0.0))


def check_forward_pair(side_a, side_b, options: ForwardCheck, models=(),
                        record: dict | None = None) -> tuple[dict | None, str | None]:
    """`record`, when given, receives the inputs and side B's outputs, for a
    further check of the same run (OpenCV's) that need not run B again."""
    import numpy as np

    inputs = runner_inputs(side_a, dict(options.inputs), seed=0)
    run = run_pair(side_a, side_b, inputs)
    outputs_a, outputs_b = run.a, run.b
    if record is not None:
        record.update(inputs=inputs, outputs=outputs_b)
    missing = [name for name in outputs_a if name not in outputs_b and name not in side_b.uncomputed]
    if missing:
        raise CheckFailed("the written model lacks the outputs " + ", ".join(missing))
    compared = [name for name in outputs_a if name in outputs_b]
    results = [compare_arrays(name, outputs_a[name], outputs_b[name], options.atol, options.rtol)
               for name in compared]
    if not results:
        raise CheckFailed("the forward check compared nothing: the model has no outputs")
    failed = [r for r in results if not r.passed]
    if failed and all(compare_arrays(r.name, outputs_a[r.name], outputs_b[r.name], options.atol,
                                     options.rtol, allow_nonfinite=True).passed for r in failed):
        # Both sides give the same NaN/Inf: nothing is proved either way.
        return None, ("forward check inconclusive: the outputs hold NaN/Inf values (the same "
                      f"on both sides), e.g. {failed[0].name!r}")
    if failed:
        worst = failed[0]
        largest = float(np.max(np.abs(to_host(outputs_a[worst.name])), initial=0.0))
        relative = f" ({worst.max_abs_error / largest:.2g} of its largest value {largest:.3g})" \
            if largest > 0 else ""
        noise = _float32_noise(models, inputs, outputs_a, worst.name, options.device)
        floor = ""
        if noise is not None:
            verdict = ("within that noise: float32 rounding, not a conversion error"
                       if worst.max_abs_error <= 4 * noise else "beyond that noise")
            floor = (f"; the source itself moves by {noise:.3g} between float32 and float64 "
                     f"arithmetic, so this is {verdict}")
        raise CheckFailed(f"the written model computes differently: output {worst.name!r} differs "
                          f"by up to {worst.max_abs_error:.3g}{relative}, beyond atol "
                          f"{options.atol:g} + rtol {options.rtol:g}{floor}; widen --atol/--rtol, "
                          "or skip the check with --no-verify")
    worst = max((r.max_abs_error for r in results), default=0.0)
    uncompared = {**side_a.uncomputed, **side_b.uncomputed}
    note = None
    if uncompared:
        note = ("forward check compared what both sides compute; not compared: " + ", ".join(
            f"{name!r} (needs {cause})" for name, cause in uncompared.items()))
    return {"outputs": len(results), "max_abs_error": worst, "passed": True,
            "device": side_a.device, "not_compared": sorted(uncompared)}, note


def check_in_opencv(written: Model, path: str, dst_fmt, options: ForwardCheck,
                  run: dict) -> str:
    """Run the written net in OpenCV 4 as well (--target opencv): its outputs
    must agree with the engine's (those of the forward check's run, `run`,
    when it ran). A note says what was compared, or why not."""
    from ..converters import opencv_check

    if not dst_fmt.deploy_pair:
        return "OpenCV reads .caffemodel files: the written net was not run in OpenCV"
    if not opencv_check.opencv_available():
        return ("OpenCV is not installed (pip install opencv-python-headless): the written net "
                "was not run in OpenCV")
    if run:
        inputs, ours = run["inputs"], run["outputs"]
    else:
        engine = runner_for(written, skip_unrunnable=True)
        inputs = runner_inputs(engine, dict(options.inputs), seed=0)
        ours = forward_what_runs(engine, inputs)
    opencv = opencv_check.OpencvRunner(written, path, input_shapes(inputs), list(ours))
    theirs = opencv.forward(inputs)
    results = [compare_arrays(name, ours[name], theirs[name], options.atol, options.rtol)
               for name in theirs]
    failed = next((r for r in results if not r.passed), None)
    if failed is not None:
        raise CheckFailed(f"OpenCV computes differently: output {failed.name!r} differs by up to "
                          f"{failed.max_abs_error:.3g}, beyond atol {options.atol:g} + rtol "
                          f"{options.rtol:g}")
    worst = max((r.max_abs_error for r in results), default=0.0)
    return f"OpenCV runs it: {len(results)} outputs agree with the engine (max abs error {worst:.3g})"
