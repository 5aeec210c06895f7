"""Solver state of a training snapshot: optimizer history tied to parameters.

Caffe keeps one history tensor per learnable parameter for each of its
solver type's history sets (blobcast.solvers; a second set after the first),
in the net's learnable-parameter order: layers in order, blobs in order,
shared parameters once under their owner (Net::AppendParam).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import FormatError
from .model import Layer, Model, layer_included
from .params import Message
from .solvers import SOLVER_TYPES
from .tensor import Tensor, as_tensor, reshaped
from .weights import expected_blob_count


@dataclass
class SolverState:
    """What a .solverstate holds: iteration, step, weights file name, history."""

    iter: int = 0
    current_step: int = 0
    learned_net: str = ""
    history: list[Tensor] = field(default_factory=list)
    # Fields a binary state carries beyond the four above (forks add some).
    extra: Message = field(default_factory=lambda: Message("SolverState"))
    source_path: str = ""
    source_format: str = ""
    # When read from HDF5: each dataset's modification time as the file
    # recorded it, so the state can be written back byte for byte.
    hdf5_times: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.history = [as_tensor(t) for t in self.history]

    def weights_candidates(self) -> list[str]:
        """Where the learned_net file may be: as written (relative to where
        Caffe ran), then beside the state file under its own name.

        The name comes from the file: an absolute path or one with '..' parts
        is not followed as written (the state may not lead blobcast to any
        file of the machine); only its base name is looked up beside the state."""
        if not self.learned_net:
            return []
        candidates = []
        parts = self.learned_net.replace("\\", "/").split("/")
        if not os.path.isabs(self.learned_net) and ".." not in parts:
            candidates.append(self.learned_net)
        if self.source_path:
            beside = os.path.join(os.path.dirname(os.path.abspath(self.source_path)),
                                  os.path.basename(self.learned_net))
            if not candidates or os.path.abspath(beside) != os.path.abspath(candidates[0]):
                candidates.append(beside)
        return candidates

    def find_weights(self) -> str | None:
        for candidate in self.weights_candidates():
            if os.path.isfile(candidate):
                return candidate
        return None

    def require_weights(self) -> str:
        found = self.find_weights()
        if found is None:
            tried = ", ".join(self.weights_candidates()) or "(the state names no learned_net)"
            raise FormatError(f"cannot find the weights file of this state; tried {tried}",
                              self.source_path or None)
        return found

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.history)


@dataclass(frozen=True)
class ParamSlot:
    """One learnable parameter of a net: where it lives and its shape if known."""

    layer: str
    index: int
    shape: tuple[int, ...] | None


def learnable_params(model: Model) -> list[tuple[Layer, int]]:
    """(layer, blob index) of the TRAIN net's parameters in Caffe's
    learnable_params_ order; a blob a file leaves out is counted all the same."""
    train = Model(net=model.net, layers=[layer for layer in model.layers
                                         if layer_included(layer, "TRAIN")])
    owners = train.param_owners()
    found = []
    for li, layer in enumerate(train.layers):
        count = len(layer.blobs) if layer.blobs else (expected_blob_count(layer) or 0)
        found += [(layer, j) for j in range(count) if (li, j) not in owners]
    return found


def learnable_slots(model: Model) -> list[ParamSlot]:
    """The TRAIN net's parameters in Caffe's learnable_params_ order."""
    slots = []
    for layer, j in learnable_params(model):
        blob = layer.blobs[j] if j < len(layer.blobs) else None
        slots.append(ParamSlot(layer.name, j, blob.shape if blob is not None else None))
    return slots


@dataclass(frozen=True)
class HistoryEntry:
    slot: ParamSlot
    set_index: int
    tensor: Tensor


def tie_history(state: SolverState, slots: list[ParamSlot],
                 solver_type: str | None = None) -> list[HistoryEntry]:
    """Pair each history tensor with its parameter; raise on any mismatch."""
    count, params = len(state.history), len(slots)
    where = state.source_path or None
    if solver_type is not None:
        if solver_type not in SOLVER_TYPES:
            raise FormatError(f"unknown solver type {solver_type!r}; known: "
                              + ", ".join(SOLVER_TYPES))
        sets = len(SOLVER_TYPES[solver_type].history)
        if count != sets * params:
            raise FormatError(
                f"a {solver_type} state holds {sets} history tensor(s) per learnable parameter: "
                f"{sets * params} for this net's {params} parameters, but the state has {count}",
                where)
    elif params and count == params:
        sets = 1
    elif params and count == 2 * params:
        sets = 2
    else:
        raise FormatError(
            f"the state has {count} history tensors but the net has {params} learnable "
            f"parameters (a state keeps 1 or 2 per parameter)", where)
    entries = []
    for i, tensor in enumerate(state.history):
        slot = slots[i % params]
        if slot.shape is not None and tuple(tensor.shape) != tuple(slot.shape):
            if not legacy_history_fits(tuple(tensor.shape), tuple(slot.shape)):
                raise FormatError(
                    f"history tensor {i} has shape {list(tensor.shape)} but its parameter "
                    f"{slot.layer!r} blob {slot.index} has shape {list(slot.shape)}", where)
            tensor = reshaped(tensor, slot.shape)
        entries.append(HistoryEntry(slot, i // params, tensor))
    return entries


def legacy_history_fits(stored: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """A history blob in the legacy 4-D num/channels/height/width that Caffe
    before 2015 wrote for every blob: the parameter's shape with leading 1s
    (1 x 1 x 1 x 20 for a [20] bias). Caffe's RestoreSolverStateFromBinaryProto
    takes it (Blob::FromProto reshapes the history to what the file says) and
    its update runs over the elements in order: the same values. This is the
    legacy rule of Blob::ShapeEquals; any other shape stays a mismatch."""
    return len(stored) == 4 and len(shape) <= 4 and stored == (1,) * (4 - len(shape)) + shape
