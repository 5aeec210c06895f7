"""The canonical in-memory Caffe model, shared by every reader and writer.

A `Model` is a net: net-level settings, layers in order, and each layer's
parameter blobs. Layer settings are typed `Message`s (see params.py) holding
exactly what the file said, with Caffe's defaults for the rest. Blobs hold
lazy tensors. A parameter shared between layers (`param { name: "w" }`) is one
`Blob` object that every sharing layer holds; the first layer in net order
owns it, as in Caffe's Net::AppendParam.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import BlobcastError
from .layers import LayerSpec, spec_for
from .params import Message
from .tensor import Tensor, as_tensor


@dataclass(eq=False)
class Blob:
    """One parameter blob: its values, optionally its gradient.

    `legacy_shape` is the 4-D num/channels/height/width a legacy file stored
    for it, kept only so that file can be written back byte for byte.
    """

    data: Tensor
    diff: Tensor | None = None
    legacy_shape: tuple[int, int, int, int] | None = None

    def __post_init__(self):
        self.data = as_tensor(self.data)
        if self.diff is not None:
            self.diff = as_tensor(self.diff)
            if self.diff.shape != self.data.shape:
                raise ValueError(
                    f"diff shape {list(self.diff.shape)} differs from data shape {list(self.data.shape)}"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (self.diff.nbytes if self.diff is not None else 0)


class Layer:
    """One layer: its LayerParameter settings (`spec`) and its blobs."""

    def __init__(self, name: str = "", type: str = "", bottoms=(), tops=(), blobs=(),
                 spec: Message | None = None, **settings):
        self.spec = spec if spec is not None else Message("LayerParameter")
        if spec is None or name:
            self.spec.name = name
        if spec is None or type:
            self.spec.type = type
        if bottoms:
            self.spec.bottom = list(bottoms)
        if tops:
            self.spec.top = list(tops)
        for key, value in settings.items():
            setattr(self.spec, key, value)
        self.blobs: list[Blob | None] = [
            b if isinstance(b, Blob) or b is None else Blob(b) for b in blobs]
        # The module instances this layer came from, outermost first (modules.py).
        self.module_path: tuple[str, ...] = ()

    name = property(lambda self: self.spec.name, lambda self, v: setattr(self.spec, "name", v))
    type = property(lambda self: self.spec.type, lambda self, v: setattr(self.spec, "type", v))

    @property
    def bottoms(self) -> list[str]:
        return self.spec.bottom

    @property
    def tops(self) -> list[str]:
        return self.spec.top

    @property
    def _type_spec(self):
        """What blobcast knows about this layer's type (a bare spec if nothing)."""
        return spec_for(self.type) or LayerSpec

    @property
    def param_specs(self):
        """The layer's ParamSpec list (name, lr_mult, decay_mult per blob)."""
        return self.spec.param

    @property
    def type_params(self) -> Message | None:
        """The settings message for this layer's type (e.g. convolution_param);
        reading an absent one does not make it present, setting a field does."""
        field_name = self._type_spec.settings
        return self.spec.settings(field_name) if field_name else None

    def key_settings(self) -> dict:
        """A few defining settings of the layer, for listings."""
        kind = self._type_spec
        if not kind.settings or not self.spec.has(kind.settings):
            return {}
        present = getattr(self.spec, kind.settings).to_dict()
        return {name: present[name] for name in kind.key_settings if name in present}

    def param_name(self, index: int) -> str:
        specs = self.spec.param
        return specs[index].name if index < len(specs) else ""

    def lr_mult(self, index: int) -> float:
        if self._type_spec.statistics:
            return 0.0  # running statistics: Caffe forces lr_mult 0 (BatchNormLayer::LayerSetUp)
        specs = self.spec.param
        return specs[index].lr_mult if index < len(specs) else 1.0

    def decay_mult(self, index: int) -> float:
        # Statistics keep decay_mult 1: BatchNormLayer::LayerSetUp sets lr_mult only.
        specs = self.spec.param
        return specs[index].decay_mult if index < len(specs) else 1.0

    def __repr__(self) -> str:
        return (f"Layer({self.name!r}, {self.type!r}, bottoms={list(self.bottoms)}, "
                f"tops={list(self.tops)}, blobs={[list(b.shape) for b in self.blobs]})")


@dataclass(frozen=True)
class ParamRef:
    """A parameter blob located in the net: layer, blob index, and the blob."""

    layer: Layer
    index: int
    blob: Blob

    @property
    def key(self) -> str:
        return f"{self.layer.name}/{self.index}"


def _rule_met(rule, phase: str, level: int, stages: set[str]) -> bool:
    """Caffe's StateMeetsRule."""
    if rule.has("phase") and rule.phase != phase:
        return False
    if rule.has("min_level") and level < rule.min_level:
        return False
    if rule.has("max_level") and level > rule.max_level:
        return False
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer: Layer, phase: str = "TEST", level: int = 0, stages=()) -> bool:
    """Caffe's Net::FilterNet for one layer."""
    stages = set(stages)
    includes, excludes = list(layer.spec.include), list(layer.spec.exclude)
    if includes and excludes:
        raise BlobcastError(f"layer {layer.name!r} has both include and exclude rules")
    if includes:
        return any(_rule_met(rule, phase, level, stages) for rule in includes)
    return not any(_rule_met(rule, phase, level, stages) for rule in excludes)



@dataclass
class Model:
    """A Caffe net with its weights."""

    net: Message = field(default_factory=lambda: Message("NetParameter"))
    layers: list[Layer] = field(default_factory=list)
    # Whether the layer definitions are known (False for a bare weights file
    # such as Caffe's own .caffemodel.h5, which stores only names and values).
    has_architecture: bool = True
    source_format: str = ""
    source_version: str = ""
    notes: list[str] = field(default_factory=list)
    # Write the inputs as the net's input/input_shape fields, for toolchains
    # without Input layers (targets.py): they are held as one Input layer
    # named "input", as Caffe's upgrade of those fields makes it. Reading such
    # a file gives the Input layer, as Caffe does.
    legacy_inputs: bool = False
    # Module instances by qualified name (modules.ModuleInstance), in net order.
    modules: dict = field(default_factory=dict)
    # A training snapshot's solver settings and state: a blobcast.training.Training
    # (not imported here: that module builds on this one).
    training: Training | None = None  # noqa: F821

    # -- net-level ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.net.name

    @name.setter
    def name(self, value: str) -> None:
        self.net.name = value

    def inputs(self) -> dict[str, list[int] | None]:
        """Net inputs and their shapes, from Input layers."""
        out: dict[str, list[int] | None] = {}
        for layer in self.layers:
            if layer.type != "Input":
                continue
            shapes = layer.spec.input_param.shape if layer.spec.has("input_param") else []
            for i, top in enumerate(layer.tops):
                shape = shapes[i] if i < len(shapes) else (shapes[0] if len(shapes) == 1 else None)
                out[top] = list(shape.dim) if shape is not None else None
        return out

    def unproduced_bottoms(self) -> list[tuple[str, str]]:
        """(layer, bottom) pairs whose bottom no earlier layer produces (any phase);
        Caffe refuses such a net ("Unknown bottom blob")."""
        produced: set[str] = set()
        missing = []
        for layer in self.layers:
            for bottom in layer.bottoms:
                if bottom not in produced:
                    missing.append((layer.name, bottom))
            produced.update(layer.tops)
        return missing

    # -- layers -------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}")

    __getitem__ = layer

    def __contains__(self, name: str) -> bool:
        return any(layer.name == name for layer in self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def remove_layer(self, name: str) -> Layer:
        layer = self.layer(name)
        self.layers.remove(layer)
        self.link_shared_params()
        return layer

    def rename_layer(self, old: str, new: str) -> None:
        if new in self and new != old:
            raise ValueError(f"a layer named {new!r} already exists")
        self.layer(old).name = new

    def duplicate_layer_names(self) -> list[str]:
        """Names two layers share within one phase. As in Caffe, the check
        follows FilterNet: a train_test net's two data layers of one name,
        one per phase, are not duplicates."""
        duplicates: list[str] = []
        for phase in ("TRAIN", "TEST"):
            seen = set()
            for layer in self.layers:
                if not layer_included(layer, phase):
                    continue
                if layer.name in seen and layer.name not in duplicates:
                    duplicates.append(layer.name)
                seen.add(layer.name)
        return duplicates

    # -- parameters ---------------------------------------------------------
    def param_owners(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Map (layer index, blob index) of each sharing layer to its owner's.

        Sharing is by ParamSpec name; the first layer in net order that uses
        a name owns the parameter. Owners are not in the map.
        """
        first_use: dict[str, tuple[int, int]] = {}
        owners: dict[tuple[int, int], tuple[int, int]] = {}
        for li, layer in enumerate(self.layers):
            count = max(len(layer.blobs), len(layer.param_specs))
            for bi in range(count):
                name = layer.param_name(bi)
                if not name:
                    continue
                if name in first_use:
                    owners[(li, bi)] = first_use[name]
                else:
                    first_use[name] = (li, bi)
        return owners

    def link_shared_params(self) -> None:
        """Make every sharing layer hold its owner's Blob object."""
        for (li, bi), (oi, obi) in self.param_owners().items():
            owner_layer, layer = self.layers[oi], self.layers[li]
            if obi >= len(owner_layer.blobs):
                continue
            owner_blob = owner_layer.blobs[obi]
            if bi < len(layer.blobs):
                layer.blobs[bi] = owner_blob
            elif bi == len(layer.blobs):
                layer.blobs.append(owner_blob)

    def owned_params(self) -> list[ParamRef]:
        """Every parameter blob once, under its owner, in Caffe's net order.

        This is Caffe's `learnable_params_` order, which solver history follows.
        """
        shared = self.param_owners()
        refs = []
        for li, layer in enumerate(self.layers):
            for bi, blob in enumerate(layer.blobs):
                # None marks a blob a bare weights file leaves to a sharing owner.
                if blob is not None and (li, bi) not in shared:
                    refs.append(ParamRef(layer, bi, blob))
        return refs

    def shared_with(self, layer: Layer, index: int) -> Layer | None:
        """The owner layer if this layer's blob `index` is shared, else None."""
        owners = self.param_owners()
        li = self.layers.index(layer)
        if (li, index) in owners:
            return self.layers[owners[(li, index)][0]]
        return None

    def params(self) -> list[ParamRef]:
        """Learnable parameters: owned blobs that training updates (lr_mult != 0)."""
        return [ref for ref in self.owned_params() if ref.layer.lr_mult(ref.index) != 0]

    def states(self) -> list[ParamRef]:
        """Non-learned state: owned blobs with lr_mult 0 (e.g. BatchNorm statistics)."""
        return [ref for ref in self.owned_params() if ref.layer.lr_mult(ref.index) == 0]

    def tensors(self) -> Iterator[tuple[str, Tensor]]:
        """(key, tensor) for every owned data and diff tensor."""
        for ref in self.owned_params():
            yield ref.key, ref.blob.data
            if ref.blob.diff is not None:
                yield ref.key + "/diff", ref.blob.diff

    @property
    def parameter_count(self) -> int:
        return sum(ref.blob.data.size for ref in self.owned_params())

    @property
    def nbytes(self) -> int:
        return sum(ref.blob.nbytes for ref in self.owned_params())

    @property
    def has_diff(self) -> bool:
        return any(ref.blob.diff is not None for ref in self.owned_params())
