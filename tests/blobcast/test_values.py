"""Blob versions as objects: writer, readers and one name per version."""

from __future__ import annotations

from blobcast.model import Layer
from blobcast.values import BlobVersions

LAYERS = [Layer(name="conv", type="Convolution", bottoms=["data"], tops=["x"]),
          Layer(name="bn", type="BatchNorm", bottoms=["x"], tops=["x"]),
          Layer(name="relu", type="ReLU", bottoms=["x"], tops=["x"]),
          Layer(name="fc", type="InnerProduct", bottoms=["x"], tops=["y"]),
          Layer(name="relu_in", type="ReLU", bottoms=["data"], tops=["data"])]


def test_each_in_place_write_is_a_version_of_its_own():
    values = BlobVersions(LAYERS, ["data"])
    x = values.of_blob["x"]
    assert [(v.index, v.producer, v.consumers, v.in_place) for v in x] == [
        (0, 0, [1], False), (1, 1, [2], True), (2, 2, [3], True)]
    assert [v.name for v in x] == ["x:conv", "x:bn", "x"]  # the last keeps the blob's name
    assert values.read[3, 0] is values.final("x") and values.written[1, 0] is x[1]


def test_an_input_keeps_its_name_and_its_rewrites_are_named_after_their_layer():
    values = BlobVersions(LAYERS, ["data"])
    data = values.of_blob["data"]
    assert [(v.name, v.producer, v.consumers) for v in data] == [("data", None, [0, 4]),
                                                                   ("data:relu_in", 4, [])]


def test_last_readers_and_writers_in_first_use_order():
    values = BlobVersions(LAYERS, ["data"])
    assert values.last_reads() == {"data": 4, "x": 3}
    assert values.last_writes() == {"x": 2, "y": 3, "data": 4}
