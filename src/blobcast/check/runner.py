"""What runs a model for the forward checks, `verify` and `run`: one base
class, Runner, that every runner implements (sides.runner_for picks one).

Runners: blobcast's engine (engine.Net) on a canonical Model; onnxruntime
(else onnx's reference evaluator) on an .onnx file, which reads the file
itself (converters/onnx_runner.py); OpenCV on a written .caffemodel
(converters/opencv_check.py, for `--target opencv`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from ..errors import BlobcastError


class Runner(ABC):
    """A model ready to run once or more on the same kind of inputs.

    Every runner has, set by its constructor:
      inputs      name -> shape (a list), None where nothing gives it
      outputs     the names of its outputs
      uncomputed  the outputs it cannot compute -> the layer or node in the way
      skipped     what it leaves out (objects with name, type, reason)
      device      "cpu" or "gpu": where it runs
    and, per class, `engine_name` (what computes it) and `part` (what its
    graph is made of: "layer" or "node").
    """

    engine_name: str
    part: str = "layer"
    # The canonical Model it runs, where it runs one: a runtime on the other
    # side of a check is covered by this model's memory plan.
    model = None
    # Checks the memory budget layer by layer as it runs (the engine); for
    # another runtime the source's plan stands in.
    plans_memory: bool = False
    # forward() takes on_blob(name, array) and final_only: each blob handed
    # over as its last version is made, none held (verify --all-blobs).
    streams_blobs: bool = False
    # The options of runner_for it takes; any other one given is refused.
    takes: frozenset = frozenset({"device"})
    # name -> the one-line error for an input of unknown shape; None: the plain one.
    shape_unknown: Callable[[str], BlobcastError] | None = None

    inputs: dict
    outputs: list
    uncomputed: dict
    skipped: list
    device: str

    @property
    def runtime(self) -> str:
        """How messages name what runs it: "the engine", "onnxruntime"."""
        return self.engine_name

    @abstractmethod
    def forward(self, inputs: dict, keep_all: bool = False, tolerate_missing: bool = False) -> dict:
        """{name: array} of the outputs (every blob or value with keep_all);
        with tolerate_missing, what needs an uncomputed part is left out."""


# Every option runner_for takes, with the flag that sets it: a runner given
# one it does not take refuses it in one line, never runs as if it had not
# been given.
OPTION_FLAGS = {"device": "--device", "prototxt": "--prototxt",
                "allow_python_layers": "--allow-python-layers", "python_path": "--python-path",
                "random_weights": "--random-weights", "layer_plugins": "--layer-plugin",
                "winograd": "--no-winograd", "precision": "--precision",
                "skip_unrunnable": None, "hold_weights": None}


def refuse_options(runner_class: type[Runner], options: dict, path=None) -> None:
    """A one-line error naming the flags given that `runner_class` does not take."""
    unknown = set(options) - set(OPTION_FLAGS)
    if unknown:
        raise TypeError(f"runner_for got unknown options {sorted(unknown)}")
    given = [OPTION_FLAGS[option] for option, value in options.items()
             if option not in runner_class.takes and OPTION_FLAGS[option] and
             _is_set(value, ENGINE_DEFAULTS.get(option, False))]
    if given:
        raise BlobcastError(f"{', '.join(given)}: an option of blobcast's engine, which does not "
                            f"run an ONNX file ({runner_class.engine_name} does); leave it out", path)


# Options whose default is on: given on purpose when off.
ENGINE_DEFAULTS = {"winograd": True}


def _is_set(value, default=False) -> bool:
    """Given on purpose: a seed of 0 is, the default, None and empty lists are not."""
    if value is None or value is default:
        return False
    return not isinstance(value, (tuple, list, str)) or bool(value)


def forward_what_runs(side: Runner, inputs: dict, keep_all: bool = False) -> dict:
    """The side's outputs (every blob with keep_all), run around the layers or
    nodes it cannot run; none computable at all is an error naming them."""
    missing = side.uncomputed
    if missing and set(missing) >= set(side.outputs):
        reasons = {f"{s.name!r} ({s.type})": s.reason for s in side.skipped}
        causes = [f"{cause}, {reasons[cause]}" if cause in reasons else cause
                  for cause in sorted(set(missing.values()))]
        raise BlobcastError(f"no output can be computed: each needs a {side.part} {side.runtime} "
                            "cannot run: " + "; ".join(causes))
    return side.forward(inputs, keep_all=keep_all, tolerate_missing=bool(missing))


def uncomputed_notes(side: Runner, prefix: str = "") -> list[str]:
    """A line for each output the side cannot compute, naming what is in the way."""
    return [f"{prefix}output {name!r} not computed: it needs {side.part} {cause}, which "
            f"{side.runtime} cannot run" for name, cause in side.uncomputed.items()]


def skipped_notes(side: Runner, prefix: str = "") -> list[str]:
    return [f"{prefix}{s.name} ({s.type}): {s.reason}" for s in side.skipped]
