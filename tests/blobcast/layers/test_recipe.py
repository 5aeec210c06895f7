"""Adding a layer type is the recipe of docs/contributing.md and no other
edit: a type registered in a family-like module, with its exporter in an
ONNX ops module beside it, is picked up by every check over the registry,
by the generated layer reference and by the ONNX export."""

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import blobcast
from blobcast.converters.onnx_ops.registry import EXPORTERS, FUNCTION_EXPORTS, NEWEST_OPSET
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net
from blobcast.layers import LAYER_TYPES, SPECS
from blobcast.shapes import blob_shapes

from ...conftest import ROOT
from . import test_layer_reference, test_layer_specs

FAMILY = '''"""A family module as step 1 of the recipe writes it."""

from blobcast.layers.base import LayerOp, register


@register("RecipeDouble")
class RecipeDouble(LayerOp):
    """y = 2x."""

    origin = "a test-only type"

    def forward(self, x):
        return (x * x.dtype.type(2),)
'''

OPS = '''"""Its ONNX ops as step 2 writes them."""

import numpy as np

from blobcast.converters.onnx_ops.registry import exporter


@exporter("RecipeDouble")
def export_recipe_double(g, layer, ins, outs):
    g.node("Mul", ins + [g.constant(layer.name, np.float32(2), role="two")], outs, layer.name)
'''

NET = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 } } }
layer { name: "twice" type: "RecipeDouble" bottom: "data" top: "twice" }
'''


def _load(name: str, text: str, folder) -> None:
    path = folder / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture
def new_type(tmp_path):
    """Registers the type (step 1); the function it gives registers its ONNX
    ops (step 2). Every registry gets its state back afterwards."""
    _load("recipe_family", FAMILY, tmp_path)
    yield lambda: _load("recipe_onnx_ops", OPS, tmp_path)
    for table in (SPECS, LAYER_TYPES, EXPORTERS, FUNCTION_EXPORTS, NEWEST_OPSET):
        table.pop("RecipeDouble", None)


@pytest.fixture
def reference():
    spec = importlib.util.spec_from_file_location("layer_reference", ROOT / "scripts" / "layer_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAMILY_TESTS = Path(__file__).parent  # test_<family>.py, one per family of src/blobcast/layers


def untested_types(reference, folders=(FAMILY_TESTS,)) -> set:
    """Types the engine runs that their family's test file does not name and
    no recorded net (the layer reference's "checked against") runs."""
    recorded = set(reference.checked_against())
    untested = set()
    for name, kind in LAYER_TYPES.items():
        family = kind.__module__.rpartition(".")[2]
        texts = [path.read_text() for path in (folder / f"test_{family}.py" for folder in folders)
                 if path.exists()]
        if name not in recorded and not any(f'"{name}"' in text or f"'{name}'" in text for text in texts):
            untested.add(name)
    return untested


def test_every_type_the_engine_runs_is_tested_in_its_family_file(reference):
    assert untested_types(reference) == set()


def test_every_registry_check_picks_a_new_type_up(new_type, reference, tmp_path, monkeypatch):
    with pytest.raises(AssertionError):  # step 2 missing: the ONNX check names it
        test_layer_specs.test_every_type_the_engine_runs_exports_to_onnx()
    new_type()
    test_layer_specs.test_every_type_the_engine_runs_exports_to_onnx()
    test_layer_specs.test_every_settings_field_exists_in_the_schema()
    test_layer_specs.test_the_engine_runs_exactly_the_runnable_specs()
    test_layer_reference.test_every_type_has_a_row_and_every_fork_type_names_its_fork(reference)
    # step 3: its test in its family's test file
    assert untested_types(reference) == {"RecipeDouble"}
    (tmp_path / "test_recipe_family.py").write_text('TEXT = \'layer { type: "RecipeDouble" }\'\n')
    assert untested_types(reference, (FAMILY_TESTS, tmp_path)) == set()
    # step 4: the committed reference is stale until regenerated, and then holds the type
    assert reference.main(["--check"]) == 1
    with pytest.raises(AssertionError):
        test_layer_specs.test_the_layer_reference_describes_every_type_the_engine_runs()
    monkeypatch.setattr(reference, "PAGE", tmp_path / "layers.md")
    assert reference.main([]) == 0 and reference.main(["--check"]) == 0
    row = next(line for line in reference.PAGE.read_text().splitlines() if "`RecipeDouble`" in line)
    assert row == "| `RecipeDouble` | a test-only type | — | 0 | runs | Mul | — |"


def test_a_new_type_runs_and_exports_to_onnx_with_no_other_edit(new_type, tmp_path):
    new_type()
    model = net_from_text(NET, "<net>")
    assert tuple(blob_shapes(model)[1]["twice"]) == (2, 3, 4)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    ours = Net(model).forward({"data": x})["twice"]
    np.testing.assert_array_equal(ours, 2 * x)
    blobcast.save(model, tmp_path / "new.onnx")
    session = ort.InferenceSession(str(tmp_path / "new.onnx"), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(["twice"], {"data": x})
    np.testing.assert_array_equal(theirs, ours)
