"""Module instances as ONNX model-local functions, and back.

Each top-level instance of a net's modules (blobcast.modules) is written as
one call node of a function in MODULE_DOMAIN whose body is the nodes its
layers export to. Weights are the function's inputs, so a weight shared
between instances stays one initializer. Bodies are written with canonical
value names (in0.., out0.., v0..), so instances that compute the same way
call one function; the call node's `names` attribute keeps the names the
values had, so importing the model inlines the calls back to the flat graph
blobcast would have written without modules.
"""

from __future__ import annotations

import json

from onnx import NodeProto, helper

from blobcast.limits import check_allocation

MODULE_DOMAIN = "ai.blobcast.module"
NAMES_ATTRIBUTE = "names"  # JSON {canonical: original} for the body's values and nodes
MAX_INLINED_NODES = 200_000  # as many as a modular net may flatten to
INLINED_NODE_BYTES = 2560    # what one inlined node costs in memory, its names aside (measured)


def module_spans(layers, exportable) -> dict[int, tuple[str, int]]:
    """{first layer index: (instance, last layer index)} for each top-level
    instance whose layers are consecutive and all `exportable`."""
    spans: dict[str, list[int]] = {}
    for index, layer in enumerate(layers):
        if layer.module_path:
            spans.setdefault(layer.module_path[0], []).append(index)
    plan = {}
    for instance, indices in spans.items():
        consecutive = indices == list(range(indices[0], indices[-1] + 1))
        if consecutive and all(exportable(layers[i]) for i in indices):
            plan[indices[0]] = (instance, indices[-1])
    return plan


def _canonical(body: list, inputs: list[str], outputs: list[str]):
    """The body with canonical value and node names, and {canonical: original}."""
    names = {name: f"in{k}" for k, name in enumerate(inputs)}
    names.update({name: f"out{k}" for k, name in enumerate(outputs)})
    original = {canonical: name for name, canonical in names.items()}
    renamed = []
    for index, node in enumerate(body):
        copy = NodeProto()
        copy.CopyFrom(node)
        for field in (copy.input, copy.output):
            for position, value in enumerate(field):
                if not value:
                    continue
                if value not in names:
                    names[value] = f"v{len(original)}"
                    original[names[value]] = value
                field[position] = names[value]
        for attribute in copy.attribute:  # a constant's tensor is named after its layer
            if attribute.HasField("t"):
                attribute.t.name = ""
        original[f"n{index}"] = node.name
        copy.name = f"n{index}"
        renamed.append(copy)
    return renamed, original


def module_call(builder, instance, body: list, later_reads: set[str], graph_outputs: set[str]):
    """Wrap an instance's nodes in a function (one per distinct body) and
    return its call node."""
    produced = [out for node in body for out in node.output if out]
    made = set(produced)
    inputs: list[str] = []
    for node in body:
        for value in node.input:
            if value and value not in made and value not in inputs:
                inputs.append(value)
    outputs = [value for value in dict.fromkeys(produced)
               if value in later_reads or value in graph_outputs]
    renamed, original = _canonical(body, inputs, outputs)
    formal_in = [f"in{k}" for k in range(len(inputs))]
    formal_out = [f"out{k}" for k in range(len(outputs))]
    domains = {node.domain for node in renamed if node.domain}
    opsets = [helper.make_opsetid("", builder.opset)] + [helper.make_opsetid(d, 1) for d in sorted(domains)]
    key = b"".join(node.SerializeToString() for node in renamed) + repr((formal_in, formal_out)).encode()
    name = builder.module_functions.get(key)
    if name is None:
        taken = {f.name for f in builder.functions if f.domain == MODULE_DOMAIN}
        name, number = instance.module, 2
        while name in taken:
            name, number = f"{instance.module}_{number}", number + 1
        builder.functions.append(helper.make_function(
            MODULE_DOMAIN, name, formal_in, formal_out, renamed, opsets,
            attributes=[NAMES_ATTRIBUTE],
            doc_string=f"Caffe module {instance.module}: the layers of one of its instances"))
        builder.module_functions[key] = name
    return helper.make_node(name, inputs, outputs, name=instance.name, domain=MODULE_DOMAIN,
                            **{NAMES_ATTRIBUTE: json.dumps(original)})


def _call_names(node) -> dict:
    raw = next((a.s for a in node.attribute if a.name == NAMES_ATTRIBUTE), b"{}")
    try:
        original = json.loads(raw)
        if not isinstance(original, dict):
            raise ValueError("not an object")
    except ValueError as error:
        raise ValueError(f"module call {node.name!r}: its names do not read ({error})") from None
    return original


def _body_costs(function) -> tuple[int, int, int]:
    """(bytes of the body's nodes, name slots, longest local name) of a function."""
    slots = [value for inner in function.node for value in (*inner.input, *inner.output, inner.name)]
    return sum(inner.ByteSize() for inner in function.node), len(slots), max(map(len, slots), default=0)


def _check_inlined_size(calls: list, functions: dict, path: str | None) -> None:
    """Size the flat graph before building it: nodes, and bytes with every
    name at its longest (a call's own name prefixes each of its body's names)."""
    nodes = sum(len(functions[(node.domain, node.op_type)].node) for node, _ in calls)
    if nodes > MAX_INLINED_NODES:  # a small file may call a big body often
        raise ValueError(f"inlining its module calls would make {nodes} nodes, over {MAX_INLINED_NODES}")
    costs = {key: _body_costs(function) for key, function in functions.items()}
    total = 0
    for node, original in calls:
        body_bytes, slots, local = costs[(node.domain, node.op_type)]
        longest = max(len(node.name) + 1 + local, *map(len, map(str, original.values())),
                      *map(len, (*node.input, *node.output)), 0)
        total += body_bytes + slots * longest
    check_allocation(nodes * INLINED_NODE_BYTES + total,
                     f"inlining the module calls ({nodes} nodes)", path)


def inline_module_calls(model, path: str | None = None) -> None:
    """Replace, in place, every module call by its body under the names it
    had (the flat graph), and drop the module functions."""
    functions = {(f.domain, f.name): f for f in model.functions if f.domain == MODULE_DOMAIN}
    if not functions:
        return
    calls = [(node, _call_names(node)) for node in model.graph.node
             if (node.domain, node.op_type) in functions]
    _check_inlined_size(calls, functions, path)
    names_of = iter(original for _, original in calls)  # in the graph's order
    nodes = []
    for node in model.graph.node:
        function = functions.get((node.domain, node.op_type))
        if function is None:
            nodes.append(node)
            continue
        original = next(names_of)
        mapping = dict(zip(function.input, node.input)) | dict(zip(function.output, node.output))
        for inner in function.node:
            copy = NodeProto()
            copy.CopyFrom(inner)
            for field in (copy.input, copy.output):
                for position, value in enumerate(field):
                    if value:
                        field[position] = mapping.get(value) or str(
                            original.get(value, f"{node.name}/{value}"))
            copy.name = str(original.get(inner.name, f"{node.name}/{inner.name}"))
            nodes.append(copy)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [f for f in model.functions if f.domain != MODULE_DOMAIN]
    del model.functions[:]
    model.functions.extend(kept)
    imports = [o for o in model.opset_import if o.domain != MODULE_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
