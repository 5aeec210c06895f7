"""The arrays of released blobs handed out again (engine/buffers.py): every
pass gives what a pass showing every blob (which takes nothing from the
pool) gives, bit for bit, on real nets and on the forks' Caffe nets with
their traps (Split, in-place on shared blobs, views); what a pass returned
is never written by the next; only the blobs nobody else can see go back."""

from __future__ import annotations

import numpy as np
import pytest

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net, buffers
from blobcast.engine.memory import plan_memory

from ...conftest import ROOT
from ...netgen import with_random_weights
from .test_caffe_forks2 import FORKS2, RAN, _load

REAL = ROOT / "fixtures" / "real"


@pytest.fixture
def every_array_pooled(monkeypatch):
    monkeypatch.setattr(buffers, "MIN_BYTES", 0)


def _bits(outputs: dict) -> dict:
    return {name: np.asarray(value).copy() for name, value in outputs.items()}


def _same(found: dict, expected: dict) -> None:
    assert set(found) == set(expected)
    for name, value in expected.items():
        assert np.asarray(found[name]).tobytes() == value.tobytes(), name


def _passes_agree(load, inputs_of_each_pass: list) -> Net:
    """Each pass of one net (pooled) against a pass showing every blob of a fresh net."""
    net, shown, held = Net(load()), Net(load()), []
    for inputs in inputs_of_each_pass:
        inputs = {name: value for name, value in inputs.items() if name in net.inputs}
        expected = _bits({name: value for name, value in shown.forward(inputs, keep_all=True).items()
                          if name in shown.outputs})
        outputs = net.forward(inputs)
        _same(outputs, expected)
        held.append((outputs, expected))
    for outputs, expected in held:  # what a pass returned, later passes left alone
        _same(outputs, expected)
    return net


REAL_NETS = {
    "yufacedetectnet": ("yufacedetectnet-open-v1.caffemodel", "yufacedetectnet-open-v1.prototxt",
                        "data", (1, 3, 120, 160)),
    "ultraface": ("RFB-320.caffemodel", "RFB-320.prototxt", "input", (1, 3, 240, 320)),
}


@pytest.mark.parametrize("name", sorted(REAL_NETS))
def test_real_nets_give_every_pass_what_a_pass_showing_every_blob_gives(name, every_array_pooled,
                                                                       compiled_everywhere):
    weights, text, blob, shape = REAL_NETS[name]
    rng = np.random.default_rng(5)
    passes = [{blob: rng.uniform(0, 255, shape).astype(np.float32)} for _ in range(3)]
    net = _passes_agree(lambda: blobcast.load(REAL / name / weights, prototxt=REAL / name / text),
                        passes)
    assert net._pool.reused > 0


@pytest.mark.parametrize("case", RAN)
def test_the_forks_caffe_nets_give_every_pass_what_caffe_computed(case, every_array_pooled):
    inputs = np.load(FORKS2 / f"{case}.inputs.npz")
    _passes_agree(lambda: _load(case), [{name: inputs[name] for name in inputs.files}] * 3)


def test_the_forks_caffe_nets_reuse_arrays(every_array_pooled):
    reused = 0
    for case in ("trap_inplace_then_split", "cdw_s2_pad_bias", "bn_default_scale_inplace"):
        inputs = np.load(FORKS2 / f"{case}.inputs.npz")
        reused += _passes_agree(lambda case=case: _load(case),
                                [{name: inputs[name] for name in inputs.files}] * 2)._pool.reused
    assert reused > 0


TEXT = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "a_relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "b" type: "Convolution" bottom: "a" top: "b"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "flat" type: "Flatten" bottom: "b" top: "flat" }
layer { name: "c" type: "Pooling" bottom: "a" top: "c" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "drop" type: "Dropout" bottom: "c" top: "c" }
layer { name: "d" type: "Convolution" bottom: "a" top: "d"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "e" type: "Eltwise" bottom: "d" bottom: "d" top: "e" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip" inner_product_param { num_output: 2 } }
"""


# b's array stays Flatten's top after b's last reader: a layer that took it
# again (b2, the same shape) would change what ip reads.
VIEWED = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "flat" type: "Flatten" bottom: "b" top: "flat" }
layer { name: "b2" type: "Convolution" bottom: "a" top: "b2"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "out" type: "Eltwise" bottom: "b2" bottom: "a" top: "out" }
"""


def test_a_view_keeps_its_array_from_the_next_layer_of_that_shape(every_array_pooled):
    rng = np.random.default_rng(3)
    passes = [{"data": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    net = _passes_agree(lambda: with_random_weights(VIEWED, {"data": (1, 3, 8, 8)}, seed=1), passes)
    assert net._pool.reused > 0  # a's array (released after out) went to b2 or a the next pass


def test_only_blobs_nobody_else_sees_are_reusable():
    net = Net(net_from_text(TEXT, "<pool>"), random_weights=0)
    # a: read by convolutions, pooling and ReLU in place; d: by Eltwise twice.
    # Not b (Flatten's top is a view of it), flat (a view), c (Dropout may
    # return its bottom; an output too), e and ip (the net's outputs).
    assert plan_memory(net.schedule).reusable == {"a", "d"}


def test_the_pool_takes_back_only_what_it_lent_whole(every_array_pooled):
    pool = buffers.ArrayPool()
    lent = pool.empty((4, 6), np.float32)
    assert not pool.give_back(np.empty((4, 6), np.float32))  # never lent
    assert not pool.give_back(lent[:2])  # a part of it: the rest may still be read
    assert pool.give_back(lent.reshape(24)) and pool.free_bytes == lent.nbytes
    assert not pool.give_back(lent)  # once
    assert pool.empty((4, 6), np.float32) is lent and pool.reused == 1
    assert pool.empty((4, 6), np.float32) is not lent  # handed out once
    assert pool.empty((4, 6), np.float64).dtype == np.float64
    pool.end_pass()
    assert not pool.give_back(lent)  # the caller's now


def test_what_the_pool_lends_is_freed_with_its_last_holder(every_array_pooled):
    import weakref

    pool = buffers.ArrayPool()
    lent = pool.empty((4, 6), np.float32)
    held = weakref.ref(lent)
    del lent  # never given back (a blob a view was made of): not kept for the pass
    assert held() is None
    again = pool.empty((4, 6), np.float32)
    assert pool.give_back(again) and pool.empty((4, 6), np.float32) is again


def test_small_arrays_are_not_held():
    pool = buffers.ArrayPool()
    small = pool.empty((8,), np.float32)
    assert not pool.give_back(small) and pool.free_bytes == 0


def test_a_pass_that_shows_every_blob_takes_nothing_from_the_pool(every_array_pooled):
    net = Net(net_from_text(TEXT, "<pool>"), random_weights=0)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    shown = []
    net.forward({"data": x}, on_blob=lambda name, value: shown.append(value))
    net.forward({"data": x}, keep_all=True)
    assert net._pool.free_bytes == 0 and net._pool.reused == 0
    net.forward({"data": x})
    assert net._pool.free_bytes > 0  # "d" went back
    net.release()
    assert net._pool.free_bytes == 0


# Each blob released before the next is made: the pool fills as the pass runs.
GROWING = """
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 4 dim: 32 dim: 32 } } }
""" + "".join(
    f'layer {{ name: "c{i}" type: "Convolution" bottom: "{bottom}" top: "c{i}"\n'
    f'  convolution_param {{ num_output: {8 * (i + 1)} kernel_size: 1 }} }}\n'
    for i, bottom in enumerate(["data", "c0", "c1", "c2", "c3"]))


def _runs_within(budget: int, pooled: bool, monkeypatch):
    """The net after a pass within `budget` (None: a layer was refused)."""
    from blobcast import limits
    from blobcast.errors import BlobcastError

    monkeypatch.setattr(buffers, "MIN_BYTES", 0 if pooled else 1 << 60)
    limits.set_memory_budget(budget)
    try:
        net = Net(with_random_weights(GROWING, {"data": (1, 4, 32, 32)}, seed=2))
        net.forward({"data": np.ones((1, 4, 32, 32), np.float32)})
        return net
    except BlobcastError:
        return None
    finally:
        limits.set_memory_budget(None)


def test_the_pools_arrays_never_make_a_layer_refused(monkeypatch):
    low, high = 1, 1 << 24  # the least budget the pass needs without a pool
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if _runs_within(middle, False, monkeypatch) else (middle + 1, high)
    tight, roomy = _runs_within(low, True, monkeypatch), _runs_within(1 << 30, True, monkeypatch)
    assert tight is not None and _runs_within(low - 1, True, monkeypatch) is None
    # counted against the budget, and let go where they would pass it
    assert tight._pool.free_bytes < roomy._pool.free_bytes
