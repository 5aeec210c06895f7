"""Training snapshots as ONNX training info: round trips, and the step against Caffe's own."""

import json
import shutil

import h5py
import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import blobcast
from blobcast.converters.onnx_training import PREVIEW_DOMAIN

from ..conftest import CAFFE, SOLVER_TYPES

LENET = CAFFE / "lenet"
STEPS = CAFFE.parent / "steps"  # written by the SSD fork of Caffe (its MANIFEST.md)
# One real Caffe update (t=3 -> t=4) per run; steps/MANIFEST.md says how each was made.
STEP_RUNS = SOLVER_TYPES + ["sgd_fixed", "sgd_clip", "sgd_l1"]
PARAMS = [("conv1", 0), ("conv1", 1), ("ip1", 0), ("ip1", 1), ("ip2", 0), ("ip2", 1)]
SUFFIXES = {"sgd": ["momentum"], "nesterov": ["momentum"], "adagrad": ["adagrad_sum_sq"],
            "rmsprop": ["rmsprop_mean_sq"],
            "adadelta": ["adadelta_mean_sq_grad", "adadelta_mean_sq_step"],
            "adam": ["adam_m", "adam_v"]}


def _snapshot_copy(tmp_path, kind: str, form: str):
    """A writable copy of one LeNet snapshot, laid out as Caffe wrote it."""
    (tmp_path / "snapshots").mkdir()
    names = [f"{kind}_{form}_iter_5.{suffix}" for suffix in (
        ("solverstate", "caffemodel") if form == "bp" else ("solverstate.h5", "caffemodel.h5"))]
    for name in names:
        shutil.copy(LENET / "snapshots" / name, tmp_path / "snapshots" / name)
    return [tmp_path / "snapshots" / name for name in names]


@pytest.mark.parametrize("kind", SOLVER_TYPES)
def test_binary_snapshot_round_trips_through_onnx_byte_for_byte(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where Caffe ran: learned_net is relative to it
    state, weights = _snapshot_copy(tmp_path, kind, "bp")
    original_state, original_weights = state.read_bytes(), weights.read_bytes()
    model_path = tmp_path / "model.onnx"
    report = blobcast.convert(state, model_path, solver=LENET / f"solver_{kind}_bp.prototxt")
    assert "training state read back bit-exact" in report.check
    assert report.forward["passed"]
    state.unlink()
    weights.unlink()
    blobcast.convert(model_path, state, weights=weights)
    assert state.read_bytes() == original_state
    assert weights.read_bytes() == original_weights

    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version >= 7
    assert (PREVIEW_DOMAIN, 1) in [(o.domain, o.version) for o in model.opset_import]
    info = model.training_info[0]
    params = [f"{layer}/param{i}" for layer, i in PARAMS]
    history = [f"{p}.{s}" for s in SUFFIXES[kind] for p in params]
    bound = {b.key for b in info.update_binding}
    assert bound == set(params) | set(history) | {"solver.iter", "solver.current_step"}
    assert {t.name for t in info.algorithm.initializer} >= set(history) | {"solver.iter"}
    assert json.loads({p.key: p.value for p in model.metadata_props}["caffe.history"]) == history
    gradient = [n for n in info.algorithm.node if n.op_type == "Gradient"]
    assert len(gradient) == 1 and gradient[0].domain == PREVIEW_DOMAIN
    assert {i.name for i in info.algorithm.input} == {"label"}  # the data is the graph's input
    preview = {n.op_type for n in info.algorithm.node if n.domain == PREVIEW_DOMAIN} - {"Gradient"}
    assert preview == {"adagrad": {"Adagrad"}, "adam": {"Adam"}}.get(kind, set())
    reset = {b.key for b in info.initialization_binding}
    assert reset == set(history) | {"solver.iter", "solver.current_step"}


@pytest.mark.parametrize("kind", SOLVER_TYPES)
def test_hdf5_snapshot_round_trips_through_onnx(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state, weights = _snapshot_copy(tmp_path, kind, "h5")
    caffes_state, caffes_weights = tmp_path / "caffe.solverstate.h5", tmp_path / "caffe.caffemodel.h5"
    shutil.copy(state, caffes_state)
    shutil.copy(weights, caffes_weights)
    model_path = tmp_path / "model.onnx"
    # Caffe's HDF5 weights hold no layer definitions: the training net comes with --prototxt.
    blobcast.convert(state, model_path, solver=LENET / f"solver_{kind}_h5.prototxt",
                     prototxt=LENET / "lenet_train.prototxt")
    state.unlink()
    weights.unlink()
    blobcast.convert(model_path, state, weights=weights)
    # The state: the same bytes, the modification times Caffe's HDF5 library
    # stamped on each dataset included.
    assert state.read_bytes() == caffes_state.read_bytes()
    # The weights: Caffe's datasets, and the net's definition beside them
    # (blobcast's /architecture, which Caffe does not read).
    with h5py.File(weights) as ours, h5py.File(caffes_weights) as caffes:
        found = _datasets(ours)
        assert set(found) - set(_datasets(caffes)) == {"architecture"}
        del found["architecture"]
        assert found == _datasets(caffes)


def _datasets(handle) -> dict:
    found = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            kind = item.id.get_type()
            found[name] = (item.dtype.str, item.shape, kind.get_size(), bytes(np.asarray(item[()]).tobytes()))
    handle.visititems(visit)
    return found


def _step_model(run: str, tmp_path):
    """Caffe's t=3 snapshot of a step run as ONNX, and the run's recorded values."""
    path = tmp_path / f"{run}.onnx"
    blobcast.convert(STEPS / f"{run}_iter_3.solverstate", path,
                     solver=STEPS / f"{run}_solver.prototxt")
    with np.load(STEPS / f"{run}.npz") as recorded:
        return path, dict(recorded)


def _expected(recorded, run: str) -> dict:
    kind = run.split("_")[0]
    expected = {f"{layer}/param{i}": recorded[f"w_after/{layer}/{i}"] for layer, i in PARAMS}
    for k, suffix in enumerate(s for s in SUFFIXES[kind] for _ in PARAMS):
        layer, i = PARAMS[k % len(PARAMS)]
        expected[f"{layer}/param{i}.{suffix}"] = recorded[f"hist_after/{k}"]
    return expected


@pytest.mark.parametrize("run", STEP_RUNS)
def test_the_written_step_reproduces_caffes_update(run, tmp_path):
    path, recorded = _step_model(run, tmp_path)
    gradients = {f"{layer}/param{i}": recorded[f"grad/{layer}/{i}"] for layer, i in PARAMS}
    after = blobcast.training_step(path, gradients)
    assert int(after["solver.iter"]) == int(recorded["iter_after"]) == 4
    assert int(after.get("solver.current_step", recorded["current_step_before"])) \
        == int(recorded["current_step_after"])
    for name, caffes in _expected(recorded, run).items():
        before = blobcast.load(path)
        ours = after[name]
        assert ours.dtype == np.float32 and ours.shape == caffes.shape
        # Caffe's BLAS fuses a*x + y into one rounding; the graph's Mul and Add
        # round twice (steps/MANIFEST.md, the "plain" model): float32 round-off
        # on the tensor's scale, no more.
        scale = np.spacing(np.abs(caffes).max())
        assert np.abs(ours - caffes).max() <= 2 * scale, name
        exact = np.mean(ours == caffes)
        assert exact > 0.5, (name, exact)  # most values bit for bit
    moved = max(np.abs(after[n] - recorded[f"w_before/{layer}/{i}"]).max()
                for n, (layer, i) in zip([f"{lay}/param{i}" for lay, i in PARAMS], PARAMS))
    assert moved > 1e-5  # the step did move the weights
    assert before.training.state.iter == 3


@pytest.mark.parametrize("run", STEP_RUNS)
def test_onnx_reference_evaluator_runs_the_step_as_written(run, tmp_path):
    """onnx's own evaluator, on the algorithm graph after its Gradient node
    (which it does not implement), from Caffe's recorded gradients."""
    path, recorded = _step_model(run, tmp_path)
    model = onnx.load(path)
    info = model.training_info[0]
    nodes = list(info.algorithm.node)
    gradient = next(i for i, n in enumerate(nodes) if n.op_type == "Gradient")
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
              for name in nodes[gradient].output]
    outputs = [onnx.helper.make_tensor_value_info(b.value, 0, None) for b in info.update_binding]
    graph = onnx.helper.make_graph(nodes[gradient + 1:], "step", inputs, outputs,
                                   list(model.graph.initializer) + list(info.algorithm.initializer))
    step = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    feeds = {f"{layer}/param{i}.gradient": recorded[f"grad/{layer}/{i}"] for layer, i in PARAMS}
    results = dict(zip([b.key for b in info.update_binding],
                       ReferenceEvaluator(step).run(None, feeds)))
    for name, caffes in _expected(recorded, run).items():
        np.testing.assert_allclose(results[name], caffes, rtol=2e-6, atol=1e-9, err_msg=name)


POLICIES = {
    # policy: (extra solver settings, Caffe's rate at iter 5 with current_step 1, next current_step)
    "fixed": ("", lambda b: b, 1),
    "step": ("gamma: 0.5 stepsize: 2", lambda b: b * 0.5 ** 2, 2),
    "exp": ("gamma: 0.9", lambda b: b * 0.9 ** 5, 1),
    "inv": ("gamma: 0.1 power: 0.75", lambda b: b * (1 + 0.1 * 5) ** -0.75, 1),
    "multistep": ("gamma: 0.1 stepvalue: 2 stepvalue: 5 stepvalue: 8", lambda b: b * 0.1 ** 2, 2),
    "poly": ("power: 2 max_iter: 20", lambda b: b * (1 - 5 / 20) ** 2, 1),
    "sigmoid": ("gamma: -0.5 stepsize: 4", lambda b: b / (1 + np.exp(0.5 * (5 - 4))), 1),
}


@pytest.mark.parametrize("policy", POLICIES)
def test_each_learning_rate_policy_is_computed_from_the_iteration(policy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings, rate, next_step = POLICIES[policy]
    state, _ = _snapshot_copy(tmp_path, "sgd", "bp")  # iteration 5, current step 1
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'type: "SGD" base_lr: 0.01 momentum: 0 weight_decay: 0 '
                      f'lr_policy: "{policy}" {settings}\n')
    path = tmp_path / "model.onnx"
    blobcast.convert(state, path, solver=solver)
    gradients = {f"{layer}/param{i}": np.ones(s, np.float32) for (layer, i), s in zip(
        PARAMS, [(4, 1, 3, 3), (4,), (16, 100), (16,), (10, 16), (10,)])}
    after = blobcast.training_step(path, gradients)
    # momentum 0 and a gradient of ones: the new history is the local rate itself
    expected = np.float32(rate(np.float64(np.float32(0.01))))
    np.testing.assert_allclose(after["conv1/param0.momentum"], expected, rtol=1e-6)
    np.testing.assert_allclose(after["conv1/param1.momentum"], expected * np.float32(2), rtol=1e-6)
    assert int(after.get("solver.current_step", 1)) == next_step


def test_inspect_shows_the_training_state(tmp_path):
    path, _ = _step_model("adam", tmp_path)
    from blobcast.app.inspect import inspect_file

    facts = inspect_file(str(path))
    training = facts["training"]
    assert training["solver_type"] == "Adam" and training["iter"] == 3
    assert training["history_count"] == 12
    assert [t["role"] for t in training["history"][0]["tensors"]] == ["first moment (m)",
                                                                      "second moment (v)"]
    model = blobcast.load(path)
    assert len(model.params()) == 6 and not model.states()
    assert len(blobcast.optimizer_state(model)) == 12


def test_a_state_converts_to_onnx_only_with_its_solver(tmp_path):
    with pytest.raises(blobcast.BlobcastError, match="--solver"):
        blobcast.convert(STEPS / "sgd_iter_3.solverstate", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_an_onnx_model_without_training_has_no_state_to_restore(tmp_path):
    plain = tmp_path / "plain.onnx"
    blobcast.convert(STEPS / "sgd_iter_3.caffemodel", plain)
    with pytest.raises(blobcast.FormatError, match="no Caffe training state"):
        blobcast.convert(plain, tmp_path / "back.solverstate")
    assert not (tmp_path / "back.solverstate").exists()


@pytest.mark.parametrize("key,value,problem", [
    ("caffe.params", "[[0, 0, \"nowhere\", null, [1]]]", "does not hold"),
    ("caffe.params", "[[0, 0, \"conv1/param0\", null]]", "not \\[layer, blob"),
    ("caffe.params", "{not json", "not JSON"),
    ("caffe.history", "[\"conv1/param0.momentum\", \"missing\"]", "does not hold"),
    ("caffe.net", "!!!", "base64"),
])
def test_damaged_training_metadata_is_one_clear_error(key, value, problem, tmp_path):
    path, _ = _step_model("sgd", tmp_path)
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save(model, path)
    with pytest.raises(blobcast.FormatError, match=problem) as caught:
        blobcast.load(path)
    assert str(path) in str(caught.value)


def test_the_command_line_round_trip_and_its_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from blobcast.cli import app

    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    state = STEPS / "nesterov_iter_3.solverstate"
    result = cli.invoke(app, ["convert", str(state), "net.onnx", "--json"])
    assert result.exit_code == 2
    failure = json.loads(result.stdout)
    assert failure["ok"] is False and "--solver" in failure["error"]
    assert not (tmp_path / "net.onnx").exists()
    result = cli.invoke(app, ["convert", str(state), "net.onnx", "--solver",
                              str(STEPS / "nesterov_solver.prototxt")])
    assert result.exit_code == 0, result.output
    assert "training state read back bit-exact" in result.stdout
    result = cli.invoke(app, ["inspect", "net.onnx"])
    assert "training: Nesterov, iteration 3" in result.stdout
    result = cli.invoke(app, ["convert", "net.onnx", "nesterov_iter_3.solverstate",
                              "--weights", "nesterov_iter_3.caffemodel", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["weights"]["check"] == "bit-exact"
    assert (tmp_path / "nesterov_iter_3.solverstate").read_bytes() == state.read_bytes()
    assert (tmp_path / "nesterov_iter_3.caffemodel").read_bytes() == \
        (STEPS / "nesterov_iter_3.caffemodel").read_bytes()


BN_NET = """
name: "bn"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 5 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 3 } }
"""


def test_statistics_and_multiplier_groups_follow_caffe(tmp_path):
    """BatchNorm statistics (lr_mult 0, decay_mult 1) get a zero gradient and no
    weight change, but their Adam moments still take the weight decay term, as
    Caffe's Regularize and AdamSolver do; lr_mult/decay_mult groups each get a node."""
    from blobcast.solver import SolverState, learnable_slots
    from blobcast.training import Training

    from ..netgen import with_random_weights

    model = with_random_weights(BN_NET, {"data": (4, 3, 6, 6), "label": (4,)}, seed=3)
    model.layers.append(blobcast.Layer("loss", "SoftmaxWithLoss", bottoms=["fc", "label"],
                                       tops=["loss"]))
    rng = np.random.RandomState(4)
    for layer in model.layers:  # statistics must be positive; scale factor 1
        if layer.type == "BatchNorm":
            layer.blobs[1] = blobcast.Blob(np.abs(layer.blobs[1].data.numpy()) + 0.5)
            layer.blobs[2] = blobcast.Blob(np.ones(1, np.float32))
    slots = learnable_slots(model)
    history = [rng.uniform(0.01, 0.1, s.shape).astype(np.float32) for _ in range(2) for s in slots]
    from blobcast.converters.prototxt import read_solver

    solver = tmp_path / "solver.prototxt"
    solver.write_text('type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8 '
                      'lr_policy: "fixed" weight_decay: 0.01\n')
    model.training = Training(read_solver(str(solver)), SolverState(iter=7, history=history))
    path = tmp_path / "bn.onnx"
    blobcast.save(model, path)
    info = onnx.load(path).training_info[0]
    adams = [n for n in info.algorithm.node if n.op_type == "Adam"]
    # (lr 1, decay 1): conv w, scale, fc; (2, 0): conv b; (0, 1): the three statistics
    assert sorted((len(n.input) - 2) // 4 for n in adams) == [1, 3, 5]
    assert sorted(round(a.f, 4) for n in adams for a in n.attribute
                  if a.name == "norm_coefficient") == [0.0, 0.01, 0.01]
    grads = {f"{s.layer}/param{s.index}": rng.normal(0, 1, s.shape).astype(np.float32)
             for s in slots}
    after = blobcast.training_step(path, grads)
    names = {(s.layer, s.index): i for i, s in enumerate(slots)}
    for index in range(3):
        statistic = next(layer for layer in model.layers if layer.type == "BatchNorm").blobs[index]
        value = statistic.data.numpy()
        np.testing.assert_array_equal(after[f"bn/param{index}"], value)
        m = history[names[("bn", index)]]
        expected_m = np.float32(0.9) * m + np.float32(0.1) * (np.float32(0.01) * value)
        np.testing.assert_allclose(after[f"bn/param{index}.adam_m"], expected_m, rtol=1e-6)
    back = blobcast.load(path)
    assert back.training.state.iter == 7
    assert all(np.array_equal(a, b.numpy()) and a.shape == b.shape
               for a, b in zip(history, back.training.state.history))
    blobcast.save(model, tmp_path / "before.caffemodel")
    blobcast.save(back, tmp_path / "after.caffemodel")  # Scale's blob held as C x 1 x 1 in ONNX
    assert (tmp_path / "before.caffemodel").read_bytes() == (tmp_path / "after.caffemodel").read_bytes()


def test_shared_weights_stay_one_parameter_with_one_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shared = CAFFE / "shared" / "snapshots"
    (tmp_path / "snapshots").mkdir()
    for suffix in ("solverstate", "caffemodel"):
        shutil.copy(shared / f"shared_bp_iter_4.{suffix}", tmp_path / "snapshots")
    state, weights = (tmp_path / "snapshots" / f"shared_bp_iter_4.{s}" for s in ("solverstate", "caffemodel"))
    original = state.read_bytes(), weights.read_bytes()
    blobcast.convert(state, "shared.onnx", solver=CAFFE / "shared" / "solver_shared_bp.prototxt")
    info = onnx.load("shared.onnx").training_info[0]
    history = [b.key for b in info.update_binding if b.key.endswith(".momentum")]
    assert len(history) == len(blobcast.load(state).history) == 3
    state.unlink()
    weights.unlink()
    blobcast.convert("shared.onnx", state, weights=weights)
    assert (state.read_bytes(), weights.read_bytes()) == original


@pytest.mark.parametrize("run", ["sgd_clip", "adadelta"])
def test_a_forks_extra_state_fields_come_back(run, tmp_path, monkeypatch):
    """The SSD fork's states end with two fields BVLC does not have
    (steps/MANIFEST.md): they ride in the ONNX metadata and come back."""
    monkeypatch.chdir(tmp_path)
    source = STEPS / f"{run}_iter_3.solverstate"
    assert bytes.fromhex("2dffff7f7f30") in source.read_bytes()[-12:]  # minimum_loss, iter_last_event
    blobcast.convert(source, "m.onnx", solver=STEPS / f"{run}_solver.prototxt")
    blobcast.convert("m.onnx", f"{run}_iter_3.solverstate", weights=f"{run}_iter_3.caffemodel")
    assert (tmp_path / f"{run}_iter_3.solverstate").read_bytes() == source.read_bytes()
