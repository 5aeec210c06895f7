"""Each data-layer type's settings give its tops' shapes, in the phase that runs
or another one."""

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net
from blobcast.shapes import blob_shapes

from ...conftest import ROOT
from ..test_data_layer_inputs import CONV1, WEIGHTS

runner = CliRunner()

# One case per data-layer type (and a Python layer with no bottoms): the
# settings and the shape they give, None where the data alone tells it.
DATA_LAYER_CASES = [
    ('type: "Data" data_param { batch_size: 7 } transform_param { crop_size: 24 }', [7, 3, 24, 24]),
    ('type: "ImageData" image_data_param { batch_size: 2 new_height: 30 new_width: 20 }',
     [2, 3, 30, 20]),
    ('type: "MemoryData" memory_data_param { batch_size: 4 channels: 3 height: 16 width: 12 }',
     [4, 3, 16, 12]),
    ('type: "WindowData" window_data_param { batch_size: 5 crop_size: 27 }', [5, 3, 27, 27]),
    ('type: "DummyData" dummy_data_param { shape { dim: 3 dim: 3 dim: 8 dim: 8 } }', [3, 3, 8, 8]),
    ('type: "AnnotatedData" data_param { batch_size: 6 } transform_param { crop_size: 11 }',
     [6, 3, 11, 11]),
    ('type: "HDF5Data" hdf5_data_param { batch_size: 3 }', None),  # sizes are in the HDF5 file
    ('type: "VideoData"', None),
    ('type: "DenseImageData"', None),
    ('type: "Python" python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" }', None),
]


def test_every_registered_data_layer_type_has_a_case():
    from blobcast.layers import SPECS

    cased = {text.split('"')[1] for text, _ in DATA_LAYER_CASES}
    assert {name for name, kind in SPECS.items() if kind.role == "data"} - cased == set()


@pytest.mark.parametrize(("data_layer", "shape"), DATA_LAYER_CASES)
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_every_data_layer_type_feeds_the_net_its_shape(tmp_path, data_layer, shape, phase):
    net_text = tmp_path / "net.prototxt"
    net_text.write_text(f'layer {{ name: "source" {data_layer} top: "data" top: "label" '
                        f'include {{ phase: {phase} }} }}' + CONV1)
    model = blobcast.load(WEIGHTS, prototxt=net_text)
    net = Net(model)  # the TEST phase: a TRAIN-only data layer is left out, and still feeds it
    assert list(net.inputs) == ["data"]
    assert net.inputs["data"] == shape
    if shape is None:
        with pytest.raises(blobcast.BlobcastError, match=r"'data' has no known shape, made by the "
                           r"data layer 'source' \(\w+\) \(known so far: \[(3|\?), 3, \?, \?\]\); "
                           r"give one with --input data=SHAPE"):
            blob_shapes(model)
        shape = [1, 3, 8, 8]
    out = net.forward({"data": np.zeros(shape, np.float32)})
    assert out["conv1"].shape == (shape[0], 32, shape[2], shape[3])


def test_segnets_dense_image_data_layer_feeds_the_net_its_input(tmp_path):
    net = ROOT / "fixtures" / "real" / "segnet" / "segnet_basic_inference.prototxt"
    asked = runner.invoke(app, ["run", str(net), "--random-weights"])
    assert asked.exit_code == 2 and "'data' (DenseImageData)" in asked.stderr
    # 40 rows pool to 5 and 3: the fork's pad_out_h on the first Upsample gives 5 back
    result = runner.invoke(app, ["run", str(net), "--random-weights", "--input", "data=1,3,40,48"])
    assert result.exit_code == 0, result.output
    assert "prob [1, 11, 40, 48]" in result.stdout
