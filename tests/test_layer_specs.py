"""One home per layer type: what the specs declare is consistent and used."""

import numpy as np
import pytest

import blobcast
from blobcast.layers import LAYER_TYPES, SPECS, LayerOp, register, spec_for
from blobcast.schema import MESSAGES

from .conftest import CAFFE


def test_a_type_is_registered_once():
    with pytest.raises(RuntimeError, match="'ReLU' is registered twice"):
        register("ReLU")(type("AnotherReLU", (LayerOp,), {}))


def test_every_settings_field_exists_in_the_schema():
    fields = MESSAGES["LayerParameter"]
    for name, kind in SPECS.items():
        if kind.settings is not None:
            assert kind.settings in fields, (name, kind.settings)
        assert kind.role in ("compute", "input", "data", "loss"), name


def test_the_engine_runs_exactly_the_runnable_specs():
    assert set(LAYER_TYPES) == {name for name, kind in SPECS.items() if kind.runnable}
    assert spec_for("SoftmaxWithLoss").role == "loss" and spec_for("Data").role == "data"
    assert spec_for("BatchNorm").statistics and spec_for("BatchNorm").blobs == 3


def test_shape_rules_cover_every_type_the_zoo_runs():
    # Each type's top shapes, from its bottoms' shapes alone, equal the shapes
    # its forward pass gives, layer by layer over the 69-layer zoo net.
    from blobcast.engine import Net

    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    real = Net(model).forward({"data": np.zeros((2, 4, 17, 17), np.float32)}, keep_all=True)
    checked = set()
    for layer in model.layers:
        if layer.type == "Input":
            continue
        op = LAYER_TYPES[layer.type](layer, np, [], "TEST")
        predicted = op.top_shapes([real[b].shape for b in layer.bottoms])
        assert predicted == [real[t].shape for t in layer.tops], layer.name
        checked.add(layer.type)
    assert set(LAYER_TYPES) - checked <= {"Silence"}  # Silence has no tops


def test_the_module_graph_has_no_cycle():
    # Every import, module level or inside a function, between blobcast's own
    # modules: a cycle means two modules that cannot be understood apart.
    import ast
    import sys

    from .conftest import ROOT

    files = {}
    converters = ROOT / "converters"
    for path in list((ROOT / "src" / "blobcast").rglob("*.py")) + list(converters.rglob("*.py")):
        parts = (("blobcast", "converters") + path.relative_to(converters).with_suffix("").parts
                 if converters in path.parents else path.relative_to(ROOT / "src").with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path

    def targets(module, node):
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        package = module.split(".") if files[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join((package[:len(package) - node.level + 1] if node.level else [])
                        + ([node.module] if node.module else []))
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                for alias in node.names]

    graph = {module: set() for module in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in targets(module, node):
                    while target and target not in files:
                        target = target.rpartition(".")[0]
                    if target and target not in (module, "blobcast"):
                        graph[module].add(target)
    state, path_stack, cycles = {}, [], []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(module):
        state[module] = "open"
        path_stack.append(module)
        for target in graph[module]:
            if state.get(target) == "open":
                cycles.append(path_stack[path_stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        path_stack.pop()
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module)
    assert cycles == []
    assert "blobcast.verify" not in graph["blobcast.api"]


# Types the engine runs that ONNX export writes as custom-domain nodes.
EXPORTED_AS_CUSTOM_NODES: set[str] = set()


def test_every_type_the_engine_runs_exports_to_onnx():
    from blobcast.converters.onnx_ops import EXPORTERS, IMPORTERS, exporter

    assert set(LAYER_TYPES) - set(EXPORTERS) == EXPORTED_AS_CUSTOM_NODES
    assert set(EXPORTERS) <= set(SPECS)  # exporters only for types blobcast knows
    assert {"Conv", "MaxPool", "Gemm", "BatchNormalization", "Concat", "Resize"} <= set(IMPORTERS)
    with pytest.raises(RuntimeError, match="registered twice"):
        exporter("Convolution")(lambda *args: None)


def test_the_readme_lists_every_type_the_engine_runs():
    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    listing = readme[readme.index("Layer types: Input"):readme.index("An unknown type is an error")]
    assert {name for name in LAYER_TYPES if name not in listing} == set()


def test_bottom_and_top_counts_are_checked_as_caffe_does():
    from blobcast.converters.prototxt import net_from_text
    from blobcast.engine import Net

    text = ('layer { name: "data" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "sum" type: "Eltwise" bottom: "a" top: "b" }')
    expected = r"layer 'sum' \(Eltwise\) takes at least 2 bottoms, not 1"
    with pytest.raises(blobcast.BlobcastError, match=expected):
        Net(net_from_text(text, "<net>"))
    assert spec_for("Crop").arity_problem(net_from_text(text, "<net>")["sum"]) == "takes 2 bottoms, not 1"
