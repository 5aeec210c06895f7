"""Finding modules in nets written flat.

The net is cut where one blob alone carries everything on to the rest
(single-entry, single-exit regions in layer order); a run of in-place layers
joins the region before it. Regions of two or more layers that match exactly
(layer types, how their layers connect, every setting but whole numbers and
strings) are instances of one module; the whole numbers and strings that
differ between them (num_output, stride) become the module's parameters.

Names: where a region's layer names share a scope (GoogLeNet's
`inception_3a/1x1`), the instance is the scope and names are local to it;
otherwise (ResNet's `res2a_branch2a`, `bn2a_branch2a`) the part of each name
that changes from instance to instance becomes a parameter, so the modular
form flattens back to the very same names.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from .errors import BlobcastError
from .model import Model, layer_included
from .modules import ModuleInstance
from .params import Message

SEPARATORS = "/._-"
_NAMES = ("name", "bottom", "top")


def _run_layers(model: Model) -> list[int]:
    """Indices of the layers the deploy net runs: Caffe's TEST phase without
    data, loss and accuracy layers (a training net's labels, read by its last
    layer, would otherwise be live everywhere and cut nothing)."""
    from .engine import Net

    try:
        net = Net(model, skip_unrunnable=True)
    except BlobcastError:  # not runnable as it is: the TEST phase's layers
        return [i for i, layer in enumerate(model.layers) if layer_included(layer, "TEST")]
    running = {id(layer) for layer in net.layers + net.unrun}
    return [i for i, layer in enumerate(model.layers) if id(layer) in running]


def _last_uses(model: Model, chosen: list[int]) -> dict[str, int]:
    last_use: dict[str, int] = {}
    for i in chosen:
        for blob in model.layers[i].bottoms:
            last_use[blob] = i
    return last_use


def _segments(model: Model, chosen: list[int], last_use: dict[str, int]) -> list[list[int]]:
    """Runs of the `chosen` layers between single-blob cuts, in-place runs
    joined to their producer. Side branches of a training net (GoogLeNet's
    auxiliary classifiers) become runs of their own, between the blocks."""
    layers = model.layers
    live: set[str] = set()  # blobs made so far that a later layer still reads
    segments, current = [], []
    for i in chosen:
        layer = layers[i]
        current.append(i)
        live.difference_update(b for b in layer.bottoms if last_use.get(b) == i)
        live.update(t for t in layer.tops if last_use.get(t, -1) > i)
        if len(live) <= 1:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    joined: list[list[int]] = []
    for segment in segments:
        in_place = all(set(layers[i].tops) <= set(layers[i].bottoms) and layers[i].tops
                       for i in segment)
        if joined and in_place:
            joined[-1] += segment
        else:
            joined.append(segment)
    return joined


def _leaves(message: Message, prefix: tuple = ()):
    """(path, kind, value) for every scalar setting of a message, names left out."""
    for name in message.present_fields():
        if not prefix and name in _NAMES:
            continue
        kind = message.field_spec(name)[1]
        value = getattr(message, name)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Message):
                    yield from _leaves(item, prefix + (name, index))
                else:
                    yield prefix + (name, index), kind, item
        elif isinstance(value, Message):
            yield prefix + (name,), "message", None
            yield from _leaves(value, prefix + (name,))
        else:
            yield prefix + (name,), kind, value


PARAMETER_KINDS = ("int32", "uint32", "int64", "uint64", "string")


@dataclass
class Region:
    layers: list[int]
    inputs: list[str]
    outputs: list[str]
    signature: tuple = ()
    leaves: list[dict] = field(default_factory=list)


def _region(model: Model, indices: list[int], consumed_later: dict[str, int]) -> Region:
    layers = [model.layers[i] for i in indices]
    made: dict[str, tuple[int, int]] = {}
    inputs: list[str] = []
    wiring = []
    for position, layer in enumerate(layers):
        refs = []
        for bottom in layer.bottoms:
            if bottom in made:
                refs.append(("local",) + made[bottom])
            else:
                if bottom not in inputs:
                    inputs.append(bottom)
                refs.append(("input", inputs.index(bottom)))
        tops = []
        for t, top in enumerate(layer.tops):
            tops.append(("same", refs[layer.bottoms.index(top)]) if top in layer.bottoms else "new")
            made[top] = (position, t)
        wiring.append((layer.type, tuple(refs), tuple(tops)))
    end = indices[-1]
    outputs = [blob for blob in dict.fromkeys(t for layer in layers for t in layer.tops)
               if consumed_later.get(blob, -1) > end or blob not in consumed_later]
    leaves = [{path: (kind, value) for path, kind, value in _leaves(layer.spec)} for layer in layers]
    structural = tuple(tuple(sorted((path, kind, None if kind in PARAMETER_KINDS else value)
                                    for path, (kind, value) in leaf.items())) for leaf in leaves)
    return Region(indices, inputs, outputs, (tuple(wiring), structural, len(inputs), len(outputs)),
                  leaves)


def find_repeats(model: Model) -> list[list[Region]]:
    """Groups of two or more regions that are one module, in first-use order."""
    chosen = _run_layers(model)
    last_use = _last_uses(model, chosen)
    groups: dict[tuple, list[Region]] = defaultdict(list)
    for indices in _segments(model, chosen, last_use):
        if len(indices) < 2 or any(model.layers[i].type in ("Input",) or not model.layers[i].bottoms
                                   for i in indices):
            continue
        region = _region(model, indices, last_use)
        groups[region.signature].append(region)
    return [regions for regions in groups.values() if len(regions) >= 2]


def _scope(names: list[str]) -> tuple[str, str] | None:
    """(scope, separator) when every name is `<scope><sep><rest>`."""
    prefix = os.path.commonprefix(names)
    for cut in range(len(prefix), 0, -1):
        if prefix[cut - 1] in SEPARATORS and cut > 1:
            scope, sep = prefix[:cut - 1], prefix[cut - 1]
            if all(name.startswith(scope + sep) and len(name) > cut for name in names):
                return scope, sep
    return None


def _varying(values: list[str]) -> tuple[str, list[str], str]:
    """(common prefix, the middles, common suffix) of names that differ."""
    prefix = os.path.commonprefix(values)
    reversed_rest = [v[len(prefix):][::-1] for v in values]
    suffix = os.path.commonprefix(reversed_rest)[::-1]
    middles = [v[len(prefix):len(v) - len(suffix)] for v in values]
    return prefix, middles, suffix


@dataclass
class FoundModule:
    name: str
    regions: list[Region]
    instance_names: list[str]
    separator: str | None               # scoped names: "<instance><sep><local>"
    params: dict[str, list[str]]        # parameter -> value per instance
    settings: dict[tuple, str]          # (layer position, path) -> parameter
    names: dict[tuple, str]             # (position, "name"|("top", t)|("bottom", b)) -> local or template


def describe(model: Model, regions: list[Region], taken: set[str]) -> FoundModule:
    """Names, parameters and local names for one group of matching regions."""
    count = len(regions[0].layers)
    instance_names, separator, scoped = [], None, True
    for region in regions:
        scope = _scope([model.layers[i].name for i in region.layers])
        if scope is None:
            scoped = False
            break
        instance_names.append(scope[0])
        separator = scope[1]
    params: dict[str, list[str]] = {}
    names: dict[tuple, str] = {}
    if not scoped or len(set(instance_names)) != len(regions):
        scoped, separator = False, None
        instance_names = [region.outputs[-1] if region.outputs else model.layers[region.layers[-1]].name
                          for region in regions]
    for position in range(count):
        layer0 = model.layers[regions[0].layers[position]]
        keys = [("name",)] + [("top", t) for t in range(len(layer0.tops))] + \
            [("bottom", b) for b in range(len(layer0.bottoms))]
        for key in keys:
            values = []
            for region in regions:
                layer = model.layers[region.layers[position]]
                values.append(layer.name if key == ("name",) else
                              (layer.tops if key[0] == "top" else layer.bottoms)[key[1]])
            if key[0] == "bottom" and values[0] in regions[0].inputs:
                continue  # bound to the instance's bottoms
            names[(position,) + key] = _local_name(values, instance_names, separator, params)
    for position in range(count):
        for path, (kind, _value) in regions[0].leaves[position].items():
            if kind not in PARAMETER_KINDS:
                continue
            values = [region.leaves[position][path][1] for region in regions]
            if len(set(map(str, values))) > 1:
                local = names[(position, "name")]
                fields = [str(p) for p in path if not isinstance(p, int)]
                index = [str(p) for p in path[-1:] if isinstance(p, int) and p > 0]
                name = "_".join([_identifier(re.sub(r"\$\{[^}]*\}", "", local)), fields[-1]] + index)
                while name in params:
                    name += "_"
                params[name] = [str(v) for v in values]
                names[(position, "setting") + path] = name
    module_name = _module_name(instance_names, taken)
    return FoundModule(module_name, regions, instance_names, separator, params,
                       {(k[0],) + k[2:]: v for k, v in names.items() if k[1] == "setting"},
                       {k: v for k, v in names.items() if k[1] != "setting"})


def _identifier(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in text).strip("_") or "layer"
    return ("p_" + cleaned) if cleaned[0].isdigit() else cleaned


def _local_name(values: list[str], instances: list[str], separator: str | None,
                params: dict[str, list[str]]) -> str:
    """The name inside the module: local to the scope, a template, or a parameter."""
    if separator is not None and all(v.startswith(i + separator) for v, i in zip(values, instances)):
        return values[0][len(instances[0]) + len(separator):]
    if len(set(values)) == 1:
        return values[0]
    prefix, middles, suffix = _varying(values)
    key = "id"
    if params.get(key, middles) == middles and all(middles):
        params[key] = middles
        return f"{prefix}${{{key}}}{suffix}"
    name = f"name_{len(params)}"
    params[name] = values
    return f"${{{name}}}"


def _module_name(instances: list[str], taken: set[str]) -> str:
    prefix = os.path.commonprefix(instances).rstrip("0123456789" + SEPARATORS) or "block"
    base = "".join(part.capitalize() for part in prefix.replace("-", "_").split("_") if part) or "Block"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}{number}", number + 1
    taken.add(name)
    return name


def discover_modules(model: Model) -> list[FoundModule]:
    """Find repeated blocks and record them as module instances on the model."""
    found, taken = [], set()
    instances = []  # (first layer index, instance)
    for regions in find_repeats(model):
        module = describe(model, regions, taken)
        found.append(module)
        for index, (name, region) in enumerate(zip(module.instance_names, regions)):
            params = {p: values[index] for p, values in module.params.items()}
            instances.append((region.layers[0], ModuleInstance(
                name, module.name, params, list(region.inputs), list(region.outputs))))
            for i in region.layers:
                model.layers[i].module_path = (name,)
    model.modules.update((instance.name, instance) for _, instance in sorted(
        instances, key=lambda item: item[0]))  # in net order
    return found
