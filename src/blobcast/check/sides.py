"""Which runner runs a side of a check: the engine for a canonical Model,
the ONNX runner for an .onnx file, each given the options it takes."""

from __future__ import annotations

from ..model import Model
from .runner import Runner


def runner_for(model_or_onnx_path, *, device: str = "cpu", **options) -> Runner:
    """The engine for a Model (options as Net takes them), the ONNX runner
    for the path of an .onnx file (which runs around its custom nodes itself,
    on `device`, and refuses the engine's own options).
    A runner serves one run (a check, verify, run): the engine reads each
    layer's weights as the layer comes, unless hold_weights=True is given."""
    if isinstance(model_or_onnx_path, Model):
        from ..engine import Net

        options.setdefault("hold_weights", False)
        return Net(model_or_onnx_path, device=device, **options)
    from ..converters import file_runner  # file-format code lives apart from the model

    return file_runner(model_or_onnx_path, device=device, **options)  # its format's runner
