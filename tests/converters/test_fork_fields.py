"""Fork settings at other field numbers in binary files: OpenCV's SSD numbers,
SegNet's and other forks' Upsample, resolved by layer type and wire type,
and written back where they were found, byte for byte."""

import numpy as np
import pytest

import blobcast
from blobcast.converters import caffe_pb2 as pb
from blobcast.converters.wire import length_delimited
from blobcast.engine import Net
from blobcast.errors import BlobcastError, BlobcastWarning


def _layer(name, kind, bottoms, tops, number=None, settings=None):
    layer = pb.LayerParameter(name=name, type=kind, bottom=bottoms, top=tops)
    raw = layer.SerializeToString()
    if settings is not None:  # the fork's message at the fork's number
        payload = settings.SerializeToString()
        raw += length_delimited(number, len(payload)) + payload
    return raw


def _net(*layers) -> bytes:
    return b"".join(length_delimited(100, len(raw)) + raw for raw in layers)  # NetParameter.layer


def test_opencv_numbered_ssd_settings_are_read_as_the_layer_type_says(tmp_path):
    norm = pb.NormalizeParameter(across_spatial=False, channel_shared=False, eps=0.25)
    norm.scale_filler.type, norm.scale_filler.value = "constant", 20.0
    prior = pb.PriorBoxParameter(min_size=[30.0], max_size=[60.0], aspect_ratio=[2.0], flip=True,
                                 clip=False, variance=[0.1, 0.1, 0.2, 0.2], step=8.0)
    permute = pb.PermuteParameter(order=[0, 2, 3, 1])
    raw = _net(
        _layer("data", "Input", [], ["data"]),
        _layer("norm", "Normalize", ["data"], ["norm"], 149, norm),        # 149 is upsample_param here
        _layer("permute", "Permute", ["norm"], ["permute"], 148, permute),  # 148 is clip_param
        _layer("priors", "PriorBox", ["norm", "data"], ["priors"], 150, prior),  # 150: unknown here
    )
    path = tmp_path / "opencv_numbers.caffemodel"
    path.write_bytes(raw)
    model = blobcast.load(path)
    assert model["norm"].type_params.eps == np.float32(0.25) and not model["norm"].type_params.channel_shared
    assert list(model["permute"].type_params.order) == [0, 2, 3, 1]
    assert list(model["priors"].type_params.max_size) == [60.0] and model["priors"].type_params.flip
    assert not model["norm"].spec.has("upsample_param") and not model["permute"].spec.has("clip_param")
    blobcast.save(model, tmp_path / "again.caffemodel")
    assert (tmp_path / "again.caffemodel").read_bytes() == raw


def test_segnet_and_huawei_upsample_numbers(tmp_path):
    segnet = pb.UpsampleParameter(scale=2, pad_out_h=True)   # SegNet: field 137 (embed_param here)
    huawei = pb.AtcUpsampleParameter(scale=0.5, stride=3)     # Huawei ATC: field 160, float scale
    pool = pb.LayerParameter(name="pool", type="Pooling", bottom=["data"], top=["pool", "mask"])
    pool.pooling_param.pool, pool.pooling_param.kernel_size, pool.pooling_param.stride = 0, 2, 2
    data = pb.LayerParameter(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 2, 5, 6])
    raw = _net(data.SerializeToString(), pool.SerializeToString(),
               _layer("unpool", "Upsample", ["pool", "mask"], ["unpool"], 137, segnet),
               _layer("nearest", "Upsample", ["pool"], ["nearest"], 160, huawei))
    path = tmp_path / "upsample.caffemodel"
    path.write_bytes(raw)
    model = blobcast.load(path)
    assert model["unpool"].type_params.pad_out_h and model["nearest"].type_params.stride == 3
    assert not model["unpool"].spec.has("embed_param")
    x = np.arange(60, dtype=np.float32).reshape(1, 2, 5, 6)
    out = Net(model).forward({"data": x})
    assert out["unpool"].shape == (1, 2, 5, 6) and out["nearest"].shape == (1, 2, 9, 9)
    assert out["unpool"][0, 0, 1, 1] == x[0, 0, 1, 1]  # each maximum back in its place
    # ATC: out = scale * in[h / stride][w / stride]
    pooled = Net(model).forward({"data": x}, keep_all=True)["pool"]
    np.testing.assert_array_equal(out["nearest"], 0.5 * pooled.repeat(3, axis=2).repeat(3, axis=3))
    blobcast.save(model, tmp_path / "again.caffemodel")
    assert (tmp_path / "again.caffemodel").read_bytes() == raw


def test_a_candidate_that_does_not_decode_stays_as_it_was(tmp_path):
    # An Upsample whose field 137 really is an embed_param-like message with a
    # field out of place for UpsampleParameter (a length-delimited field 1).
    payload = length_delimited(1, 3) + b"abc"
    raw = _net(_layer("data", "Input", [], ["data"]),
               pb.LayerParameter(name="up", type="Upsample", bottom=["data"], top=["up"]).SerializeToString()
               + length_delimited(137, len(payload)) + payload)
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(raw)
    model = blobcast.load(path)
    assert not model["up"].spec.has("upsample_param")
    blobcast.save(model, tmp_path / "again.caffemodel")
    assert (tmp_path / "again.caffemodel").read_bytes() == raw


def test_huawei_upsample_settings_keep_their_meaning_in_text(tmp_path):
    # Whole-number settings go to the prototxt by name, ATC's default strides spelled out;
    # a fractional scale has no text form and is refused, never rounded.
    data = pb.LayerParameter(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 2, 3, 4])
    path = tmp_path / "atc.caffemodel"
    atc = pb.AtcUpsampleParameter(scale=2.0)
    path.write_bytes(_net(data.SerializeToString(), _layer("up", "Upsample", ["data"], ["up"], 160, atc)))
    model = blobcast.load(path)
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    expected = 2 * x.repeat(2, axis=2).repeat(2, axis=3)  # stride 2 by default, values doubled
    np.testing.assert_array_equal(Net(model).forward({"data": x})["up"], expected)
    blobcast.save(model, tmp_path / "atc.prototxt")
    text = (tmp_path / "atc.prototxt").read_text()
    assert "stride_h: 2" in text and "scale: 2" in text
    np.testing.assert_array_equal(Net(blobcast.load(tmp_path / "atc.prototxt")).forward({"data": x})["up"],
                                  expected)
    atc = pb.AtcUpsampleParameter(scale=0.25)
    path.write_bytes(_net(data.SerializeToString(), _layer("up", "Upsample", ["data"], ["up"], 160, atc)))
    with pytest.raises(BlobcastError, match="scale 0.25 is not a whole number"):
        blobcast.save(blobcast.load(path), tmp_path / "fraction.prototxt")
    assert not (tmp_path / "fraction.prototxt").exists()


def test_huawei_upsample_through_onnx_and_back(tmp_path):
    # Resize, then Mul by the fractional scale; back from ONNX at field 160, byte for byte
    data = pb.LayerParameter(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 2, 3, 4])
    raw = _net(data.SerializeToString(), _layer("up", "Upsample", ["data"], ["up"], 160,
                                                pb.AtcUpsampleParameter(scale=0.25, stride_h=3)))
    (tmp_path / "atc.caffemodel").write_bytes(raw)
    model = blobcast.load(tmp_path / "atc.caffemodel")
    report = blobcast.convert(tmp_path / "atc.caffemodel", tmp_path / "atc.onnx")
    assert report.forward["passed"]
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "atc.onnx"), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"data": x})
    np.testing.assert_array_equal(theirs, 0.25 * x.repeat(3, axis=2).repeat(2, axis=3))
    np.testing.assert_array_equal(Net(model).forward({"data": x})["up"], theirs)
    with pytest.warns(BlobcastWarning, match="back.prototxt not written: .*scale 0.25"):
        blobcast.convert(tmp_path / "atc.onnx", tmp_path / "back.caffemodel")
    assert not (tmp_path / "back.prototxt").exists()
    assert blobcast.load(tmp_path / "back.caffemodel")["up"].spec == model["up"].spec
