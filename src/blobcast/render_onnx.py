"""The ONNX part of `blobcast inspect`'s tree: what an ONNX file holds as
ONNX, and whether its graph has a Caffe form."""

from __future__ import annotations

from rich.tree import Tree

from .display import safe as escape

_LISTED_NODES = 200  # past this, nodes are summarised by op type only


def _dims(shape) -> str:
    if shape is None:
        return "(shape unknown)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _value_line(value: dict) -> str:
    return f"{escape(value['name'])} {escape(value['dtype'])} {escape(_dims(value['shape']))}"


def add_onnx_branch(root: Tree, graph: dict) -> None:
    """The ONNX facts (onnx_inspect.onnx_facts) under `root`."""
    producer = " ".join(p for p in (graph["producer"]["name"], graph["producer"]["version"]) if p)
    opsets = ", ".join(f"{escape(domain)} {version}" for domain, version in graph["opsets"].items())
    node = root.add(f"ONNX: IR version {graph['ir_version']}, opsets {opsets or 'none'}, "
                    f"producer {escape(producer) or '(none)'}")
    for label, values in (("inputs", graph["inputs"]), ("outputs", graph["outputs"])):
        branch = node.add(f"{label} ({len(values)})")
        for value in values:
            branch.add(_value_line(value))
    counts = ", ".join(f"{escape(op)} x{n}" for op, n in sorted(graph["op_counts"].items()))
    nodes = node.add(f"nodes: {len(graph['nodes'])} ({counts or 'none'})")
    if len(graph["nodes"]) <= _LISTED_NODES:
        for item in graph["nodes"]:
            extra = f" [dim]({item['subgraphs']} subgraph(s))[/dim]" if item.get("subgraphs") else ""
            nodes.add(f"[bold]{escape(item['name'] or '(unnamed)')}[/bold] "
                      f"[cyan]{escape(item['op_type'])}[/cyan] {escape(', '.join(item['inputs']))} -> "
                      f"{escape(', '.join(item['outputs']))}{extra}")
    if graph["control_flow"]:
        node.add(f"control flow: {graph['control_flow']} node(s) with subgraphs")
    inits = graph["initializers"]
    node.add(f"initializers: {inits['count']} ({inits['values']:,} values"
             + (f", {inits['external']} in external data" if inits["external"] else "") + ")")
    if graph["functions"]:
        functions = node.add(f"functions: {len(graph['functions'])}")
        for function in graph["functions"]:
            functions.add(f"{escape(function['domain'])}.{escape(function['name'])} "
                          f"({function['nodes']} nodes)")
    for index, info in enumerate(graph["training_info"]):
        node.add(f"training info #{index}: {info['initialization_nodes']} initialization node(s), "
                 f"{info['algorithm_nodes']} algorithm node(s), {info['update_bindings']} "
                 "update binding(s)")
    for key in sorted(graph["metadata"]):
        value = graph["metadata"][key]
        shown = value if len(value) <= 80 else value[:77] + "..."
        node.add(f"[dim]metadata {escape(key)}: {escape(shown)}[/dim]")


def add_caffe_form(root: Tree, caffe: dict) -> None:
    if caffe["converts"]:
        root.add(f"Caffe form: {caffe['layers']} layers")
        return
    branch = root.add(f"[yellow]no Caffe form: {len(caffe['problems'])} node(s) or problem(s)[/yellow]")
    for problem in caffe["problems"]:
        branch.add(escape(problem))


def add_rewrites(root: Tree, target: dict | None) -> None:
    """The rewrites convert --target makes for the net to fit, where any."""
    if target and target.get("rewrites"):
        branch = root.add(f"[dim]convert --target {escape(target['name'])} rewrites[/dim]")
        for rewrite in target["rewrites"]:
            branch.add(f"[dim]{escape(rewrite)}[/dim]")


def render_onnx(facts: dict) -> Tree:
    """A valid ONNX file whose graph has no Caffe form."""
    name = escape(facts["name"] or "(unnamed graph)")
    root = Tree(f"[bold]{name}[/bold] (onnx) {escape(facts['path'])}")
    add_onnx_branch(root, facts["onnx"])
    add_caffe_form(root, facts["caffe"])
    target = facts.get("target")
    if target:
        word = "[green]fits" if target["fits"] else "[red]does not fit"
        branch = root.add(f"{word} {escape(target['name'])}[/] ({escape(target['description'])})"
                          + ("" if target["fits"] else f": {len(target['problems'])} problem(s)"))
        for problem in target["problems"]:
            branch.add(escape(problem))
    return root
