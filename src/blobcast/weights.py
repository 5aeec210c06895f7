"""Putting weights onto an architecture by layer name, as Caffe does.

Caffe's Net::CopyTrainedLayersFrom (binary) walks the weight file's layers
and copies each into the net's layer of the same name; the blob counts must
match and every shape must agree. CopyTrainedLayersFromHDF5 does the same
from /data/<layer>/<i>, where a shared parameter may be absent under the
layers that do not own it. Both skip source layers the net does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BlobcastError, FormatError
from .layers.base import expected_blob_count  # noqa: F401  (re-exported)
from .model import Blob, Layer, Model
from .shapes import shape_problem, weight_shape_problem


def lacks_weights(layer: Layer) -> bool:
    expected = expected_blob_count(layer)
    return bool(expected) and sum(blob is not None for blob in layer.blobs) < expected


def check_has_weights(layer: Layer) -> None:
    expected = expected_blob_count(layer)
    present = sum(blob is not None for blob in layer.blobs)
    if expected and present < expected:
        held = "no weights" if not present else f"{present} of its {expected} blobs"
        raise BlobcastError(f"layer {layer.name!r} ({layer.type}) has {held}; a net definition "
                            "alone holds none: give the weights file (a .caffemodel, or "
                            "weights with --prototxt), or run --random-weights for a shape and "
                            "speed check")


@dataclass
class WeightSource:
    """One source layer's blobs, by index (an index may be absent in HDF5)."""

    name: str
    blobs: dict[int, Blob] = field(default_factory=dict)


@dataclass
class MatchReport:
    ignored_source_layers: list[str] = field(default_factory=list)
    layers_without_weights: list[str] = field(default_factory=list)


def _fill_layer(model: Model, li: int, source: WeightSource, owners: dict, check_definitions: bool,
                absent_shared_ok: bool, weights_path: str | None) -> None:
    """Give layer `li` the blobs of `source`, checked against its definition."""
    layer = model.layers[li]
    expected = expected_blob_count(layer) if check_definitions else None
    present = max(source.blobs, default=-1) + 1
    count = expected if expected is not None else present
    if present > count or (not absent_shared_ok and present != count):
        raise FormatError(
            f"layer {layer.name!r} ({layer.type}) takes {count} blobs but the weights "
            f"have {present}", weights_path)
    blobs: list[Blob | None] = []
    for j in range(count):
        blob = source.blobs.get(j)
        if blob is None:
            if (li, j) in owners and absent_shared_ok:
                blobs.append(None)
                continue
            raise FormatError(
                f"layer {layer.name!r} ({layer.type}) takes {count} blobs but blob {j} "
                "is missing from the weights", weights_path)
        problem = shape_problem(layer, j, blob.shape) if check_definitions else None
        if problem:
            raise FormatError(f"layer {layer.name!r} blob {j}: {problem}", weights_path)
        blobs.append(blob)
    for j, blob in enumerate(blobs):
        if blob is not None and (li, j) in owners:
            # A copy under a sharing layer overwrites the shared parameter.
            oi, oj = owners[(li, j)]
            owner_blobs = model.layers[oi].blobs
            if oj < len(owner_blobs):
                owner_blobs[oj] = blob
    layer.blobs = blobs


def _take_owners_blobs(model: Model, owners: dict, weights_path: str | None) -> None:
    """Absent shared slots take the owner's blob."""
    for li, layer in enumerate(model.layers):
        for j, blob in enumerate(layer.blobs):
            if blob is None:
                oi, oj = owners[(li, j)]
                owner_blobs = model.layers[oi].blobs
                if oj >= len(owner_blobs) or owner_blobs[oj] is None:
                    raise FormatError(
                        f"layer {layer.name!r} shares blob {j} with layer "
                        f"{model.layers[oi].name!r}, which has no weights for it", weights_path)
                layer.blobs[j] = owner_blobs[oj]


def _check_shapes_against_layers(model: Model, weights_path: str | None) -> None:
    """Every blob in the shape its layer class gives it (shapes.py), once all are in place."""
    problem = weight_shape_problem(model)
    if problem:
        raise FormatError(problem, weights_path)


def attach_weights(model: Model, sources: list[WeightSource], *, weights_path: str,
                   absent_shared_ok: bool, check_definitions: bool = True) -> MatchReport:
    """Copy weights into `model`'s layers by name; raise FormatError on a mismatch.

    `absent_shared_ok` is the HDF5 rule: a blob index may be missing from a
    source layer when that layer does not own the (shared) parameter.
    `check_definitions=False` takes blob counts and shapes as the file has
    them: for an architecture stored with its weights, which records the
    model as it was rather than a net they must fit.
    """
    duplicates = model.duplicate_layer_names()
    if duplicates:
        raise FormatError(
            f"the architecture has duplicate layer names ({', '.join(duplicates)}); "
            "weights are matched by layer name, so each name must be unique")
    # A name may stand for one layer per phase (train_test nets): each gets the weights.
    indices_by_name: dict[str, list[int]] = {}
    for i, layer in enumerate(model.layers):
        indices_by_name.setdefault(layer.name, []).append(i)
    owners = model.param_owners()
    report = MatchReport()
    filled: set[int] = set()
    for source in sources:
        targets = indices_by_name.get(source.name)
        if targets is None:
            if source.blobs:
                report.ignored_source_layers.append(source.name)
            continue
        for li in targets:
            _fill_layer(model, li, source, owners, check_definitions, absent_shared_ok, weights_path)
            filled.add(li)

    _take_owners_blobs(model, owners, weights_path)
    model.link_shared_params()
    if check_definitions:
        _check_shapes_against_layers(model, weights_path)
    for li, layer in enumerate(model.layers):
        if li not in filled and (expected_blob_count(layer) or 0) > 0:
            report.layers_without_weights.append(layer.name)
    if report.ignored_source_layers:
        model.notes.append("weights of layers not in the architecture were ignored: "
                           + ", ".join(report.ignored_source_layers))
    if report.layers_without_weights:
        model.notes.append("layers that got no weights: " + ", ".join(report.layers_without_weights))
    return report
