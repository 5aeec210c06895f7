"""Caffe's rules for how a net's layers connect, and which blobs share memory.

Caffe builds a net in two steps (net.cpp, util/insert_splits.cpp):
InsertSplits gives every blob version read by more than one layer a Split
layer, one top per reader, and renames the readers' bottoms; Net::Init then
connects the layers in order and refuses a bottom nothing available produces
("Unknown bottom blob") and a top that names an existing blob without being
in place ("Top blob ... produced by multiple sources"). An in-place layer on
a blob another layer also reads is refused by that second check: its bottom
became a Split top, so it is no longer in place.

Split, Flatten and Reshape give their tops their bottom's memory
(Blob::ShareData): a layer that later rewrites one of them in place changes
them all. `shared_memory` says which blobs share, for the engine to compute
what Caffe computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .errors import BlobcastError
from .layers.base import expected_blob_count
from .model import Layer

# Layer types whose tops are their first bottom's memory in Caffe.
SHARING_TYPES = frozenset({"Split", "Flatten", "Reshape"})


class NetRefused(BlobcastError):
    """A net Caffe's Net::Init refuses; the message carries Caffe's reason."""


@dataclass(frozen=True)
class ConnectedLayer:
    """A layer as Caffe connects it: bottoms renamed to Split tops where one
    blob version has several readers. `source` is the index of the layer in
    the list given, or None for a Split layer Caffe inserts."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    source: int | None


def split_layer_name(producer: str, blob: str, top_index: int) -> str:
    return f"{blob}_{producer}_{top_index}_split"


def split_blob_name(producer: str, blob: str, top_index: int, reader: int) -> str:
    return f"{blob}_{producer}_{top_index}_split_{reader}"


def _loss_weights(layer: Layer) -> list[float]:
    spec = layer.spec
    return [float(weight) for weight in spec.loss_weight] if spec.has("loss_weight") else []


def _count_readers(layers: list[Layer]) -> tuple[dict, dict, dict]:
    """InsertSplits' first pass: for each bottom, the (layer, top index) that
    wrote the version it reads, and how many readers each such top has (a
    nonzero loss_weight counts as one)."""
    last_writer: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.bottoms):
            if blob not in last_writer:
                raise NetRefused(f"Caffe refuses this net: Unknown bottom blob '{blob}' (layer "
                                 f"'{layer.name}', bottom index {j}): its bottom '{blob}' is never "
                                 "produced by an earlier layer")
            source_of[i, j] = last_writer[blob]
            readers[last_writer[blob]] = readers.get(last_writer[blob], 0) + 1
        for j, blob in enumerate(layer.tops):
            last_writer[blob] = (i, j)
        for j, weight in enumerate(_loss_weights(layer)[: len(layer.tops)]):
            top = last_writer[layer.tops[j]]
            loss_weight[top] = weight
            if weight:
                readers[top] = readers.get(top, 0) + 1
    return source_of, readers, loss_weight


def insert_splits(layers: list[Layer]) -> list[ConnectedLayer]:
    """The net as Caffe's InsertSplits rewrites it: each Split layer right
    after the layer that last wrote the blob, named
    <blob>_<layer>_<top index>_split, with tops ..._split_<k>."""
    source_of, readers, loss_weight = _count_readers(layers)
    next_reader: dict[tuple[int, int], int] = {}
    connected: list[ConnectedLayer] = []
    for i, layer in enumerate(layers):
        bottoms = list(layer.bottoms)
        for j, blob in enumerate(bottoms):
            top = source_of[i, j]
            if readers.get(top, 0) > 1:
                reader = next_reader.get(top, 0)
                next_reader[top] = reader + 1
                bottoms[j] = split_blob_name(layers[top[0]].name, blob, top[1], reader)
        connected.append(ConnectedLayer(layer.name, layer.type, tuple(bottoms), tuple(layer.tops), i))
        for j, blob in enumerate(layer.tops):
            count = readers.get((i, j), 0)
            if count > 1:
                if loss_weight.get((i, j)):  # the loss reads split top 0
                    next_reader[i, j] = next_reader.get((i, j), 0) + 1
                connected.append(ConnectedLayer(
                    split_layer_name(layer.name, blob, j), "Split", (blob,),
                    tuple(split_blob_name(layer.name, blob, j, k) for k in range(count)), None))
    return connected


def _writers(layers: list[Layer], blob: str, before: int) -> list[str]:
    return [layer.name for layer in layers[:before] if blob in layer.tops]


def _refusal_reason(layers: list[Layer], layer: Layer, index: int, blob: str) -> str:
    """Why `layer` writing `blob` is not in place, in the net's own terms."""
    if blob in layer.bottoms:
        readers = [other.name for other in layers[:index] if blob in other.bottoms]
        if readers:
            return (f"layer '{layer.name}' rewrites '{blob}' in place while layer '{readers[0]}' "
                    f"reads it too; each reader gets its own Split top, so '{layer.name}' is no "
                    "longer in place")
    writers = [name for name in _writers(layers, blob, index) if name != layer.name]
    if writers:
        return f"layers '{writers[0]}' and '{layer.name}' both write '{blob}'"
    if list(layer.tops).count(blob) > 1:
        return f"layer '{layer.name}' names '{blob}' as two of its tops"
    return f"layer '{layer.name}' writes '{blob}', which is not its bottom at the same position"


def check_net(layers: list[Layer]) -> list[ConnectedLayer]:
    """Refuse, with Caffe's reason, what Net::Init and InsertSplits refuse;
    return the layers as Caffe connects them (Split layers included).
    `layers` are those of one phase, in order (Caffe's FilterNet)."""
    connected = insert_splits(layers)
    _check_shared_params(layers)
    known: set[str] = set()
    available: set[str] = set()
    for layer in connected:
        if layer.source is not None:
            _check_propagate_down(layers[layer.source])
        for j, blob in enumerate(layer.bottoms):
            if blob not in available:  # read already: only a Split top could be
                raise NetRefused(f"Caffe refuses this net: Unknown bottom blob '{blob}' (layer "
                                 f"'{layer.name}', bottom index {j}): its bottom '{blob}' is never "
                                 "produced by an earlier layer")
            available.discard(blob)
        for j, blob in enumerate(layer.tops):
            in_place = j < len(layer.bottoms) and layer.bottoms[j] == blob
            if not in_place and blob in known:
                reason = _refusal_reason(layers, layers[layer.source], layer.source, blob) \
                    if layer.source is not None else f"a Split top is named '{blob}'"
                raise NetRefused(f"Caffe refuses this net: Top blob '{blob}' produced by "
                                 f"multiple sources: {reason}")
            known.add(blob)
            available.add(blob)
    return connected


def _blob_count(layer: Layer) -> int:
    present = sum(blob is not None for blob in layer.blobs)
    return present or expected_blob_count(layer) or len(layer.blobs)


def _shape_string(shape) -> str:  # Blob::shape_string
    return " ".join(str(d) for d in shape) + f" ({prod(shape)})"


def _check_shared_params(layers: list[Layer]) -> None:
    """Net::AppendParam: blobs shared by a param name must match in shape
    (in count with share_mode PERMISSIVE) and in lr_mult and decay_mult
    where both say one."""
    owners: dict[str, tuple[Layer, int, dict]] = {}
    for layer in layers:
        specs = list(layer.spec.param) if layer.spec.has("param") else []
        for index, spec in enumerate(specs[: _blob_count(layer)]):
            if not spec.name:
                continue
            said = {key: getattr(spec, key) for key in ("lr_mult", "decay_mult") if spec.has(key)}
            if spec.name not in owners:
                owners[spec.name] = (layer, index, said)
                continue
            owner, owner_index, owner_said = owners[spec.name]
            _check_shared_shape(spec, owner, owner_index, layer, index)
            for key, value in said.items():
                if owner_said.setdefault(key, value) != value:
                    raise NetRefused(f"Caffe refuses this net: Shared param '{spec.name}' has "
                                     f"mismatched {key}. (layers '{owner.name}' and "
                                     f"'{layer.name}')")


def _check_shared_shape(spec, owner: Layer, owner_index: int, layer: Layer, index: int) -> None:
    mine = layer.blobs[index] if index < len(layer.blobs) else None
    theirs = owner.blobs[owner_index] if owner_index < len(owner.blobs) else None
    if mine is None or theirs is None:
        return  # shapes known only once the net runs
    permissive = spec.share_mode == "PERMISSIVE"
    a, b = tuple(theirs.shape), tuple(mine.shape)
    if (prod(a) == prod(b)) if permissive else (a == b):
        return
    what, expects = ("count", "shape is") if permissive else ("shape", "expects shape")
    raise NetRefused(f"Caffe refuses this net: Cannot share param '{spec.name}' owned by layer "
                     f"'{owner.name}' with layer '{layer.name}'; {what} mismatch.  Owner layer "
                     f"param shape is {_shape_string(a)}; sharing layer {expects} "
                     f"{_shape_string(b)}")


def _check_propagate_down(layer: Layer) -> None:
    spec = layer.spec
    given = len(spec.propagate_down) if spec.has("propagate_down") else 0
    if given and given != len(layer.bottoms):
        raise NetRefused(f"Caffe refuses this net: layer '{layer.name}': propagate_down param must "
                         f"be specified either 0 or bottom_size times ({given} vs. "
                         f"{len(layer.bottoms)} bottoms)")


def shared_memory(layers: list[Layer]) -> dict[str, frozenset[str]]:
    """For each blob that shares its memory with others in Caffe (the tops of
    Split, Flatten and Reshape, and their bottoms, transitively): all the
    blobs of its group, itself included."""
    parent: dict[str, str] = {}

    def root(blob: str) -> str:
        while parent.get(blob, blob) != blob:
            parent[blob] = parent.get(parent[blob], parent[blob])  # path halving
            blob = parent[blob]
        return blob

    for layer in layers:
        if layer.type in SHARING_TYPES and layer.bottoms:
            first = root(layer.bottoms[0])
            for top in layer.tops:
                parent[root(top)] = first
                parent.setdefault(first, first)
    groups: dict[str, set[str]] = {}
    for blob in parent:
        groups.setdefault(root(blob), set()).add(blob)
    shared: dict[str, frozenset[str]] = {}
    for members in groups.values():
        if len(members) > 1:
            group = frozenset(members)  # one object per group
            shared.update(dict.fromkeys(group, group))
    return shared
