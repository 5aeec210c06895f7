"""A chain of in-place layers (BatchNorm, Scale, ReLU, ...) right after a
convolution runs inside it, on each part of its output while the part is in
cache: every blob is what the layers give one by one, bit for bit, and the
chain stays out where someone sees the blob between the layers."""

import numpy as np
import pytest

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net
from blobcast.layers import convolution

CHAIN = """
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: 0.1 } }
layer { name: "six" type: "ReLU6" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 } }
"""

# the convolution's settings and its weights' shape, for 6 input channels
KINDS = {
    "3x3": ("num_output: 8 kernel_size: 3 pad: 1", (8, 6, 3, 3)),
    "3x3 stride 2": ("num_output: 8 kernel_size: 3 pad: 1 stride: 2", (8, 6, 3, 3)),
    "1x1": ("num_output: 8 kernel_size: 1", (8, 6, 1, 1)),
    "depthwise": ("num_output: 6 group: 6 kernel_size: 3 pad: 1", (6, 1, 3, 3)),
    "depthwise stride 2": ("num_output: 6 group: 6 kernel_size: 3 pad: 1 stride: 2", (6, 1, 3, 3)),
}


def _net(kind: str, seed: int = 0) -> Net:
    settings, weight_shape = KINDS[kind]
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 '
            'dim: 12 dim: 10 } } }'
            f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            f'convolution_param {{ {settings} }} }}' + CHAIN)
    model = net_from_text(text, "<fused>")
    rng = np.random.default_rng(seed)
    channels = weight_shape[0]
    model["conv"].blobs = [blobcast.Blob(rng.standard_normal(weight_shape).astype(np.float32)),
                           blobcast.Blob(rng.standard_normal(channels).astype(np.float32))]
    model["bn"].blobs = [blobcast.Blob(rng.standard_normal(channels).astype(np.float32)),
                         blobcast.Blob((np.abs(rng.standard_normal(channels)) + 0.5).astype(np.float32)),
                         blobcast.Blob(np.full(1, 2.0, np.float32))]
    model["scale"].blobs = [blobcast.Blob(rng.standard_normal(channels).astype(np.float32) * 3)
                            for _ in range(2)]
    return Net(model)


def _input(seed: int = 1) -> dict:
    return {"data": np.random.default_rng(seed).standard_normal((2, 6, 12, 10)).astype(np.float32) * 2}


def _one_by_one(kind: str, monkeypatch, **options) -> dict:
    with monkeypatch.context() as patch:
        patch.setattr(Net, "_in_place_chain", lambda *args: (0, []))
        patch.setattr(Net, "_chain_after", lambda *args: (0, []))
        return _net(kind).forward(_input(), **options)


def _fused_layers(monkeypatch) -> list:
    """How many layers each chain run inside a convolution took."""
    fused = []
    original = Net._chain_after

    def counting(self, *args):
        count, steps = original(self, *args)
        fused.append(count)
        return count, steps

    monkeypatch.setattr(Net, "_chain_after", counting)
    return fused


def _same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in got:
        assert np.array_equal(got[name], expected[name]), name


@pytest.mark.parametrize("keep_all", [False, True])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_chain_inside_the_convolution_gives_the_layers_values(kind, keep_all, monkeypatch):
    expected = _one_by_one(kind, monkeypatch, keep_all=keep_all)
    fused = _fused_layers(monkeypatch)
    got = _net(kind).forward(_input(), keep_all=keep_all)
    assert fused[0] == 4  # BatchNorm, Scale, ReLU, ReLU6
    _same(got, expected)
    assert got["pool"].min() >= 0 and got["pool"].max() <= 6


@pytest.mark.parametrize("kind", ["3x3", "3x3 stride 2"])
def test_a_chain_inside_a_convolution_made_in_parts_gives_the_layers_values(kind, monkeypatch):
    monkeypatch.setattr(convolution, "COLUMN_BYTES", 4 * 6 * 9 * 5)  # a row or two a part
    monkeypatch.setattr(convolution, "MIN_PART_COLUMNS", 1)
    expected = _one_by_one(kind, monkeypatch, keep_all=True)
    parts = []
    original = convolution.Convolution._unfolded_in_parts
    monkeypatch.setattr(convolution.Convolution, "_unfolded_in_parts",
                        lambda self, *args: parts.append(args[-1]) or original(self, *args))
    fused = _fused_layers(monkeypatch)
    got = _net(kind).forward(_input(), keep_all=True)
    assert fused[0] == 4 and len(parts) == 1 and len(parts[0]) == 6  # the chain's steps
    _same(got, expected)


@pytest.mark.parametrize("kind", ["depthwise", "depthwise stride 2", "3x3"])
def test_a_chain_inside_the_compiled_depthwise_kernel_gives_the_layers_values(
        kind, monkeypatch, compiled_everywhere):
    expected = _one_by_one(kind, monkeypatch)
    got = _net(kind).forward(_input())
    _same(got, expected)
    # the depthwise kernel ran the steps; a GEMM's output took them in one pass
    # (and the bias of the GEMM, layer by layer, as its one step)
    assert compiled_everywhere == ({"depthwise": 2} if "depthwise" in kind else {"run_steps": 2})


def test_who_sees_each_version_keeps_the_chain_out(monkeypatch):
    seen = []
    fused = _fused_layers(monkeypatch)
    _net("3x3").forward(_input(), on_blob=lambda name, value: seen.append((name, value.copy())))
    assert fused == [0] * len(fused)  # every version of "conv" was shown
    assert [name for name, _ in seen].count("conv") == 5
    versions = [value for name, value in seen if name == "conv"]
    assert versions[0].min() < 0 <= versions[-1].min()


def test_products_shared_between_the_engines_threads_give_the_one_thread_values(
        monkeypatch, compiled_everywhere):
    # A pass with products shared (a batch's samples and a convolution's
    # parts on two threads, BLAS on one thread each) against a pass on one
    # thread: the same BLAS calls, the same bits.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import blobcast.threads as threads

    monkeypatch.setattr(convolution, "COLUMN_BYTES", 4 * 32 * 9 * 28 * 6)  # c3 in parts
    conv = ('layer {{ name: "{0}" type: "Convolution" bottom: "{1}" top: "{0}" '
            'convolution_param {{ {2} }} }}\n')
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 32 '
            'dim: 28 dim: 28 } } }\n'
            + conv.format("c3", "data", "num_output: 64 kernel_size: 3 pad: 1")
            + conv.format("c1", "c3", "num_output: 96 kernel_size: 1")
            + conv.format("dw", "c1", "num_output: 96 group: 96 kernel_size: 3 stride: 2")
            + conv.format("s", "dw", "num_output: 40 kernel_size: 3 pad: 1 stride: 2")
            + 'layer { name: "fc" type: "InnerProduct" bottom: "s" top: "fc" '
              'inner_product_param { num_output: 10 } }')
    net = Net(net_from_text(text, "<shared>"), random_weights=5, winograd=False)
    x = {"data": np.random.default_rng(3).standard_normal((2, 32, 28, 28)).astype(np.float32)}
    shared_calls = []
    original = threads.run_blocks
    monkeypatch.setattr(threads, "run_blocks", lambda work, count, workers=None, **options:
                        shared_calls.append(threads.share_products())
                        or original(work, count, workers, **options))
    monkeypatch.setattr(convolution, "run_blocks", threads.run_blocks)
    monkeypatch.setattr(threads, "compiled_threads", lambda: 2)
    shared = net.forward(x, keep_all=True)
    assert shared_calls.count(2) >= 2  # c3's parts and c1's samples at least
    monkeypatch.setattr(threads, "compiled_threads", lambda: 1)
    shared_calls.clear()
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        one_thread = net.forward(x, keep_all=True)
    assert set(shared_calls) <= {1}
    _same(one_thread, shared)


def test_a_stack_of_products_split_between_threads_is_the_same_blas_calls(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import blobcast.threads as threads

    rng = np.random.default_rng(0)
    filters = rng.standard_normal((1, 2, 64, 300)).astype(np.float32)
    columns = rng.standard_normal((5, 2, 300, 700)).astype(np.float32)
    monkeypatch.setattr(threads, "compiled_threads", lambda: 3)
    parts = []
    original = threads.run_blocks
    monkeypatch.setattr(threads, "run_blocks", lambda work, count, workers=None, **options:
                        parts.append(count) or original(work, count, workers, **options))
    with threads.products_on_engine_threads(True):
        assert threads.share_products() == 3
        got = threads.matmul(filters, columns)
        single = threads.matmul(filters[0, 0], columns[0, 0])  # one product: not split
    assert threads.share_products() == 1 and parts == [3]
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert np.array_equal(got, np.matmul(filters, columns))
    assert np.array_equal(single, np.matmul(filters[0, 0], columns[0, 0]))


RESIDUAL = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 12 dim: 10 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
        convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "data" top: "sum" %s }
layer { name: "relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "scale" type: "Scale" bottom: "sum" top: "sum" scale_param { bias_term: true } }
"""


@pytest.mark.parametrize("settings", ["", "eltwise_param { coeff: 1 coeff: -0.5 }",
                                      "eltwise_param { operation: MAX }"])
@pytest.mark.parametrize("compiled", [False, True])
def test_a_chain_inside_an_eltwise_gives_the_layers_values(settings, compiled, request, monkeypatch):
    counts = request.getfixturevalue("compiled_everywhere") if compiled else None
    model = net_from_text(RESIDUAL % settings, "<residual>")
    rng = np.random.default_rng(4)
    model["a"].blobs = [blobcast.Blob(rng.standard_normal((6, 6, 1, 1)).astype(np.float32)),
                        blobcast.Blob(rng.standard_normal(6).astype(np.float32))]
    model["scale"].blobs = [blobcast.Blob(rng.standard_normal(6).astype(np.float32)) for _ in range(2)]
    fused = _fused_layers(monkeypatch)
    got = Net(model).forward(_input(), keep_all=True)
    assert fused == [0, 2]  # the convolution's top is read twice; the Eltwise's chain
    with monkeypatch.context() as patch:
        patch.setattr(Net, "_in_place_chain", lambda *args: (0, []))
        patch.setattr(Net, "_chain_after", lambda *args: (0, []))
        expected = Net(model).forward(_input(), keep_all=True)
    _same(got, expected)
    if compiled:
        assert counts.get("add_then_steps", 0) == (2 if not settings else 0)  # fused, and alone


def test_at_batch_1_the_kernels_keep_to_the_pass_thread_while_blas_has_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import blobcast.threads as threads

    threads.set_threads(2)
    try:
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            with threads.products_on_engine_threads(True, batch=1):
                assert threads.compiled_threads() == 1 and threads.share_products() == 1
            assert threads.compiled_threads() == 2
            with threads.products_on_engine_threads(True, batch=2):
                assert threads.compiled_threads() == 2 and threads.share_products() == 2
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            with threads.products_on_engine_threads(True, batch=1):
                assert threads.compiled_threads() == 2  # no BLAS thread holds a core
    finally:
        threads.set_threads(None)


@pytest.fixture
def two_threads_two_blas_threads():
    """The engine on two threads, every BLAS on two; yields each BLAS's
    thread count, read anew at each call."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import blobcast.threads as threads

    threads.set_threads(2)
    try:
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            yield lambda: [library.num_threads for library, _ in threads._blas_libraries()]
    finally:
        threads.set_threads(None)


def test_single_products_get_each_blas_its_own_thread_count_back(two_threads_two_blas_threads):
    # OpenCV's wheels load an OpenBLAS of their own, often on one thread
    import blobcast.threads as threads

    counts = two_threads_two_blas_threads
    before = counts()
    with threads.products_on_engine_threads(True, batch=2):
        assert set(counts()) == {1}
        with threads.blas_threads():
            assert counts() == before
        assert set(counts()) == {1}
    assert counts() == before


def test_a_large_layer_at_batch_1_takes_the_engines_threads_with_blas_on_one(
        two_threads_two_blas_threads):
    # Winograd's parts and large unfolded ones: each product on its calling
    # thread, so that its values never depend on the thread count.
    import blobcast.threads as threads

    counts = two_threads_two_blas_threads
    before = counts()
    with threads.products_on_engine_threads(True, batch=1):
        with threads.single_thread_products(True, large=True, parts=8) as workers:
            assert workers == 2 and set(counts()) == {1}
        assert counts() == before
        for large, parts in ((False, 8), (True, 1)):  # small, or too few parts to share
            with threads.single_thread_products(True, large, parts) as workers:
                assert workers == 1 and counts() == before
    with threads.products_on_engine_threads(True, batch=2):  # already one a thread
        with threads.single_thread_products(True, large=False) as workers:
            assert workers == 2 and set(counts()) == {1}
