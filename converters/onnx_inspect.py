"""What an ONNX file holds, read as ONNX: any valid model, whether or not
its graph has a Caffe form (as Netron and Polygraphy show a model).

Only the graph's structure is parsed (map_onnx leaves tensor values in the
file): shapes and types come from the declarations, never from the data.
"""

from __future__ import annotations

from collections import Counter

from onnx import AttributeProto, TensorProto

from .onnx_format import map_onnx

_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def _type_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type {data_type}"


def _dims(shape) -> list:
    """Each dimension as its number, its symbolic name, or None where unnamed."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _value_facts(value) -> dict:
    kind = value.type.WhichOneof("value")
    facts = {"name": value.name}
    if kind == "tensor_type":
        tensor = value.type.tensor_type
        facts["dtype"] = _type_name(tensor.elem_type)
        facts["shape"] = _dims(tensor.shape) if tensor.HasField("shape") else None
    else:
        facts["dtype"] = kind or "unknown"
        facts["shape"] = None
    return facts


def _subgraphs(node) -> int:
    return sum(1 if a.type == AttributeProto.GRAPH else len(a.graphs) for a in node.attribute
               if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS))


def _node_facts(node) -> dict:
    facts = {"name": node.name, "op_type": node.op_type, "domain": node.domain or "ai.onnx",
             "inputs": list(node.input), "outputs": list(node.output)}
    graphs = _subgraphs(node)
    if graphs:
        facts["subgraphs"] = graphs
    return facts


def _initializer_facts(graph, raw: dict) -> dict:
    entries, parameters, stored, external = [], 0, 0, 0
    for tensor in graph.initializer:
        count = 1
        for d in tensor.dims:
            count *= max(int(d), 0)
        where = "external" if tensor.data_location == TensorProto.EXTERNAL else "inline"
        external += where == "external"
        span = raw.get(tensor.name)
        nbytes = span[1] - span[0] if span else None
        parameters += count
        stored += nbytes or 0
        entries.append({"name": tensor.name, "dtype": _type_name(tensor.data_type),
                        "shape": [int(d) for d in tensor.dims], "stored": where,
                        **({"bytes": nbytes} if nbytes is not None else {})})
    return {"count": len(entries), "values": parameters, "inline_raw_bytes": stored,
            "external": external, "tensors": entries}


def _training_facts(model) -> list:
    return [{"initialization_nodes": len(info.initialization.node),
             "algorithm_nodes": len(info.algorithm.node),
             "algorithm_initializers": len(info.algorithm.initializer),
             "update_bindings": len(info.update_binding),
             "initialization_bindings": len(info.initialization_binding)}
            for info in model.training_info]


def onnx_facts(path: str) -> dict:
    """The model as ONNX: IR version, opsets, producer, inputs and outputs
    with shapes, nodes, initializers, functions and training info."""
    model, raw, buf = map_onnx(path)  # refuses what is not valid ONNX
    try:
        graph = model.graph
        initializer_names = {t.name for t in graph.initializer}
        nodes = [_node_facts(node) for node in graph.node]
        return {
            "ir_version": model.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "producer": {"name": model.producer_name, "version": model.producer_version},
            "domain": model.domain, "model_version": model.model_version,
            "graph_name": graph.name,
            "metadata": {p.key: p.value for p in model.metadata_props},
            "inputs": [_value_facts(v) for v in graph.input if v.name not in initializer_names],
            "outputs": [_value_facts(v) for v in graph.output],
            "nodes": nodes,
            "op_counts": dict(Counter(f"{n['op_type']}" if n["domain"] == "ai.onnx"
                                      else f"{n['domain']}.{n['op_type']}" for n in nodes)),
            "control_flow": sum(1 for n in graph.node if n.op_type in _SUBGRAPH_OPS
                                or _subgraphs(n)),
            "initializers": _initializer_facts(graph, raw),
            "functions": [{"domain": f.domain, "name": f.name, "nodes": len(f.node),
                           "inputs": list(f.input), "outputs": list(f.output)}
                          for f in model.functions],
            "training_info": _training_facts(model),
        }
    finally:
        buf.close()
