"""Layer implementations, registered by Caffe type string (like Caffe's
REGISTER_LAYER_CLASS): one class per type, duplicates refused."""

from __future__ import annotations

from math import prod

from ..errors import BlobcastError

LAYER_TYPES: dict[str, type] = {}


def register(*type_names: str):
    def decorate(cls):
        for name in type_names:
            if name in LAYER_TYPES:
                raise RuntimeError(f"layer type {name!r} is registered twice")
            LAYER_TYPES[name] = cls
        return cls

    return decorate


def implementation(type_name: str, layer_name: str) -> type:
    try:
        return LAYER_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(LAYER_TYPES))
        raise BlobcastError(f"layer {layer_name!r}: the engine has no {type_name!r} layer; "
                            f"it runs: {known}") from None


class LayerOp:
    """One layer of a net, ready to run: settings parsed once, weights on the device.

    `forward(*bottoms)` takes and returns arrays of the array module `xp`
    (numpy or cupy); it returns a tuple with one array per top.
    """

    # Set for shape inference: layers whose cost is in their weights return
    # zeros of the right shape instead of reading the weights.
    shape_only = False

    def __init__(self, layer, xp, weights: list, phase: str = "TEST"):
        self.layer = layer
        self.name = layer.name
        self.xp = xp
        self.weights = weights
        self.phase = phase
        self.params = layer.type_params
        self.setup()

    def setup(self) -> None:
        pass

    def forward(self, *bottoms):
        raise NotImplementedError

    def values_needed(self, shapes: list[tuple[int, ...]]) -> int:
        """How many values the forward pass allocates (tops and temporaries),
        from the bottoms' shapes alone: checked against the memory budget
        before the layer runs. The default suits layers whose tops are no
        larger than their bottoms; layers that can grow override it."""
        return (2 + len(self.layer.tops)) * sum(prod(shape) for shape in shapes) + 1

    def fail(self, problem: str) -> BlobcastError:
        return BlobcastError(f"layer {self.name!r} ({self.layer.type}): {problem}")


def canonical_axis(axis: int, ndim: int, name: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise BlobcastError(f"{name} {axis} is out of range for a {ndim}-axis blob")
    return axis % ndim
