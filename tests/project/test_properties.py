"""Property-based round trips: random nets through every format pair."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import blobcast
from blobcast.check import compare_arrays
from blobcast.engine import Net

from ..netgen import with_random_weights

NAME = st.text(alphabet="abcdefgh_0123456789", min_size=1, max_size=6)


@st.composite
def random_net(draw):
    channels = draw(st.integers(1, 4))
    size = draw(st.integers(5, 9))
    batch = draw(st.integers(1, 2))
    lines = [f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} '
             f'dim: {channels} dim: {size} dim: {size} }} }} }}']
    current, used = "data", {"data"}
    for _ in range(draw(st.integers(1, 5))):
        name = draw(NAME.filter(lambda n: n not in used))
        used.add(name)
        kind = draw(st.sampled_from(["conv", "pool", "relu", "bn", "act", "lrn"]))
        if kind == "conv":
            outputs = draw(st.integers(1, 4))
            kernel = draw(st.integers(1, min(3, size)))
            group = channels if (channels == outputs and draw(st.booleans())) else 1
            lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{current}" top: "{name}" '
                         f'convolution_param {{ num_output: {outputs} kernel_size: {kernel} '
                         f'pad: {draw(st.integers(0, kernel - 1))} group: {group} '
                         f'bias_term: {str(draw(st.booleans())).lower()} }} }}')
            channels, current = outputs, name
        elif kind == "pool" and size >= 3:
            kernel = draw(st.integers(2, 3))
            pad = draw(st.integers(0, kernel - 1))
            method = draw(st.sampled_from(["MAX", "AVE"]))
            lines.append(f'layer {{ name: "{name}" type: "Pooling" bottom: "{current}" top: "{name}" '
                         f'pooling_param {{ pool: {method} kernel_size: {kernel} stride: 2 pad: {pad} }} }}')
            current = name
        elif kind == "relu":
            slope = draw(st.sampled_from([0, 0.1]))
            lines.append(f'layer {{ name: "{name}" type: "ReLU" bottom: "{current}" top: "{current}" '
                         f'relu_param {{ negative_slope: {slope} }} }}')
        elif kind == "bn":
            lines.append(f'layer {{ name: "{name}" type: "BatchNorm" bottom: "{current}" top: "{current}" '
                         f'batch_norm_param {{ use_global_stats: true }} }}')
            lines.append(f'layer {{ name: "{name}_s" type: "Scale" bottom: "{current}" top: "{current}" '
                         f'scale_param {{ bias_term: true }} }}')
            used.add(f"{name}_s")
        elif kind == "act":
            act = draw(st.sampled_from(["Sigmoid", "TanH", "AbsVal", "ELU"]))
            lines.append(f'layer {{ name: "{name}" type: "{act}" bottom: "{current}" top: "{name}" }}')
            current = name
        else:
            lines.append(f'layer {{ name: "{name}" type: "LRN" bottom: "{current}" top: "{name}" '
                         f'lrn_param {{ local_size: 3 alpha: 0.1 beta: 0.75 }} }}')
            current = name
        if kind == "pool" and size >= 3:
            size = None  # recomputed by the engine; later layers use 1x1-safe kernels
            break
    lines.append(f'layer {{ name: "head" type: "InnerProduct" bottom: "{current}" top: "head" '
                 f'inner_product_param {{ num_output: {draw(st.integers(1, 5))} }} }}')
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    return "\n".join(lines), (batch, None), dtype, seed


def build(spec):
    text, _, dtype, seed = spec
    first = text.splitlines()[0]
    dims = [int(d) for d in first.split("shape {")[1].split("}")[0].replace("dim:", "").split()]
    model = with_random_weights(text, {"data": tuple(dims)}, seed=seed)
    if dtype == np.float64:
        for layer in model:
            layer.blobs = [blobcast.Blob(b.data.numpy().astype(np.float64)) for b in layer.blobs]
    return model, dims


PROPERTY_SETTINGS = settings(max_examples=25, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow])


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(spec=random_net())
def test_caffe_formats_round_trip_exactly(tmp_path, spec):
    model, _ = build(spec)
    binary = tmp_path / "net.caffemodel"
    blobcast.save(model, binary)
    for middle in ("via.caffemodel.h5", "via.prototxt"):
        target = tmp_path / middle
        blobcast.convert(binary, target, overwrite=True)
        back = tmp_path / "back.caffemodel"
        if middle.endswith(".prototxt"):
            blobcast.convert(binary, back, prototxt=target, overwrite=True)
        else:
            blobcast.convert(target, back, overwrite=True)
        assert back.read_bytes() == binary.read_bytes()


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(spec=random_net())
def test_onnx_round_trip_computes_the_same(tmp_path, spec):
    pytest.importorskip("onnxruntime")
    model, dims = build(spec)
    if spec[2] == np.float64:
        for layer in model:  # onnxruntime's CPU kernels are float32
            layer.blobs = [blobcast.Blob(b.data.numpy().astype(np.float32)) for b in layer.blobs]
    binary = tmp_path / "net.caffemodel"
    blobcast.save(model, binary)
    onnx_path = tmp_path / "net.onnx"
    blobcast.convert(binary, onnx_path, overwrite=True)  # checked against onnxruntime inside
    back = tmp_path / "back.caffemodel"
    blobcast.convert(onnx_path, back, overwrite=True)
    x = np.random.RandomState(0).standard_normal(dims).astype(np.float32)
    original = Net(blobcast.load(binary)).forward({"data": x})["head"]
    again = Net(blobcast.load(back)).forward({"data": x})["head"]
    assert compare_arrays("head", original, again).passed
