"""One home per layer type: what the specs declare is consistent and used."""

import numpy as np
import pytest

import blobcast
from blobcast.layers import LAYER_TYPES, SPECS, LayerOp, register, spec_for
from blobcast.schema import MESSAGES

from ...conftest import CAFFE


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
        # and the blobs Caffe made for the layer have the shapes the type gives them
        blobs = op.blob_shapes([real[b].shape for b in layer.bottoms])
        assert blobs == [blob.shape for blob in layer.blobs], layer.name
        assert len(op.blob_fillers()) == len(blobs) == (type(op).blob_count(layer) or 0), layer.name
        checked.add(layer.type)
    # the fork types (an origin in the registry) are checked in their families' tests
    forks = {name for name, kind in LAYER_TYPES.items() if fork_of(name, kind)}
    assert set(LAYER_TYPES) - checked - forks <= {"Silence"}  # Silence has no tops


def fork_of(type_name: str, kind) -> str | None:
    """The fork a registered type comes from, None for BVLC Caffe's."""
    return kind.origin.get(type_name) if isinstance(kind.origin, dict) else kind.origin


def _own_modules() -> dict:
    """blobcast's modules by dotted name -> their file."""
    from ...conftest import ROOT

    files = {}
    converters = ROOT / "converters"
    for path in list((ROOT / "src" / "blobcast").rglob("*.py")) + list(converters.rglob("*.py")):
        parts = (("blobcast", "converters") + path.relative_to(converters).with_suffix("").parts
                 if converters in path.parents else path.relative_to(ROOT / "src").with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _import_graph(files: dict) -> dict:
    """Every import, module level or inside a function, between those modules."""
    import ast

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
        imports = [node for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.Import, ast.ImportFrom))]
        for target in (target for node in imports for target in targets(module, node)):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target not in (module, "blobcast"):
                graph[module].add(target)
    return graph


def test_the_module_graph_has_no_cycle():
    # A cycle means two modules that cannot be understood apart.
    import sys

    graph = _import_graph(_own_modules())
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
    assert "blobcast.check.verify" not in graph["blobcast.api"]


def test_every_type_the_engine_runs_exports_to_onnx():
    from blobcast.converters.onnx_ops import EXPORTERS, IMPORTERS, exporter

    assert set(LAYER_TYPES) - set(EXPORTERS) == set()
    assert set(EXPORTERS) <= set(SPECS)  # exporters only for types blobcast knows
    assert {"Conv", "MaxPool", "Gemm", "BatchNormalization", "Concat", "Resize"} <= set(IMPORTERS)
    with pytest.raises(RuntimeError, match="registered twice"):
        exporter("Convolution")(lambda *args: None)


def test_the_layer_reference_describes_every_type_the_engine_runs():
    # The reference is generated from the registry (test_layer_reference.py
    # keeps it current); the engine page's prose points to it.
    from ...conftest import ROOT

    page = (ROOT / "docs" / "layers.md").read_text()
    assert {name for name in LAYER_TYPES if f"| `{name}` |" not in page} == set()
    rows = {line.split(" | ")[0].strip("|` ") for line in page.splitlines() if " | runs | " in line}
    assert rows == set(LAYER_TYPES)
    assert "[layer reference](layers.md)" in (ROOT / "docs" / "engine.md").read_text()


def test_bottom_and_top_counts_are_checked_as_caffe_does():
    from blobcast.converters.prototxt import net_from_text
    from blobcast.engine import Net

    text = ('layer { name: "data" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "sum" type: "Eltwise" bottom: "a" top: "b" }')
    expected = r"layer 'sum' \(Eltwise\) takes at least 2 bottoms, not 1"
    with pytest.raises(blobcast.BlobcastError, match=expected):
        Net(net_from_text(text, "<net>"))
    assert spec_for("Crop").arity_problem(net_from_text(text, "<net>")["sum"]) == "takes 2 bottoms, not 1"


PSP_HEAD = '''name: "psp_head"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "conv_interp" type: "Interp" bottom: "conv" top: "conv_interp"
        interp_param { height: 65 width: 33 } }
layer { name: "zoom" type: "Interp" bottom: "conv" top: "zoom" interp_param { zoom_factor: 8 } }
'''


def test_an_interp_layers_field_143_is_its_interp_settings(tmp_path):
    # PSPNet and DeepLab number interp_param 143, upstream's input_param: an
    # Interp layer's field 143 is read as its interp settings, by type.
    from typer.testing import CliRunner

    from blobcast.cli import app
    from blobcast.converters import caffe_pb2 as pb

    text = tmp_path / "psp.prototxt"
    text.write_text(PSP_HEAD)
    shown = CliRunner().invoke(app, ["inspect", str(text)])
    assert "conv_interp Interp conv -> conv_interp height=65, width=33" in shown.stdout
    assert "zoom Interp conv -> zoom zoom_factor=8" in shown.stdout
    model = blobcast.load(text)
    model["conv"].blobs = [blobcast.Blob(np.ones((4, 3, 3, 3), np.float32)),
                           blobcast.Blob(np.zeros(4, np.float32))]
    binary = tmp_path / "psp.caffemodel"
    blobcast.save(model, binary)
    # The bytes are the fork's: field 143 holds an InterpParameter.
    layer = pb.NetParameter.FromString(binary.read_bytes()).layer[2]
    assert pb.InterpParameter.FromString(layer.input_param.SerializeToString()) == \
        pb.InterpParameter(height=65, width=33)
    for suffix in (".caffemodel.h5", ".prototxt"):
        assert blobcast.convert(binary, tmp_path / ("again" + suffix), forward_check=False)
    blobcast.convert(tmp_path / "again.caffemodel.h5", tmp_path / "again.caffemodel", forward_check=False)
    assert (tmp_path / "again.caffemodel").read_bytes() == binary.read_bytes()
    assert "interp_param {\n    height: 65\n    width: 33\n  }" in (tmp_path / "again.prototxt").read_text()
    assert blobcast.load(binary)["zoom"].type_params.zoom_factor == 8


def test_every_layer_the_importer_makes_exports_again():
    # The Caffe types ONNX import writes (the second argument of im.layer, of
    # the unary factory, or the Scale/Bias choice) all have exporters.
    import re

    from blobcast.converters.onnx_ops import EXPORTERS

    from ...conftest import ROOT

    made = set()
    for path in (ROOT / "converters" / "onnx_ops").glob("*.py"):
        text = path.read_text()
        made |= set(re.findall(r'im\.layer\(node, "(\w+)"', text))
        made |= set(re.findall(r'_unary\("(\w+)"', text))
        made |= set(re.findall(r'kind = "(\w+)" if op in \(.*\) else "(\w+)"', text) and
                    re.findall(r'kind = "(\w+)" if op in \(.*\) else "(\w+)"', text)[0])
    assert {"Convolution", "Pooling", "InnerProduct", "Scale", "Bias", "Eltwise"} <= made
    assert made - set(EXPORTERS) - {"Input"} == set()


def test_shape_inference_without_weights_matches_a_real_pass():
    from blobcast.engine import Net
    from blobcast.shapes import blob_shapes

    from ...conftest import CAFFE

    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    _, shapes = blob_shapes(model)
    real = Net(model).forward({"data": np.zeros((2, 4, 17, 17), np.float32)}, keep_all=True)
    assert shapes == {name: value.shape for name, value in real.items()}
