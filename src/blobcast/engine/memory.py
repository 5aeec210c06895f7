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

from dataclasses import dataclass
from math import prod

import numpy as np

from ..layers.base import LAYER_TYPES
from ..model import Layer
from ..threads import run_channel_blocks
from .caffe_rules import shared_memory

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
    """shared: blob -> the blobs sharing its memory in Caffe (itself included);
    final_at: blob -> index of the layer after which it holds its last value
    (its own last write or an in-place write on a blob it shares memory with;
    -1 for an input never rewritten); release_after: layer index -> the blobs
    no later layer reads or changes, freed once that layer has run."""

    shared: dict[str, frozenset[str]]
    final_at: dict[str, int]
    release_after: dict[int, list[str]]


def plan_memory(layers: list[Layer], inputs, outputs) -> MemoryPlan:
    shared = shared_memory(layers)
    last_write: dict[str, int] = {}
    last_in_place: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for index, layer in enumerate(layers):
        for name in layer.bottoms:
            last_read[name] = index
        for position, name in enumerate(layer.tops):
            last_write[name] = index
            if position < len(layer.bottoms) and layer.bottoms[position] == name:
                last_in_place[name] = index
    final_at: dict[str, int] = {}
    for name in list(inputs) + list(last_write):
        final = last_write.get(name, -1)
        for member in shared.get(name, ()):
            final = max(final, last_in_place.get(member, -1))
        final_at[name] = final
    release_after: dict[int, list[str]] = {}
    keep = set(outputs)
    for name, index in last_read.items():
        if name in keep:
            continue
        if name in shared:  # it still changes with the blobs it shares
            index = max(index, final_at.get(name, index))
        release_after.setdefault(index, []).append(name)
    return MemoryPlan(shared, final_at, release_after)


BLOCK_BYTES = 1 << 18  # a block of a blob that stays in a core's L2 cache


def run_in_place(array: np.ndarray, chain: list) -> None:
    """Apply each function of `chain` to the array in place, block by block
    (per sample, a run of channels), on the engine's threads. Each value goes
    through the same operations as layer by layer, so the results are
    identical."""
    if array.ndim < 2 or array.size == 0:
        for apply in chain:
            apply(array, slice(None))
        return

    def work(sample: int, selected: slice) -> None:
        view = array[sample, selected]
        for apply in chain:
            apply(view, selected)

    run_channel_blocks(work, array.shape[0], array.shape[1],
                       prod(array.shape[2:]) * array.itemsize, BLOCK_BYTES)
