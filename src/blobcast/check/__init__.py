"""Running models and comparing what they compute: the runner base class and
the runners behind it (runner.py, sides.py), blob comparison (compare.py),
run inputs (inputs.py), two models run on the same inputs and convert's
forward check (forward.py), `verify` and `run` (verify.py), and whether a
difference is float32 rounding (rounding.py)."""

# runner first: the engine's Net implements its base class.
from .runner import OPTION_FLAGS, Runner, forward_what_runs  # isort: skip
from .compare import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    BlobComparison,
    compare_arrays,
    model_differences,
    state_differences,
)
from .forward import ForwardCheck, PairRun, check_forward, check_forward_pair, check_in_opencv, run_pair
from .inputs import input_shapes, make_inputs, parse_input_spec, read_npy, runner_inputs
from .sides import runner_for
from .verify import (
    RunOptions,
    Tolerances,
    VerifyReport,
    load_reference,
    parse_tolerance,
    run_model,
    save_blobs,
    verify_files,
)

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "OPTION_FLAGS", "BlobComparison", "ForwardCheck", "PairRun",
           "RunOptions", "Runner", "Tolerances", "VerifyReport", "check_forward", "check_forward_pair",
           "check_in_opencv", "compare_arrays", "forward_what_runs", "input_shapes", "load_reference",
           "make_inputs", "model_differences", "parse_input_spec", "parse_tolerance", "read_npy",
           "run_model", "run_pair", "runner_for", "runner_inputs", "save_blobs", "state_differences",
           "verify_files"]
