"""What blobcast knows about each Caffe layer type, in one place per type.

A layer type is one class (like Caffe's Layer): the type names it answers
to, its settings field and the settings worth listing, its role (compute,
input, data, loss/evaluation), how many blobs it holds and whether they are
statistics, its top shapes from its bottoms' shapes without running, and,
for the types the engine runs, the forward pass on the array module it is
given. `register` (like Caffe's REGISTER_LAYER_CLASS) refuses duplicates;
`declare` records a type blobcast reads and writes but does not run.
"""

from __future__ import annotations

from math import prod

from ..errors import BlobcastError
from ..params import Message, unknown_in

SPECS: dict[str, type] = {}        # every type blobcast knows
LAYER_TYPES: dict[str, type] = {}  # the types the engine runs


def register(*type_names: str, settings: str | None = None, key_settings: tuple = (),
             blobs: int | None = 0, statistics: bool = False, bottoms: tuple = (1, 1),
             tops: tuple = (1, 1)):
    """Class decorator: the type(s) this class implements, with its metadata.
    `bottoms` and `tops` are (fewest, most) counts, None for no limit."""

    def decorate(cls):
        cls.settings, cls.key_settings, cls.blobs, cls.statistics = (
            settings, tuple(key_settings), blobs, statistics)
        cls.bottoms, cls.tops = tuple(bottoms), tuple(tops)
        for name in type_names:
            if name in SPECS:
                raise RuntimeError(f"layer type {name!r} is registered twice")
            SPECS[name] = cls
            if cls.runnable:
                LAYER_TYPES[name] = cls
        return cls

    return decorate


def declare(type_name: str, *, settings: str | None = None, role: str = "compute",
            key_settings: tuple = (), blobs: int | None = 0, statistics: bool = False,
            bottoms: tuple = (0, None), tops: tuple = (0, None), origin: str | None = None) -> type:
    """Record a type blobcast knows but the engine does not run."""
    spec = type(type_name, (LayerSpec,), {"role": role, "origin": origin})
    return register(type_name, settings=settings, key_settings=key_settings, blobs=blobs,
                    statistics=statistics, bottoms=bottoms, tops=tops)(spec)


def spec_for(type_name: str) -> type | None:
    return SPECS.get(type_name)


def expected_blob_count(layer) -> int | None:
    """How many blobs Caffe's layer of this type holds, or None when unknown."""
    kind = spec_for(layer.type)
    return kind.blob_count(layer) if kind is not None else None


def implementation(type_name: str, layer_name: str) -> type:
    try:
        return LAYER_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(LAYER_TYPES))
        raise BlobcastError(f"layer {layer_name!r}: the engine has no {type_name!r} layer; "
                            f"it runs: {known}") from None


class LayerSpec:
    """A layer type's metadata (set by `register`) and shape rules."""

    settings: str | None = None
    key_settings: tuple = ()
    role = "compute"       # or "input", "data" (tops become inputs), "loss" (not run)
    origin: str | dict | None = None  # the fork a type comes from (per type name for several); None: BVLC
    exactness: str | None = None      # how its results compare with its origin's, where worth saying
    blobs: int | None = 0  # how many blobs a layer holds (None: unknown)
    statistics = False     # blobs are running statistics, not trained weights (lr_mult 0)
    runnable = False

    bottoms: tuple = (0, None)  # (fewest, most) bottoms; None: no limit
    tops: tuple = (0, None)

    @classmethod
    def blob_count(cls, layer) -> int | None:
        """How many blobs Caffe's layer of this type holds."""
        return cls.blobs

    @classmethod
    def data_dependent_top_shapes(cls, layer) -> list | None:
        """For types whose top sizes depend on the data: each top's shape with
        None for the sizes known only at run time (None if not even that)."""
        return None

    @classmethod
    def arity_problem(cls, layer) -> str | None:
        """What is wrong with the layer's number of bottoms or tops, as
        Caffe's Layer::CheckBlobCounts says it."""
        for what, count, (fewest, most) in (("bottoms", len(layer.bottoms), cls.bottoms),
                                             ("tops", len(layer.tops), cls.tops)):
            if count < fewest or (most is not None and count > most):
                wanted = (f"{fewest}" if fewest == most else
                          f"at least {fewest}" if most is None else f"{fewest} to {most}")
                return f"takes {wanted} {what}, not {count}"
        return None


class LayerOp(LayerSpec):
    """One layer of a net, ready to run: settings parsed once, weights on the device.

    `forward(*bottoms)` takes and returns arrays of the array module `xp`
    (numpy or cupy); it returns a tuple with one array per top.
    `top_shapes(shapes)` gives the tops' shapes from the bottoms' without
    running (an op built without weights serves for that).
    """

    runnable = True

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

    # Whether forward_with_steps applies the steps of the in-place layers
    # after this one to each part of its top while the part is in cache.
    takes_steps = False

    def forward_with_steps(self, steps: list, *bottoms):
        """forward(), then `steps` (layers/steps.py) applied to its only top."""
        from .compiled import run_in_place

        tops = self.forward(*bottoms)
        run_in_place(tops[0], steps)
        return tops

    def in_place(self, shape: tuple[int, ...]):
        """For element-wise layers: the list of steps (layers/steps.py) that
        turn a blob of `shape` into exactly what forward() gives; None where
        the layer cannot (the default). The engine runs chains of in-place
        layers as their steps, in cache and on its threads, without new
        arrays."""
        return None

    def top_shapes(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...] | None]:
        """The tops' shapes; by default each top has the first bottom's shape."""
        return [tuple(shapes[0])] * len(self.layer.tops)

    def blob_shapes(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The shapes of the layer's blobs, from its settings and its bottoms' shapes."""
        return []

    def blob_fillers(self) -> list:
        """How Caffe fills each blob when the net is created (FillerParameter
        messages: the layer's own fillers, or the type's defaults)."""
        return []

    def values_needed(self, shapes: list[tuple[int, ...]]) -> int:
        """How many values the forward pass allocates (tops and temporaries),
        from the bottoms' shapes alone: checked against the memory budget
        before the layer runs. The default suits layers whose tops are no
        larger than their bottoms; layers that can grow override it."""
        return (2 + len(self.layer.tops)) * sum(prod(shape) for shape in shapes) + 1

    def fail(self, problem: str) -> BlobcastError:
        return BlobcastError(f"layer {self.name!r} ({self.layer.type}): {problem}")


def filler(kind: str = "constant", **values):
    """A FillerParameter message (Caffe's filler defaults for what is not given)."""
    message = Message("FillerParameter")
    message.type = kind
    for name, value in values.items():
        setattr(message, name, value)
    return message


def given_filler(params, name: str, default):
    """The layer's filler `name` if its settings give one, else `default`."""
    return getattr(params, name) if params.has(name) else default


def weight_and_bias_fillers(params) -> list:
    """The fillers of a weight and (with bias_term) a bias. No weight filler in
    a deploy prototxt would mean Caffe's zeros and a constant output: xavier
    then, as most Caffe nets give."""
    weight = given_filler(params, "weight_filler", filler("xavier"))
    return [weight] + ([params.bias_filler] if params.bias_term else [])


def canonical_axis(axis: int, ndim: int, name: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise BlobcastError(f"{name} {axis} is out of range for a {ndim}-axis blob")
    return axis % ndim


UNKNOWN_SETTINGS = "its computation may depend on settings blobcast does not know"


def unknown_settings(layer) -> str | None:
    """Why a layer cannot run as its fork meant: its settings (what its
    computation reads) hold fields the schema does not know. Unknown fields
    elsewhere (a data layer's source, a rule) are kept and do not matter."""
    settings = implementation(layer.type, layer.name).settings
    if settings is None or not layer.spec.has(settings):
        return None
    unknown = unknown_in(getattr(layer.spec, settings), settings)
    if not unknown:
        return None
    more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
    return f"{UNKNOWN_SETTINGS}: {', '.join(unknown[:4])}{more}"
