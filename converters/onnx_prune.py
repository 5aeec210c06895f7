"""The part of an ONNX graph a runtime can run: nodes of unknown domains (the
custom nodes blobcast writes for layers with no ONNX form, or another tool's)
cannot run anywhere, so the forward checks run what does not depend on them
and name the outputs that do."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

# Domains onnxruntime implements; any other op runs only as a model-local function.
RUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


@dataclass
class SkippedNode:
    name: str
    type: str
    reason: str


def _unrunnable_positions(model: onnx.ModelProto) -> list[int]:
    functions = {(f.domain, f.name) for f in model.functions}
    return [i for i, node in enumerate(model.graph.node)
            if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in functions]


def unrunnable_nodes(model: onnx.ModelProto) -> list:
    return [model.graph.node[i] for i in _unrunnable_positions(model)]


def blocked_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """Graph outputs that depend on a node no runtime runs, each with the
    first such node, as "'name' (Op)"."""
    custom = set(_unrunnable_positions(model))
    if not custom:
        return {}
    blocked: dict[str, str] = {}
    for position, node in enumerate(model.graph.node):  # ONNX keeps nodes in topological order
        cause = next((blocked[name] for name in node.input if name in blocked), None)
        if cause is None and position in custom:
            cause = f"{node.name or node.output[0]!r} ({node.op_type})"
        if cause is not None:
            for name in node.output:
                blocked[name] = cause
    return {item.name: blocked[item.name] for item in model.graph.output if item.name in blocked}


def keep_outputs(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """`model` (changed in place) reduced to the nodes `outputs` need, with
    only those as graph outputs; functions no kept node calls are dropped."""
    wanted = set(outputs)
    needed = set(outputs)
    kept = []
    for node in reversed(model.graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
            needed.update(_captured(node))
    kept.reverse()
    kept_outputs = [item for item in model.graph.output if item.name in wanted]
    called = {(node.domain, node.op_type) for node in kept}
    kept_functions = [f for f in model.functions if (f.domain, f.name) in called]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.output[:]
    model.graph.output.extend(kept_outputs)
    del model.functions[:]
    model.functions.extend(kept_functions)
    return model


def _captured(node) -> set[str]:
    """Outer values that a node's subgraphs (If, Loop, Scan bodies) read."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
        for graph in graphs:
            for inner in graph.node:
                names.update(name for name in inner.input if name)
                names.update(_captured(inner))
    return names
