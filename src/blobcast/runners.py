"""What runs a model for the forward checks, `verify` and `run`: one
interface, two implementations.

A runner has `inputs` (name -> shape, None where unset), `outputs` (names),
`uncomputed` (the outputs it cannot compute -> the layer or node in the way),
`skipped` (what it leaves out, with why) and `forward(inputs, keep_all=False,
tolerate_missing=False) -> {name: array}`: blobcast's engine on a
canonical Model, or onnxruntime (else onnx's reference evaluator) on an
.onnx file, which reads the file itself.
"""

from __future__ import annotations

from typing import Protocol

from .errors import BlobcastError
from .model import Model


class Runner(Protocol):
    inputs: dict
    outputs: list
    uncomputed: dict
    skipped: list

    def forward(self, inputs: dict, keep_all: bool = False, tolerate_missing: bool = False) -> dict: ...


def runner_for(model_or_onnx_path, *, device: str = "cpu", **net_options) -> Runner:
    """The engine for a Model (options as Net takes them), the ONNX runner
    for the path of an .onnx file (which runs around its custom nodes itself,
    on `device`, and refuses the engine's own options).
    A runner serves one run (a check, verify, run): the engine reads each
    layer's weights as the layer comes, unless hold_weights=True is given."""
    if isinstance(model_or_onnx_path, Model):
        from .engine import Net

        net_options.setdefault("hold_weights", False)
        return Net(model_or_onnx_path, device=device, **net_options)
    from .converters import file_runner  # file-format code lives apart from the model

    given = [flag for option, flag in _ENGINE_ONLY.items() if _is_set(net_options.get(option))]
    if given:
        raise BlobcastError(f"{', '.join(given)}: an option of blobcast's engine, which does not "
                            "run an ONNX file (onnxruntime does); leave it out",
                            model_or_onnx_path)
    return file_runner(model_or_onnx_path, device=device)  # its format's runner


def _is_set(value) -> bool:
    """Given on purpose: a seed of 0 is, False, None and empty lists are not."""
    if value is None or value is False:
        return False
    return not isinstance(value, (tuple, list, str)) or bool(value)


# Options only blobcast's engine has, with the flags that set them: an ONNX
# file given one is refused, never run as if it had not been given.
_ENGINE_ONLY = {"prototxt": "--prototxt", "allow_python_layers": "--allow-python-layers",
                "python_path": "--python-path", "random_weights": "--random-weights",
                "layer_plugins": "--layer-plugin", "winograd": "--winograd",
                "precision": "--precision"}


def forward_what_runs(side: Runner, inputs: dict, keep_all: bool = False) -> dict:
    """The side's outputs (every blob with keep_all), run around the layers or
    nodes it cannot run; none computable at all is an error naming them."""
    missing = side.uncomputed
    if missing and set(missing) >= set(side.outputs):
        reasons = {f"{s.name!r} ({s.type})": s.reason for s in side.skipped}
        causes = [f"{cause}, {reasons[cause]}" if cause in reasons else cause
                  for cause in sorted(set(missing.values()))]
        what = f"a node {side.engine}" if hasattr(side, "engine") else "a layer the engine"
        raise BlobcastError(f"no output can be computed: each needs {what} cannot run: "
                            + "; ".join(causes))
    return side.forward(inputs, keep_all=keep_all, tolerate_missing=bool(missing))
