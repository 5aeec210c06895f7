"""A file format as one record: what its files hold, and the hooks every
caller goes through (match, read, write, verify_written, companions,
inspect, runner, training_step), so that no caller asks a format its name.

A format's module gives NAME, SUFFIXES, DESCRIPTION, HOLDS, optionally
MAGIC, and the functions `read(path, **options)` and `write(obj, path,
**options)`; it may give the other hooks as functions of the same names,
and the record's own versions serve the formats that give none. The module
is imported on first use where the record says so (`lazy`), so that listing
ONNX costs no import of onnx.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

from blobcast.check.compare import model_differences, state_differences
from blobcast.errors import CheckFailed, FormatError
from blobcast.solver import SolverState
from blobcast.weights import WeightSource, attach_weights

# Every hook a format record answers (a test checks each registered format).
HOOKS = ("match", "read", "write", "verify_written", "companions", "inspect", "runner",
         "training_step")

# How a net definition given beside a weights file (--prototxt) joins it.
JOINED_BY_READER = "reader"  # the reader takes the architecture and reads onto it
JOINED_BY_LAYER_NAME = "layer names"  # the weights attach to it by layer name, as Caffe does


@dataclass(frozen=True)
class Companions:
    """The files a format keeps beside an output file: `net_definition`, the
    deploy .prototxt Caffe's tools take beside the weights (written where the
    net has no definition file of its own, as a net imported from ONNX);
    `replaced`, called before an existing output is replaced, returns what
    removes, once it is, the files only the replaced one used."""

    net_definition: str | None = None
    replaced: Callable[[], Callable[[], None]] | None = None


@dataclass(frozen=True, eq=False)
class Format:
    """One file format. `holds` is what its files carry (architecture,
    weights, diffs, solver_state; graph for a file its own runtimes run);
    the properties below say what callers mean by it."""

    name: str
    suffixes: tuple[str, ...]
    description: str
    holds: frozenset
    magic: bytes | None = None
    module_name: str = ""
    joins_net_definition: str | None = None  # JOINED_BY_READER, JOINED_BY_LAYER_NAME or None
    deploy_pair: bool = False  # Caffe's tools (OpenCV too) load it with a deploy .prototxt
    container: str | None = None  # the container format under its layout ("hdf5")
    _given: dict = field(default_factory=dict, repr=False)  # hooks given by a class, not a module

    # What the files carry, as callers ask it.
    @property
    def runs_by_itself(self) -> bool:
        """A graph its own runtimes run (ONNX): checked and run as a file."""
        return "graph" in self.holds

    @property
    def holds_solver_state(self) -> bool:
        return "solver_state" in self.holds

    @property
    def holds_architecture(self) -> bool:
        return "architecture" in self.holds

    @property
    def holds_weights(self) -> bool:
        return "weights" in self.holds

    @property
    def architecture_only(self) -> bool:
        """A net definition alone (what --prototxt takes)."""
        return self.holds == {"architecture"}

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def _hook(self, name: str):
        if name in self._given:
            return self._given[name]
        return getattr(self.module, name, None)

    # The hooks.
    def match(self, file_name: str) -> int:
        """How long a suffix of `file_name` names this format (0: none); the
        longest over all formats wins, so `x.caffemodel.h5` is not just `.h5`."""
        lowered = file_name.lower()
        return max((len(s) for s in self.suffixes if lowered.endswith(s)), default=0)

    def read(self, path: str, *, architecture=None, **options):
        """The file as a Model (or SolverState); with `architecture` (a net
        definition read from --prototxt), the weights on that net."""
        reader = self._hook("read")
        if architecture is None:
            return reader(path, **options)
        if self.joins_net_definition == JOINED_BY_READER:
            return reader(path, architecture=architecture, **options)
        if self.joins_net_definition != JOINED_BY_LAYER_NAME:
            raise FormatError(f"--prototxt goes with a weights file, not {self.description}", path)
        weights = reader(path, **options)
        sources = [WeightSource(layer.name, dict(enumerate(layer.blobs))) for layer in weights.layers]
        attach_weights(architecture, sources, weights_path=path, absent_shared_ok=False)
        architecture.source_format = self.name
        architecture.source_version = weights.source_version
        return architecture

    def write(self, obj, path: str, **options) -> None:
        self._hook("write")(obj, path, **options)

    def verify_written(self, obj, temporary: str, prototxt: str | None = None):
        """(check text, the written file as read back, or None where its own
        runtime is what checks it); CheckFailed when it does not hold `obj`."""
        given = self._hook("verify_written")
        if given is not None:
            return given(obj, temporary, prototxt)
        written = self.read(temporary)
        if isinstance(obj, SolverState):
            problems = state_differences(obj, written)
        else:
            problems = model_differences(obj, written, architecture=self.holds_architecture,
                                         tensors=self.holds_weights, diffs="diffs" in self.holds)
        if problems:
            raise CheckFailed("the written file does not read back the same: " + "; ".join(problems))
        exact = self.holds_weights or self.holds_solver_state
        return ("bit-exact" if exact else "architecture identical"), written

    def companions(self, destination: str) -> Companions:
        given = self._hook("companions")
        if given is not None:
            return given(destination)
        if self.deploy_pair:
            stem = destination
            for suffix in self.suffixes:
                if destination.endswith(suffix):
                    stem = destination[: -len(suffix)]
                    break
            return Companions(net_definition=stem + ".prototxt")
        return Companions()

    def inspect(self, path: str) -> dict:
        """What `blobcast inspect` shows of the file as this format, beyond
        the model it reads as (the HDF5 tree, the ONNX graph); "name" names
        the model where it has no Caffe form."""
        given = self._hook("inspect")
        if given is not None:
            return given(path)
        if self.container == "hdf5":
            from .hdf5_container import listing

            return {"hdf5": listing(path)}
        return {}

    def runner(self, path: str, **options):
        """What runs a file of this format by itself, or None where the
        engine runs the model it reads as."""
        given = self._hook("runner")
        return given(path, **options) if given is not None else None

    def training_step(self, path: str, gradients: dict) -> dict:
        """One step of the training info a file of this format carries."""
        given = self._hook("training_step")
        if given is None:
            raise FormatError("a training step runs from an .onnx model", path)
        return given(path, gradients)


def record_of(source, **capabilities) -> Format:
    """The record of a format module, or of a class that holds a format's
    NAME ... and hooks (several formats in one module)."""
    if isinstance(source, ModuleType):
        module_name, given = source.__name__, {}
    else:
        module_name = source.__module__
        # Only the class's own hooks: another format of its module is not its.
        given = {hook: getattr(source, hook, None) for hook in HOOKS}
    return Format(name=source.NAME, suffixes=tuple(source.SUFFIXES), description=source.DESCRIPTION,
                  holds=frozenset(source.HOLDS), magic=getattr(source, "MAGIC", None),
                  module_name=getattr(source, "MODULE", module_name), _given=given, **capabilities)
