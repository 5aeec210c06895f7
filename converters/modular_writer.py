"""Writing a flat net in modular form (modular.py's syntax): the blocks
module_discovery found, each defined once and instantiated where it occurs."""

from __future__ import annotations

from blobcast.errors import FormatError
from blobcast.model import Layer, Model

from .prototxt import architecture_text

_SENTINEL = 1_999_990_000  # a whole number no real setting holds, replaced by ${param} in the text


def modular_text(model: Model, found: list) -> str:
    """The modular form of a flat net whose repeated blocks are `found`
    (module_discovery.discover_modules): module definitions, then the net with
    one instance layer per block. Flattening it gives the net back."""
    separators = {module.separator for module in found if module.separator}
    separator = separators.pop() if len(separators) == 1 else None
    parts = [f'module_separator: "{separator}"'] if separator else []
    instance_at: dict[int, tuple] = {}
    for module in found:
        if module.separator and module.separator != separator:
            raise FormatError(f"the blocks use more than one name separator ({module.separator!r}, "
                              f"{separator!r}); the modular form takes one")
        parts.append(_module_text(model, module))
        for index, (name, region) in enumerate(zip(module.instance_names, module.regions)):
            instance_at[region.layers[0]] = (module, index, name, region)
    net = architecture_text(Model(net=model.net, layers=[]))
    body = [net.rstrip()] if net.strip() else []
    skip: set[int] = set()
    for i, layer in enumerate(model.layers):
        if i in skip:
            continue
        if i in instance_at:
            module, index, name, region = instance_at[i]
            skip.update(region.layers)
            body.append(_instance_text(module, index, name, region))
        else:
            body.append(architecture_text(Model(layers=[layer])).rstrip())
    return "\n".join(parts + body) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _module_text(model: Model, module) -> str:
    region = module.regions[0]
    inputs = [f"input{k}" if k else "input" for k in range(len(region.inputs))]
    lines = [f"  name: {_quoted(module.name)}"]
    lines += [f"  input: {_quoted(name)}" for name in inputs]
    producers = {}
    for position, index in enumerate(region.layers):
        for t, top in enumerate(model.layers[index].tops):
            producers[top] = module.names[(position, "top", t)]
    lines += [f"  output: {_quoted(producers[name])}" for name in region.outputs]
    lines += [f"  param {{ name: {_quoted(p)} }}" for p in module.params]
    replacements = {}
    for position, index in enumerate(region.layers):
        original = model.layers[index]
        layer = Layer(spec=original.spec.copy())
        layer.name = module.names[(position, "name")]
        layer.spec.top = [module.names[(position, "top", t)] for t in range(len(original.tops))]
        layer.spec.bottom = [inputs[region.inputs.index(b)] if b in region.inputs
                             else module.names[(position, "bottom", k)]
                             for k, b in enumerate(original.bottoms)]
        for (where, *path), param in module.settings.items():
            if where != position:
                continue
            sentinel = _SENTINEL + len(replacements)
            is_text = isinstance(_leaf(layer.spec, path), str)
            _set_leaf(layer.spec, path, f"__blobcast_{sentinel}__" if is_text else sentinel)
            if is_text:
                replacements[f'"__blobcast_{sentinel}__"'] = f'"${{{param}}}"'
            else:
                replacements[str(sentinel)] = f"${{{param}}}"
        text = architecture_text(Model(layers=[layer]))
        for old, new in replacements.items():
            text = text.replace(old, new)
        lines += ["  " + line for line in text.rstrip().splitlines()]
    return "module {\n" + "\n".join(lines) + "\n}"


def _holder(message, path):
    for step in path[:-1]:
        message = message[step] if isinstance(step, int) else getattr(message, step)
    return message


def _leaf(message, path):
    holder = _holder(message, path)
    return holder[path[-1]] if isinstance(path[-1], int) else getattr(holder, path[-1])


def _set_leaf(message, path, value) -> None:
    holder = _holder(message, path)
    if isinstance(path[-1], int):
        holder[path[-1]] = value
    else:
        setattr(holder, path[-1], value)


def _instance_text(module, index: int, name: str, region) -> str:
    fields = [f"name: {_quoted(name)}", f"module: {_quoted(module.name)}"]
    fields += [f"bottom: {_quoted(b)}" for b in region.inputs]
    fields += [f"top: {_quoted(t)}" for t in region.outputs]
    fields += [f"module_param {{ key: {_quoted(p)} value: {_quoted(values[index])} }}"
               for p, values in module.params.items()]
    return "layer {\n  " + "\n  ".join(fields) + "\n}"
