"""Module instances in a net: which layers came from which block, as Caffe
issue #1169 asked for.

A modular net file (converters/modular.py) defines a block once and
instantiates it; flattened, every layer keeps `module_path`, the qualified
names of the instances it sits in (outermost first), and the model keeps
one `ModuleInstance` per instance. Discovery (module_discovery.py) fills the
same structure for nets written flat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .model import Model


@dataclass
class ModuleInstance:
    name: str                     # qualified: "inception_3a", "stage2.block1"
    module: str                   # the module it instantiates
    params: dict[str, str] = field(default_factory=dict)
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    parent: str | None = None
    share_weights: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "module": self.module, "params": dict(self.params),
                "bottoms": list(self.bottoms), "tops": list(self.tops), "parent": self.parent,
                "share_weights": self.share_weights}

    @classmethod
    def from_dict(cls, data: dict) -> ModuleInstance:
        return cls(name=str(data["name"]), module=str(data["module"]),
                   params={str(k): str(v) for k, v in dict(data.get("params", {})).items()},
                   bottoms=[str(b) for b in data.get("bottoms", [])],
                   tops=[str(t) for t in data.get("tops", [])],
                   parent=None if data.get("parent") is None else str(data["parent"]),
                   share_weights=bool(data.get("share_weights", False)))


def module_tree(model: Model) -> list[dict]:
    """The instances as a tree (top level first, in net order): each with its
    module, parameters, bottoms -> tops, layer and parameter counts, children."""
    owners = model.param_owners()
    layers, parameters = {name: 0 for name in model.modules}, {name: 0 for name in model.modules}
    for li, layer in enumerate(model.layers):  # a layer counts in every instance it sits in
        own = sum(blob.data.size for j, blob in enumerate(layer.blobs)
                  if blob is not None and (li, j) not in owners)
        for name in layer.module_path:
            if name in layers:
                layers[name] += 1
                parameters[name] += own
    nodes: dict[str, dict] = {}
    roots: list[dict] = []
    for name, instance in model.modules.items():
        node = {**instance.to_dict(), "layers": layers[name], "parameters": parameters[name],
                "children": []}
        nodes[name] = node
        parent = nodes.get(instance.parent) if instance.parent else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots


def module_summary(model: Model) -> list[dict]:
    """Each module with its instances' names, in first-use order."""
    summary: dict[str, dict] = {}
    for instance in model.modules.values():
        entry = summary.setdefault(instance.module, {"module": instance.module, "instances": []})
        entry["instances"].append(instance.name)
    return list(summary.values())


def modules_json(model: Model) -> str | None:
    """The model's instances and each layer's module path, as JSON (or None)."""
    if not model.modules:
        return None
    return json.dumps({"instances": [instance.to_dict() for instance in model.modules.values()],
                       "layers": {layer.name: list(layer.module_path) for layer in model.layers
                                  if layer.module_path}})


def apply_modules_json(model: Model, text: str, strict: bool = True) -> None:
    """Restore what modules_json wrote; ValueError names what is wrong.
    strict=False: layers the record names that the net no longer has (an
    import may merge layers) are passed over."""
    try:
        data = json.loads(text)
        instances = [ModuleInstance.from_dict(item) for item in data["instances"]]
        paths = {str(name): tuple(str(p) for p in path) for name, path in data["layers"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"the module record does not read ({type(error).__name__}: {error})") from None
    known = {instance.name for instance in instances}
    by_name = {layer.name: layer for layer in model.layers}
    for name, path in paths.items():
        if not set(path) <= known or (strict and name not in by_name):
            raise ValueError(f"the module record names layer {name!r} or instances the net lacks")
        if name in by_name:
            by_name[name].module_path = path
    model.modules = {instance.name: instance for instance in instances}


def share_parameters(layer, key: str, separator: str) -> None:
    """Caffe's sharing by name (`param { name }`) for each blob of a layer
    made by a shared instance: `<key><separator><blob index>`, unless named."""
    from .weights import expected_blob_count

    count = expected_blob_count(layer) or 0
    specs = layer.spec.param
    for index in range(count):
        while len(specs) <= index:
            specs.add()
        if not specs[index].name:
            specs[index].name = f"{key}{separator}{index}"
