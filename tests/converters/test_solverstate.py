"""Solver state for every solver type, in both of Caffe's formats."""

import shutil

import h5py
import numpy as np
import pytest

import blobcast
from blobcast.converters import caffe_pb2 as pb
from blobcast.solver import learnable_slots, tie_history

from ..conftest import CAFFE, SOLVER_TYPES

SNAPSHOTS = CAFFE / "lenet" / "snapshots"
STATES = [(f"{t}_bp_iter_5", f"{t}_h5_iter_5", t) for t in SOLVER_TYPES]
STATES.append(("sgd_diff_bp_iter_3", "sgd_diff_h5_iter_3", "sgd"))


@pytest.mark.parametrize("binary,hdf5,kind", STATES, ids=lambda v: str(v))
def test_binary_and_hdf5_states_agree(binary, hdf5, kind):
    a = blobcast.load(SNAPSHOTS / f"{binary}.solverstate")
    b = blobcast.load(SNAPSHOTS / f"{hdf5}.solverstate.h5")
    assert (a.iter, a.current_step) == (b.iter, b.current_step)
    assert len(a.history) == len(b.history) == (12 if kind in ("adadelta", "adam") else 6)
    for x, y in zip(a.history, b.history):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert a.learned_net == f"snapshots/{binary}.caffemodel"


@pytest.mark.parametrize("binary,hdf5,kind", STATES, ids=lambda v: str(v))
def test_conversion_matches_caffes_own_file_of_each_format(binary, hdf5, kind, tmp_path):
    to_h5 = tmp_path / "state.solverstate.h5"
    blobcast.convert(SNAPSHOTS / f"{binary}.solverstate", to_h5)
    with h5py.File(to_h5) as ours, h5py.File(SNAPSHOTS / f"{hdf5}.solverstate.h5") as caffes:
        assert sorted(ours) == sorted(caffes) == ["current_step", "history", "iter", "learned_net"]
        for name in ("iter", "current_step"):
            assert ours[name].dtype == caffes[name].dtype and ours[name].shape == caffes[name].shape
            assert ours[name][()] == caffes[name][()]
        ours_type, caffes_type = ours["learned_net"].id.get_type(), caffes["learned_net"].id.get_type()
        assert ours_type.get_strpad() == caffes_type.get_strpad()
        assert ours_type.get_cset() == caffes_type.get_cset()
        assert ours["learned_net"].shape == caffes["learned_net"].shape == ()
        assert sorted(ours["history"], key=int) == sorted(caffes["history"], key=int)
        for key in caffes["history"]:
            assert ours["history"][key].dtype == caffes["history"][key].dtype
            np.testing.assert_array_equal(ours["history"][key][()], caffes["history"][key][()])
    to_binary = tmp_path / "state.solverstate"
    blobcast.convert(SNAPSHOTS / f"{hdf5}.solverstate.h5", to_binary)
    ours = pb.SolverState.FromString(to_binary.read_bytes())
    caffes = pb.SolverState.FromString((SNAPSHOTS / f"{binary}.solverstate").read_bytes())
    assert list(ours.history) == list(caffes.history)
    assert (ours.iter, ours.current_step) == (caffes.iter, caffes.current_step)


@pytest.mark.parametrize("binary,hdf5,kind", STATES, ids=lambda v: str(v))
def test_states_round_trip_bit_exact(binary, hdf5, kind, tmp_path):
    out = tmp_path / "same.solverstate"
    blobcast.save(blobcast.load(SNAPSHOTS / f"{binary}.solverstate"), out)
    assert out.read_bytes() == (SNAPSHOTS / f"{binary}.solverstate").read_bytes()
    back = tmp_path / "same.solverstate.h5"
    blobcast.convert(SNAPSHOTS / f"{hdf5}.solverstate.h5", back)
    # byte for byte too: each dataset keeps the modification time Caffe's HDF5 library gave it
    assert back.read_bytes() == (SNAPSHOTS / f"{hdf5}.solverstate.h5").read_bytes()
    original = blobcast.load(SNAPSHOTS / f"{hdf5}.solverstate.h5")
    again = blobcast.load(back)
    assert again.learned_net == original.learned_net
    for x, y in zip(original.history, again.history):
        assert x.numpy().tobytes() == y.numpy().tobytes()


def test_history_ties_to_params_in_caffes_order():
    state = blobcast.load(SNAPSHOTS / "adam_bp_iter_5.solverstate")
    net = blobcast.load(SNAPSHOTS / "adam_bp_iter_5.caffemodel")
    entries = tie_history(state, learnable_slots(net), "Adam")
    assert [(e.slot.layer, e.slot.index, e.set_index) for e in entries[:2]] == [
        ("conv1", 0, 0), ("conv1", 1, 0)]
    assert (entries[6].slot.layer, entries[6].set_index) == ("conv1", 1)
    with pytest.raises(blobcast.FormatError, match="a SGD state holds 1 history tensor.*6 for "
                                                   "this net's 6 parameters, but the state has 12"):
        tie_history(state, learnable_slots(net), "SGD")


def test_shared_params_have_one_history_entry():
    state = blobcast.load(CAFFE / "shared" / "snapshots" / "shared_bp_iter_4.solverstate")
    net = blobcast.load(CAFFE / "shared" / "snapshots" / "shared_bp_iter_4.caffemodel")
    slots = learnable_slots(net)
    assert [(s.layer, s.index) for s in slots] == [("ip_a", 0), ("ip_a", 1), ("ip_b", 1)]
    assert len(tie_history(state, slots)) == 3


def test_history_that_does_not_fit_the_net_names_both():
    state = blobcast.load(SNAPSHOTS / "sgd_bp_iter_5.solverstate")
    shared = blobcast.load(CAFFE / "shared" / "snapshots" / "shared_bp_iter_4.caffemodel")
    with pytest.raises(blobcast.FormatError, match=r"history tensor 0 has shape \[4, 1, 3, 3\] "
                                                   r"but its parameter 'ip_a' blob 0 has shape \[6, 6\]"):
        tie_history(state, learnable_slots(shared))
    zoo = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel")
    with pytest.raises(blobcast.FormatError, match="6 history tensors but the net has 30"):
        tie_history(state, learnable_slots(zoo))


def test_learned_net_found_beside_the_state_when_not_where_caffe_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not where Caffe ran: "snapshots/..." does not resolve
    state = blobcast.load(SNAPSHOTS / "sgd_bp_iter_5.solverstate")
    assert state.find_weights() == str(SNAPSHOTS / "sgd_bp_iter_5.caffemodel")
    lonely = tmp_path / "alone.solverstate"
    shutil.copy(SNAPSHOTS / "sgd_bp_iter_5.solverstate", lonely)
    state = blobcast.load(lonely)
    with pytest.raises(blobcast.FormatError, match="tried snapshots/sgd_bp_iter_5.caffemodel, "
                                                   ".*alone|tried snapshots/sgd_bp_iter_5.caffemodel"):
        state.require_weights()


def test_state_and_weights_move_between_formats_in_one_command(caffe_dir, monkeypatch):
    monkeypatch.chdir(caffe_dir / "lenet")  # where Caffe ran
    report = blobcast.convert("snapshots/adam_bp_iter_5.solverstate",
                              "snapshots/adam_moved.solverstate.h5",
                              weights="snapshots/adam_moved.caffemodel.h5")
    assert report.weights is not None and report.weights.check == "bit-exact"
    state = blobcast.load("snapshots/adam_moved.solverstate.h5")
    assert state.learned_net == "snapshots/adam_moved.caffemodel.h5"
    assert state.find_weights() == "snapshots/adam_moved.caffemodel.h5"
    moved = blobcast.load(state.find_weights())
    original = blobcast.load("snapshots/adam_bp_iter_5.caffemodel")
    for a, b in zip(original.owned_params(), moved.owned_params()):
        np.testing.assert_array_equal(a.blob.data.numpy(), b.blob.data.numpy())


def test_params_states_and_history_are_kept_apart():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel")
    state_keys = {ref.key for ref in model.states()}
    assert {"bn/0", "bn/1", "bn/2"} <= state_keys
    assert not state_keys & {ref.key for ref in model.params()}
    assert len(model.params()) + len(model.states()) == len(model.owned_params())
