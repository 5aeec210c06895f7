"""Nets built from modules: a GoogLeNet written with one Inception module
flattens to BVLC's flat layers, runs the same in the engine and OpenCV, keeps
its module tree through .caffemodel.h5 and ONNX; blocks are found in flat
GoogLeNet and ResNet-50 nets; errors are one line."""

import json
import warnings

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.api import modularize
from blobcast.cli import app
from blobcast.engine import Net
from blobcast.fillers import random_weights
from blobcast.module_discovery import discover_modules
from blobcast.shapes import blob_shapes

from ..conftest import ROOT
from ..module_nets import googlenet_flat, googlenet_modular, resnet50_flat


def _with_weights(model, seed=0):
    _, shapes = blob_shapes(model)
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if layer.type != "Input":
            layer.blobs = [blobcast.Blob(w.astype(np.float32))
                           for w in random_weights(layer, [shapes[b] for b in layer.bottoms], rng)]
    return model


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_modular_googlenet_flattens_to_bvlcs_flat_layers(tmp_path):
    modular = blobcast.load(_write(tmp_path, "g.prototxt", googlenet_modular()))
    flat = blobcast.load(_write(tmp_path, "flat.prototxt", googlenet_flat()))
    assert [layer.spec.to_dict() for layer in modular.layers] == [layer.spec.to_dict() for layer in flat.layers]
    assert modular.net.to_dict() == flat.net.to_dict()
    assert len(modular.layers) == 140 and len(modular.modules) == 9
    assert modular["inception_4e/3x3"].module_path == ("inception_4e",)
    assert modular.modules["inception_4e"].params["n3x3"] == "40"
    # written as a plain prototxt: BVLC's layers, nothing of the modules
    blobcast.convert(tmp_path / "g.prototxt", tmp_path / "plain.prototxt")
    text = (tmp_path / "plain.prototxt").read_text()
    assert "module" not in text and 'name: "inception_5b/pool_proj"' in text


def test_the_flattened_net_runs_the_same_in_the_engine_and_in_opencv(tmp_path):
    model = _with_weights(blobcast.load(_write(tmp_path, "g.prototxt", googlenet_modular())))
    blobcast.save(model, tmp_path / "g.caffemodel")
    blobcast.save(model, tmp_path / "deploy.prototxt")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ours = Net(model).forward({"data": x})["prob"]
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(tmp_path / "g.caffemodel"))
    net.setInput(x)
    np.testing.assert_allclose(net.forward(), ours, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("suffix", [".caffemodel.h5", ".onnx"])
def test_the_module_tree_survives_hdf5_and_onnx(suffix, tmp_path):
    model = _with_weights(blobcast.load(_write(tmp_path, "g.prototxt", googlenet_modular())))
    blobcast.save(model, tmp_path / "g.caffemodel")
    assert not blobcast.load(tmp_path / "g.caffemodel").modules  # a .caffemodel keeps no modules
    with warnings.catch_warnings():  # '/' names in HDF5 (Caffe's loader cannot read them)
        warnings.simplefilter("ignore", blobcast.BlobcastWarning)
        blobcast.save(model, tmp_path / f"g{suffix}")
    back = blobcast.load(tmp_path / f"g{suffix}")
    assert {n: i.to_dict() for n, i in back.modules.items()} == {n: i.to_dict() for n, i in model.modules.items()}
    assert [layer.module_path for layer in back.layers if layer.name in {other.name for other in model.layers}] == \
        [layer.module_path for layer in model.layers if layer.name in {other.name for other in back.layers}]


def test_blocks_are_found_in_a_flat_googlenet(tmp_path):
    model = blobcast.load(_write(tmp_path, "flat.prototxt", googlenet_flat()))
    found = discover_modules(model)
    assert [(m.name, m.instance_names) for m in found] == [
        ("Inception", ["inception_3a", "inception_3b", "inception_4a", "inception_4b", "inception_4c",
                       "inception_4d", "inception_4e", "inception_5a", "inception_5b"])]
    assert found[0].separator == "/" and len(found[0].regions[0].layers) == 14
    assert model.modules["inception_3a"].bottoms == ["pool2/3x3_s2"]
    assert model.modules["inception_3a"].tops == ["inception_3a/output"]
    assert sorted(found[0].params) == ["p_1x1_num_output", "p_3x3_num_output", "p_3x3_reduce_num_output",
                                       "p_5x5_num_output", "p_5x5_reduce_num_output", "pool_proj_num_output"]


def test_blocks_are_found_in_a_flat_resnet50(tmp_path):
    model = blobcast.load(_write(tmp_path, "r.prototxt", resnet50_flat()))
    found = discover_modules(model)
    by_count = {len(m.instance_names): m for m in found}
    assert sorted(by_count) == [4, 12]
    assert by_count[4].instance_names == ["res2a", "res3a", "res4a", "res5a"]   # with the projection
    assert by_count[12].instance_names[:3] == ["res2b", "res2c", "res3b"]        # without
    assert len(by_count[4].regions[0].layers) == 16 and len(by_count[12].regions[0].layers) == 13
    stride = [p for p in by_count[4].params if p.endswith("stride")]
    assert stride and [by_count[4].params[p] for p in stride][0] == ["1", "2", "2", "2"]


@pytest.mark.parametrize("net", [googlenet_flat, resnet50_flat])
def test_modularize_writes_a_form_that_flattens_back_to_the_same_net(net, tmp_path):
    flat_path = _write(tmp_path, "flat.prototxt", net())
    done = CliRunner().invoke(app, ["modularize", str(flat_path), str(tmp_path / "m.prototxt"), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["lines"]["modular"] < report["lines"]["flat"] / 2
    again = blobcast.load(tmp_path / "m.prototxt")
    flat = blobcast.load(flat_path)
    assert [layer.spec.to_dict() for layer in again.layers] == [layer.spec.to_dict() for layer in flat.layers]
    assert len(again.modules) == sum(len(m["instances"]) for m in report["modules"])


def test_inspect_modules_folds_each_instance_to_one_line(tmp_path):
    path = _write(tmp_path, "g.prototxt", googlenet_modular())
    done = CliRunner().invoke(app, ["inspect", str(path), "--modules", "--json"])
    assert done.exit_code == 0, done.output
    view = json.loads(done.stdout)["module_view"]
    assert view["modules"] == [{"module": "Inception", "instances": [
        "inception_3a", "inception_3b", "inception_4a", "inception_4b", "inception_4c", "inception_4d",
        "inception_4e", "inception_5a", "inception_5b"]}]
    instances = [item for item in view["view"] if item["kind"] == "instance"]
    assert len(instances) == 9 and instances[0]["layers"] == 14
    assert len(view["view"]) == 140 - 9 * 14 + 9
    text = CliRunner().invoke(app, ["inspect", str(path), "--modules"]).stdout
    assert "inception_3a Inception(n1x1=8" in text and "inception_3a/1x1" not in text


NESTED = """
module_separator: "."
module { name: "ConvRelu" input: "x" output: "y" param { name: "n" } param { name: "k" default: "3" }
  layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: ${n} kernel_size: ${k} pad: 1 } }
  layer { name: "relu" type: "ReLU" bottom: "y" top: "y" } }
module { name: "Pair" input: "x" output: "out" param { name: "n" }
  layer { name: "a" module: "ConvRelu" bottom: "x" top: "mid" module_param { key: "n" value: "${n}" } }
  layer { name: "b" module: "ConvRelu" bottom: "mid" top: "out" module_param { key: "n" value: "${n}" } } }
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "p1" module: "Pair" bottom: "data" top: "p1" module_param { key: "n" value: "4" } share_weights: true }
layer { name: "p2" module: "Pair" bottom: "p1" top: "p2" module_param { key: "n" value: "4" } share_weights: true }
"""


def test_nested_modules_qualify_names_and_share_weights_on_request(tmp_path):
    model = blobcast.load(_write(tmp_path, "n.prototxt", NESTED))
    assert [layer.name for layer in model.layers] == [
        "data", "p1.a.conv", "p1.a.relu", "p1.b.conv", "p1.b.relu", "p2.a.conv", "p2.a.relu",
        "p2.b.conv", "p2.b.relu"]
    assert model["p1.b.conv"].bottoms == ["p1.mid"] and model["p2.a.conv"].bottoms == ["p1"]
    assert model["p2.b.conv"].module_path == ("p2", "p2.b")
    assert model.modules["p2.b"].parent == "p2"
    # shared across instances: Caffe's param { name } sharing, one blob per module layer
    assert model["p1.a.conv"].param_name(0) == model["p2.a.conv"].param_name(0) == "Pair.a.conv.0"
    assert model["p1.b.conv"].param_name(0) == "Pair.b.conv.0"
    _with_weights(model)
    model.link_shared_params()
    assert len(model.owned_params()) < sum(len(layer.blobs) for layer in model.layers)


@pytest.mark.parametrize("text,problem", [
    ('layer { name: "i" module: "Nope" bottom: "data" top: "o" }', "instance 'i': unknown module 'Nope'"),
    ('module { name: "M" input: "x" output: "y" param { name: "n" } layer { name: "r" type: "ReLU" bottom: "x" top: "y" } }\n'
     'layer { name: "i" module: "M" bottom: "data" top: "o" }', "instance 'i' of module 'M': parameter 'n' is not given"),
    ('module { name: "M" input: "x" output: "y" layer { name: "r" type: "ReLU" bottom: "x" top: "y" } }\n'
     'layer { name: "i" module: "M" bottom: "data" top: "o" module_param { key: "q" value: "1" } }',
     "instance 'i' of module 'M': unknown parameter 'q'"),
    ('module { name: "A" input: "x" output: "y" layer { name: "b" module: "B" bottom: "x" top: "y" } }\n'
     'module { name: "B" input: "x" output: "y" layer { name: "a" module: "A" bottom: "x" top: "y" } }\n'
     'layer { name: "i" module: "A" bottom: "data" top: "o" }', "module cycle A -> B -> A"),
    ('import: "../outside.prototxt"', "import '../outside.prototxt' leads outside the folder of the net file"),
    ('module { name: "M" input: "x" output: "y" param { name: "n" } layer { name: "r" type: "ReLU" bottom: "x" top: "y" } }\n'
     'layer { name: "i" module: "M" bottom: "data" top: "o" module_param { key: "n" value: "1 } layer {" } }',
     "may hold only letters"),
])
def test_module_errors_are_one_line_and_exit_2(text, problem, tmp_path):
    folder = tmp_path / "nets"
    folder.mkdir()
    (tmp_path / "outside.prototxt").write_text("module { name: \"X\" }\n")
    path = _write(folder, "bad.prototxt",
                  'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }\n' + text)
    done = CliRunner().invoke(app, ["convert", str(path), str(tmp_path / "out.prototxt")])
    assert done.exit_code == 2, done.output
    assert problem in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert not (tmp_path / "out.prototxt").exists()


def test_a_module_imported_from_a_file_beside_the_net(tmp_path):
    from ..module_nets import INCEPTION_MODULE

    (tmp_path / "inception.prototxt").write_text(INCEPTION_MODULE)
    text = googlenet_modular().replace(INCEPTION_MODULE, 'import: "inception.prototxt"\n')
    model = blobcast.load(_write(tmp_path, "g.prototxt", text))
    assert len(model.modules) == 9 and len(model.layers) == 140


def test_modules_export_as_onnx_functions_that_onnxruntime_runs_like_the_flat_graph(tmp_path):
    import onnx

    from ..converters.test_onnx import ort_run

    model = _with_weights(blobcast.load(_write(tmp_path, "g.prototxt", googlenet_modular())))
    report = blobcast.convert(_save(model, tmp_path / "g.caffemodel.h5"), tmp_path / "g.onnx")
    assert report.check == "onnx checker (full)" and report.forward["passed"]
    written = onnx.load(tmp_path / "g.onnx")
    assert [(f.domain, f.name) for f in written.functions] == [("ai.blobcast.module", "Inception")]
    calls = [n for n in written.graph.node if n.domain == "ai.blobcast.module"]
    assert [n.name for n in calls] == list(model.modules) and len(written.graph.node) < 25
    flat = blobcast.load(tmp_path / "g.caffemodel.h5")
    flat.modules = {}
    for layer in flat.layers:
        layer.module_path = ()
    blobcast.save(flat, tmp_path / "flat.onnx")
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert np.array_equal(ort_run(tmp_path / "g.onnx", {"data": x})["prob"],
                          ort_run(tmp_path / "flat.onnx", {"data": x})["prob"])
    back = blobcast.load(tmp_path / "g.onnx")  # the calls inlined: the Caffe layers and modules again
    assert len(back.modules) == 9 and back["inception_5b/pool_proj"].module_path == ("inception_5b",)
    assert [layer.name for layer in back.layers] == [layer.name for layer in blobcast.load(tmp_path / "flat.onnx").layers]


def test_discovered_resnet_blocks_export_as_functions(tmp_path):
    import onnx

    model = _with_weights(blobcast.load(_write(tmp_path, "r.prototxt", resnet50_flat())))
    discover_modules(model)
    report = blobcast.convert(_save(model, tmp_path / "r.caffemodel.h5"), tmp_path / "r.onnx")
    assert report.forward["passed"]
    written = onnx.load(tmp_path / "r.onnx")
    calls = [n for n in written.graph.node if n.domain == "ai.blobcast.module"]
    assert len(calls) == 16
    # a body holds its BatchNorm's per-channel constants, so each stage's width (and the
    # stride-1 projection) is a function of its own: 4 stages x 2 kinds
    assert len(written.functions) == 8


def _save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blobcast.BlobcastWarning)
        blobcast.save(model, path)
    return path


def test_a_net_built_in_python_from_a_module_is_the_modular_googlenet(tmp_path):
    from blobcast.compose import NetBuilder, module

    from ..module_nets import INCEPTIONS, POOL_AFTER

    @module("Inception")
    def inception(net, x, *, n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj):
        def conv_relu(bottom, n, k, name, pad=0):
            return net.relu(net.conv(bottom, n, k, pad=pad, name=name), name=f"relu_{name}")
        branches = [conv_relu(x, n1x1, 1, "1x1"),
                    conv_relu(conv_relu(x, n3x3_reduce, 1, "3x3_reduce"), n3x3, 3, "3x3", pad=1),
                    conv_relu(conv_relu(x, n5x5_reduce, 1, "5x5_reduce"), n5x5, 5, "5x5", pad=2),
                    conv_relu(net.pool(x, "MAX", 3, 1, 1, name="pool"), pool_proj, 1, "pool_proj")]
        return net.concat(*branches, name="output")

    c = lambda n: n // 8  # noqa: E731
    net = NetBuilder("GoogleNet", separator="/")
    x = net.input("data", [1, 3, 64, 64])
    x = net.relu(net.conv(x, c(64), 7, stride=2, pad=3, name="conv1/7x7_s2"), name="conv1/relu_7x7")
    x = net.pool(x, "MAX", 3, 2, name="pool1/3x3_s2")
    x = net.relu(net.conv(x, c(64), 1, name="conv2/3x3_reduce"), name="conv2/relu_3x3_reduce")
    x = net.relu(net.conv(x, c(192), 3, pad=1, name="conv2/3x3"), name="conv2/relu_3x3")
    x = net.pool(x, "MAX", 3, 2, name="pool2/3x3_s2")
    for name, *sizes in INCEPTIONS:
        keys = dict(zip(("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj"), map(c, sizes)))
        x = inception(net, x, name=name, **keys)
        if name in POOL_AFTER:
            x = net.pool(x, "MAX", 3, 2, name=POOL_AFTER[name])
    x = net.pool(x, name="pool5/7x7_s1", kind="AVE", global_pooling=True)
    net.softmax(net.fc(x, 1000 // 8, name="loss3/classifier"), name="prob")
    built = net.model()
    written = blobcast.load(_write(tmp_path, "g.prototxt", googlenet_modular()))
    assert [layer.spec.to_dict() for layer in built.layers] == [layer.spec.to_dict() for layer in written.layers]
    assert {n: i.to_dict() for n, i in built.modules.items()} == {n: i.to_dict() for n, i in written.modules.items()}
    assert [layer.module_path for layer in built.layers] == [layer.module_path for layer in written.layers]


def test_draw_shows_instances_collapsed_or_as_clusters_and_colours_the_first_bad_layer(tmp_path):
    import re
    import shutil

    model = _with_weights(blobcast.load(_write(tmp_path, "g.prototxt", googlenet_modular())))
    _save(model, tmp_path / "g.caffemodel.h5")
    done = CliRunner().invoke(app, ["draw", str(tmp_path / "g.caffemodel.h5"), str(tmp_path / "g.dot")])
    assert done.exit_code == 0, done.output
    collapsed = (tmp_path / "g.dot").read_text()
    assert collapsed.count("Inception(n1x1=") == 9 and "inception_3a/1x1" not in collapsed
    assert "subgraph" not in collapsed and collapsed.count('[label="pool2/3x3_s2 1x24x8x8"]') == 1
    CliRunner().invoke(app, ["draw", str(tmp_path / "g.caffemodel.h5"), str(tmp_path / "x.dot"), "--expand"])
    expanded = (tmp_path / "x.dot").read_text()
    assert len(re.findall(r"subgraph cluster_", expanded)) == 9 and "inception_3a/1x1\\nConvolution" in expanded
    assert expanded.count("{") == expanded.count("}")
    # B: one weight of inception_4a/3x3 changed; its top is the first blob that differs
    changed = blobcast.load(tmp_path / "g.caffemodel.h5")
    weights = changed["inception_4a/3x3"].blobs[0].data.numpy().copy()
    weights.flat[0] += 1.0
    changed["inception_4a/3x3"].blobs[0] = blobcast.Blob(weights)
    _save(changed, tmp_path / "b.caffemodel.h5")
    done = CliRunner().invoke(app, ["draw", str(tmp_path / "g.caffemodel.h5"), str(tmp_path / "e.dot"),
                                    "--expand", "--against", str(tmp_path / "b.caffemodel.h5"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["first_mismatch"] == "inception_4a/3x3"
    text = (tmp_path / "e.dot").read_text()
    bad = next(line for line in text.splitlines() if 'label="inception_4a/3x3\\nConvolution"' in line)
    assert "fillcolor" in bad and text.count('color="#c62828"') > 0 and text.count('color="#2e7d32"') > 0
    if shutil.which("dot") is None:  # SVG and PNG need Graphviz: the error names it
        done = CliRunner().invoke(app, ["draw", str(tmp_path / "g.caffemodel.h5"), str(tmp_path / "g.svg")])
        assert done.exit_code == 2 and "Graphviz's dot" in done.output and not (tmp_path / "g.svg").exists()
    else:
        done = CliRunner().invoke(app, ["draw", str(tmp_path / "g.caffemodel.h5"), str(tmp_path / "g.svg")])
        assert done.exit_code == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


def test_an_instances_phase_rules_reach_every_layer_it_makes(tmp_path):
    text = NESTED.replace('layer { name: "p2" module: "Pair" bottom: "p1" top: "p2" module_param { key: "n" value: "4" } share_weights: true }',
                          'layer { name: "p2" module: "Pair" bottom: "p1" top: "p2" module_param { key: "n" value: "4" } '
                          'include { phase: TRAIN } }')
    model = blobcast.load(_write(tmp_path, "n.prototxt", text))
    assert all(layer.spec.include[0].phase == "TRAIN" for layer in model.layers if layer.name.startswith("p2."))
    test_net = Net(model, random_weights=0)  # Caffe's TEST phase: the p2 instance is left out
    assert not any(layer.name.startswith("p2.") for layer in test_net.layers)
    assert test_net.outputs == ["p1"]


def test_the_documented_googlenet_is_bvlcs_googlenet():
    from ..conftest import ROOT

    page = (ROOT / "docs" / "modules.md").read_text()
    code = page.split("## From Python")[1].split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) < 40
    namespace: dict = {}
    exec(code, namespace)
    built = namespace["model"]
    from blobcast.converters.prototxt import net_from_text

    flat = net_from_text(googlenet_flat(shrink=1, size=224), "<flat>")
    assert [layer.spec.to_dict() for layer in built.layers] == [layer.spec.to_dict() for layer in flat.layers]
    assert len(built.modules) == 9
    _with_weights(built)
    from blobcast.modules import module_tree

    assert module_tree(built)[0]["parameters"] == 163_696  # inception_3a, as docs/modules.md says


def test_hostile_modular_files_are_refused_in_bounded_time(tmp_path):
    # ten modules, each instantiating the next ten times: 10**10 layers if flattened
    text = ['layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }']
    for level in range(10):
        inner = ('layer { name: "r" type: "ReLU" bottom: "x" top: "y" }' if level == 9 else
                 " ".join(f'layer {{ name: "i{k}" module: "M{level + 1}" bottom: "x" top: "y{k}" }}' for k in range(10)))
        text.append(f'module {{ name: "M{level}" input: "x" output: "y" {inner} '
                    + ("" if level == 9 else 'layer { name: "y" type: "Concat" bottom: "y0" bottom: "y1" top: "y" }') + " }")
    text.append('layer { name: "top" module: "M0" bottom: "data" top: "out" }')
    path = _write(tmp_path, "bomb.prototxt", "\n".join(text))
    done = CliRunner().invoke(app, ["inspect", str(path)])
    assert done.exit_code == 2 and "flattens to more than 200000 layers" in done.output
    # modules nested deeper than 64
    deep = [text[0]] + [f'module {{ name: "D{k}" input: "x" output: "y" layer {{ name: "i" module: "D{k + 1}" bottom: "x" top: "y" }} }}'
                         for k in range(80)]
    deep += ['module { name: "D80" input: "x" output: "y" layer { name: "r" type: "ReLU" bottom: "x" top: "y" } }',
             'layer { name: "top" module: "D0" bottom: "data" top: "out" }']
    done = CliRunner().invoke(app, ["inspect", str(_write(tmp_path, "deep.prototxt", "\n".join(deep)))])
    assert done.exit_code == 2 and "nest more than 64 deep" in done.output


def test_a_python_layers_module_setting_is_not_a_module_instance(tmp_path):
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "py" type: "Python" bottom: "data" top: "out" '
            'python_param { module: "my_layers" layer: "Double" } }\n')
    model = blobcast.load(_write(tmp_path, "py.prototxt", text))
    assert model["py"].spec.python_param.module == "my_layers" and not model.modules


def test_convert_with_modules_writes_a_flat_nets_blocks_as_onnx_functions(tmp_path):
    import onnx

    model = _with_weights(blobcast.load(_write(tmp_path, "flat.prototxt", googlenet_flat())))
    blobcast.save(model, tmp_path / "flat.caffemodel")
    done = CliRunner().invoke(app, ["convert", str(tmp_path / "flat.caffemodel"), str(tmp_path / "g.onnx"),
                                    "--modules", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["forward"]["passed"]
    written = onnx.load(tmp_path / "g.onnx")
    assert [f.name for f in written.functions] == ["Inception"]
    assert len(blobcast.load(tmp_path / "g.onnx").modules) == 9


def test_training_side_branches_do_not_split_the_blocks_they_leave(tmp_path):
    # GoogLeNet's train_val has auxiliary classifiers after inception_4a and 4d, written
    # between the blocks and run in training only
    text = googlenet_flat()
    aux = ('layer {{ name: "{n}/ave_pool" type: "Pooling" bottom: "{b}" top: "{n}/ave_pool" '
           'pooling_param {{ pool: AVE global_pooling: true }} include {{ phase: TRAIN }} }}\n'
           'layer {{ name: "{n}/fc" type: "InnerProduct" bottom: "{n}/ave_pool" top: "{n}/fc" '
           'inner_product_param {{ num_output: 5 }} include {{ phase: TRAIN }} }}\n')
    for block, name in (("inception_4a", "loss1"), ("inception_4d", "loss2")):
        anchor = f'layer {{ name: "{block}/output"'
        end = text.index("\n", text.index(anchor)) + 1
        text = text[:end] + aux.format(n=name, b=f"{block}/output") + text[end:]
    model = blobcast.load(_write(tmp_path, "train_val.prototxt", text))
    found = discover_modules(model)
    assert [(m.name, len(m.instance_names)) for m in found] == [("Inception", 9)]
    assert not model["loss1/fc"].module_path


REAL = ROOT / "fixtures" / "real"


@pytest.mark.parametrize("path,expected", [
    ("bvlc_googlenet/deploy.prototxt", {"Inception": 9}),
    ("bvlc_googlenet/train_val.prototxt", {"Inception": 9, "Loss": 2}),  # the auxiliary classifiers
    ("resnet/ResNet-50-deploy.prototxt", {"Res": 4, "Res2": 12}),
    ("resnet/ResNet-152-deploy.prototxt", {"Res": 4, "Res2": 46}),
])
def test_the_blocks_of_real_public_nets_are_found_and_modularized(path, expected, tmp_path):
    flat = blobcast.load(REAL / path)
    found = discover_modules(blobcast.load(REAL / path))
    assert {m.name: len(m.instance_names) for m in found} == expected
    if "googlenet" in path:
        inception = next(m for m in found if m.name == "Inception")
        assert inception.instance_names[0] == "inception_3a" and inception.separator == "/"
    modularize(REAL / path, tmp_path / "m.prototxt")
    again = blobcast.load(tmp_path / "m.prototxt")
    assert [layer.spec.to_dict() for layer in again.layers] == [layer.spec.to_dict() for layer in flat.layers]
    assert len((tmp_path / "m.prototxt").read_text().splitlines()) < len(
        (REAL / path).read_text().splitlines()) / 2


@pytest.mark.slow
def test_the_real_googlenet_exports_its_inceptions_as_one_onnx_function(tmp_path):
    import onnx

    model = blobcast.load(REAL / "bvlc_googlenet" / "deploy.prototxt")
    model["data"].spec.input_param.shape[0].dim[0] = 1
    _save(_with_weights(model), tmp_path / "g.caffemodel")
    report = blobcast.convert(tmp_path / "g.caffemodel", tmp_path / "g.onnx", find_modules=True)
    assert report.forward["passed"]
    written = onnx.load(tmp_path / "g.onnx")
    assert [f.name for f in written.functions] == ["Inception"]
    assert sum(node.domain == "ai.blobcast.module" for node in written.graph.node) == 9


def test_imports_count_against_the_memory_budget_together(tmp_path):
    # each imported file alone is within the budget; all of them together are not
    module = 'module { name: "M%d" input: "x" output: "y" layer { name: "r" type: "ReLU" bottom: "x" top: "y" } }\n'
    for k in range(4):
        (tmp_path / f"m{k}.prototxt").write_text(module % k + "# " + "x" * 300_000 + "\n")
    imports = "".join(f'import: "m{k}.prototxt"\n' for k in range(4))
    path = _write(tmp_path, "net.prototxt", imports + 'layer { name: "data" type: "Input" top: "data" '
                  'input_param { shape { dim: 1 } } }\n')
    done = CliRunner().invoke(app, ["inspect", str(path), "--memory-budget", "1M"])
    assert done.exit_code == 2 and "the net file and its imports needs" in done.output, done.output
    assert CliRunner().invoke(app, ["inspect", str(path), "--memory-budget", "2M"]).exit_code == 0
