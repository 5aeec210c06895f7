"""`verify`: run A and B on the same inputs and compare their blobs (the
comparison itself is verify.py's)."""

from __future__ import annotations

from ..check.verify import DEFAULT_ATOL, DEFAULT_RTOL, RunOptions, VerifyReport, parse_tolerance, verify_files


def verify(a: str, b: str, options: RunOptions, *, atol: float = DEFAULT_ATOL,
           rtol: float = DEFAULT_RTOL, allow_nonfinite: bool = False,
           tolerance_specs=()) -> VerifyReport:
    """A against B (a model, or an .npz of recorded blobs); `tolerance_specs`
    are --tolerance's BLOB=ATOL,RTOL, each for the blob it names."""
    per_blob = dict(parse_tolerance(spec) for spec in tolerance_specs)
    return verify_files(a, b, options, atol=atol, rtol=rtol, allow_nonfinite=allow_nonfinite,
                        tolerances=per_blob)
