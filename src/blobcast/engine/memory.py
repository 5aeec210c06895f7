"""Which arrays a forward pass may overwrite, and which blobs share memory,
decided from the net alone (never from reference counts).

A layer that rewrites its blob in place (a top named as its bottom) may do it
in the blob's own memory when that memory is the engine's alone: allocated
this pass by a layer type whose forward always returns new arrays, and read
by no other layer (Caffe's rules, caffe_rules.check_net, guarantee that an
in-place layer is its blob version's only reader). The caller's inputs,
weights and memory-mapped files are never such memory.

Caffe's Split, Flatten and Reshape share their bottom's memory, so an
in-place layer on one of those blobs changes every blob of the group; the
engine gives each of them the new value (`MemoryPlan.shared`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..caffe_rules import shared_memory
from ..layers.base import LAYER_TYPES
from ..model import Layer
from ..schedule import Schedule
from ..values import BlobVersions

# Built-in layer types whose forward always returns arrays it has just
# allocated: never a bottom, a view of one, a weight or an array kept
# between passes (Dropout, Flatten, Reshape, Split, Slice, Crop, Interp's
# crop and ShuffleChannel may hand back views; PriorBox and Python layers are
# left out).
NEW_MEMORY_TYPES = frozenset({
    "AbsVal", "Axpy", "BatchNorm", "Bias", "BNLL", "Clip", "Concat", "Convolution",
    "ConvolutionDepthwise", "Deconvolution", "DepthwiseConvolution", "ELU", "Eltwise", "Exp",
    "InnerProduct", "Log", "LRN", "Normalize", "Pooling", "Power", "PReLU", "ReLU", "ReLU6",
    "Scale", "Sigmoid", "Softmax", "Swish", "TanH", "Threshold", "Upsample",
})


def makes_new_memory(layer: Layer) -> bool:
    """Whether the layer's tops are arrays its forward has just allocated
    (a plugin registered under a built-in name is not trusted to)."""
    op = LAYER_TYPES.get(layer.type)
    return layer.type in NEW_MEMORY_TYPES and op is not None and \
        op.__module__.startswith("blobcast.layers.")


@dataclass(frozen=True)
class MemoryPlan:
    """group: blob -> the number of the group of blobs sharing its memory in
    Caffe (only blobs that share); final_at: blob -> index of the layer after
    which it holds its last value (its own last write or an in-place write on
    a blob of its group; -1 for an input never rewritten); release_after:
    layer index -> the blobs no later layer reads; release_reported: the same
    for a pass that reports or keeps every blob's last value (later where a
    blob of its group changes it after its last reader); changed_at: layer
    index -> the blobs that take their last value there through a blob of
    their group, not as a top of that layer; reusable: the blobs whose array,
    once released, nobody else can hold (`reusable_blobs`)."""

    group: dict[str, int]
    final_at: dict[str, int]
    release_after: dict[int, list[str]]
    release_reported: dict[int, list[str]]
    changed_at: dict[int, list[str]]
    reusable: frozenset = frozenset()


def plan_memory(schedule: Schedule) -> MemoryPlan:
    layers, inputs, outputs = schedule.layers, schedule.inputs, schedule.outputs
    shared = shared_memory(layers)
    numbers: dict[int, int] = {}
    group = {name: numbers.setdefault(id(members), len(numbers)) for name, members in shared.items()}
    values = BlobVersions(layers, inputs)
    last_write = values.last_writes()
    group_in_place: dict[int, int] = {}  # a group's last in-place write
    for version in values.versions:
        if version.in_place and version.blob in group:
            group_in_place[group[version.blob]] = version.producer
    last_read = values.last_reads()
    final_at: dict[str, int] = {}
    changed_at: dict[int, list[str]] = {}
    for name in list(inputs) + list(last_write):
        final = final_at[name] = max(last_write.get(name, -1), group_in_place.get(group.get(name), -1))
        if final >= 0 and name not in layers[final].tops:
            changed_at.setdefault(final, []).append(name)
    release_after: dict[int, list[str]] = {}
    release_reported: dict[int, list[str]] = {}
    keep = set(outputs)
    for name, index in last_read.items():
        if name not in keep:
            release_after.setdefault(index, []).append(name)
            # reported: one sharing memory still changes with its group
            release_reported.setdefault(max(index, final_at.get(name, index)), []).append(name)
    return MemoryPlan(group, final_at, release_after, release_reported, changed_at,
                      reusable_blobs(layers, group, keep))


def reusable_blobs(layers: list[Layer], group: dict, outputs: set) -> frozenset:
    """Blobs whose arrays the engine may hand out again once released: made
    by a built-in layer that allocates its only top, read (and rewritten in
    place) only by such layers, which keep no bottom and return no view of
    one; in no group sharing memory, and not an output of the net."""
    makers: dict[str, bool] = {}
    for layer in layers:
        fresh = makes_new_memory(layer)
        for name in layer.bottoms:
            if name in makers and not fresh:
                makers[name] = False  # read by a layer that may keep it or view it
        for name in layer.tops:
            if name not in layer.bottoms:  # a new version (an in-place one keeps its array)
                makers[name] = fresh and len(layer.tops) == 1
    return frozenset(name for name, fresh in makers.items()
                     if fresh and name not in group and name not in outputs)


@dataclass
class ForwardPass:
    """One forward pass's blobs: `values` by name (what later layers read),
    `kept` (every blob, with keep_all), `owned` (blobs whose array this pass
    allocated and no other blob, caller or weight sees: only they are
    rewritten in their own memory), and how blobs are reported.

    A blob sharing memory with others (Caffe's Split, Flatten, Reshape) takes
    its group's newest in-place value when it is next read, reported or
    returned: each write costs the same however large the group."""

    plan: MemoryPlan
    values: dict
    kept: dict
    keep_all: bool
    on_blob: object
    final_only: bool
    check_budget: bool
    itemsize: int = 4
    pool: object = None  # engine/buffers.ArrayPool: released arrays go back to it
    owned: set = field(default_factory=set)
    newest: dict = field(default_factory=dict)  # group -> (layer index, array)
    since: dict = field(default_factory=dict)  # blob -> the layer index its value is from
    # The bytes of the arrays held (each array once), kept up to date so that
    # checking the budget before each layer costs the same however many are held.
    held_bytes: int = 0
    _bindings: dict = field(default_factory=dict)  # id(array) -> [bytes, names bound to it]

    def __post_init__(self):
        for blobs in (self.values, self.kept):
            for value in blobs.values():
                self._count(value, 1)

    def _count(self, value, step: int) -> None:
        entry = self._bindings.get(id(value))
        if entry is None:
            entry = self._bindings[id(value)] = [value.nbytes, 0]
            self.held_bytes += value.nbytes
        entry[1] += step
        if entry[1] == 0:
            del self._bindings[id(value)]
            self.held_bytes -= entry[0]

    def _bind(self, blobs: dict, name: str, value) -> None:
        old = blobs.get(name)
        if old is value:
            return
        blobs[name] = value
        self._count(value, 1)
        if old is not None:
            self._count(old, -1)

    @property
    def release_after(self) -> dict[int, list[str]]:
        """A blob's last value is wanted (reported or kept) even after its last reader."""
        reporting = self.keep_all or self.on_blob is not None
        return self.plan.release_reported if reporting else self.plan.release_after

    def release(self, name: str) -> None:
        old = self.values.pop(name, None)
        if old is not None:
            self._count(old, -1)
            if self.pool is not None and name in self.owned and name in self.plan.reusable and \
                    id(old) not in self._bindings:
                self.pool.give_back(old)

    def store(self, name: str, value, index: int, in_place: bool) -> None:
        self._bind(self.values, name, value)
        self.since[name] = index
        if in_place and name in self.plan.group:
            self.newest[self.plan.group[name]] = (index, value)
        self.report(name, index)

    def current(self, name: str):
        """The blob's value, its group's newest in-place value where that
        came later (reshaped to the blob's own shape: Caffe shares the data)."""
        held = self.values.get(name)
        if held is None:
            held = self.kept.get(name)
        newest = self.newest.get(self.plan.group.get(name))
        if newest is None or held is None or newest[0] <= self.since.get(name, -1) or \
                newest[1].size != held.size:
            return held
        value = newest[1].reshape(held.shape)
        self.since[name] = newest[0]
        self.owned.discard(name)  # a view of another blob's value
        for blobs in (self.values, self.kept):
            if name in blobs:
                self._bind(blobs, name, value)
        return value

    def report(self, name: str, index: int) -> None:
        value = self.current(name)
        if self.keep_all:
            self._bind(self.kept, name, value)
        if self.on_blob is not None and (not self.final_only or self.plan.final_at[name] <= index):
            self.on_blob(name, value)
