"""Each solver type's own update against one real Caffe step, and the registry."""

from dataclasses import dataclass

import numpy as np
import pytest

import blobcast
from blobcast.converters.prototxt import read_solver
from blobcast.solver import learnable_params
from blobcast.solvers import SOLVER_TYPES, apply_update, learning_rate, register, solver_type_of
from blobcast.solvers.base import SolverType

from ..conftest import ROOT

STEPS = ROOT / "fixtures" / "steps"  # one real update (t=3 -> t=4) per run; its MANIFEST.md
RUNS = sorted(path.name[: -len("_solver.prototxt")] for path in STEPS.glob("*_solver.prototxt"))


def _run_of_type(name: str) -> str:
    """The golden run of a solver type: the one named after it."""
    return name.lower()


def _caffes_step(run: str):
    solver = read_solver(str(STEPS / f"{run}_solver.prototxt"))
    model = blobcast.load(STEPS / f"{run}_iter_3.caffemodel")
    params = learnable_params(model)
    with np.load(STEPS / f"{run}.npz") as recorded:
        recorded = dict(recorded)
    keys = [f"{layer.name}/{index}" for layer, index in params]
    sets = len(SOLVER_TYPES[solver_type_of(solver)].history)
    history = [recorded[f"hist_before/{k}"] for k in range(sets * len(keys))]
    ours = apply_update(solver, [recorded[f"w_before/{k}"] for k in keys],
                        [recorded[f"grad/{k}"] for k in keys], history,
                        lr_mults=[layer.lr_mult(i) for layer, i in params],
                        decay_mults=[layer.decay_mult(i) for layer, i in params],
                        iteration=int(recorded["iter_before"]),
                        current_step=int(recorded["current_step_before"]))
    caffes = [recorded[f"w_after/{k}"] for k in keys] + [
        recorded[f"hist_after/{k}"] for k in range(len(history))]
    return ours, caffes, recorded


def _assert_caffes(ours: list, caffes: list):
    for k, (mine, theirs) in enumerate(zip(ours, caffes)):
        assert mine.dtype == np.float32 and mine.shape == theirs.shape, k
        # Caffe's BLAS fuses a*x + y into one rounding where NumPy rounds twice
        # (steps/MANIFEST.md, the "plain" model): float32 round-off on the
        # tensor's scale, no more, and most values bit for bit.
        assert np.abs(mine - theirs).max() <= 2 * np.spacing(np.abs(theirs).max()), k
        assert np.mean(mine == theirs) > 0.5, k


@pytest.mark.parametrize("name", list(SOLVER_TYPES))
def test_each_solver_types_update_is_caffes(name):
    run = _run_of_type(name)  # a new solver type brings its own real Caffe step
    assert solver_type_of(read_solver(str(STEPS / f"{run}_solver.prototxt"))) == name
    ours, caffes, recorded = _caffes_step(run)
    assert ours.rate == np.float32(recorded["lr"])
    assert (ours.iteration, ours.current_step) == (int(recorded["iter_after"]),
                                                   int(recorded["current_step_after"]))
    _assert_caffes(ours.values + ours.history, caffes)


@pytest.mark.parametrize("run", [run for run in RUNS if run not in map(_run_of_type, SOLVER_TYPES)])
def test_schedule_clipping_and_regularization_are_caffes(run):
    ours, caffes, recorded = _caffes_step(run)
    assert ours.rate == np.float32(recorded["lr"])
    _assert_caffes(ours.values + ours.history, caffes)


@pytest.mark.parametrize("policy,settings,rate,step", [
    # Caffe's rate at iteration 5 with current_step 1, and the step after
    ("fixed", {}, lambda b: b, 1),
    ("step", {"gamma": 0.5, "stepsize": 2}, lambda b: b * 0.5 ** 2, 2),
    ("exp", {"gamma": 0.9}, lambda b: b * 0.9 ** 5, 1),
    ("inv", {"gamma": 0.1, "power": 0.75}, lambda b: b * (1 + 0.1 * 5) ** -0.75, 1),
    ("multistep", {"gamma": 0.1, "stepvalue": [2, 5, 8]}, lambda b: b * 0.1 ** 2, 2),
    ("poly", {"power": 2, "max_iter": 20}, lambda b: b * (1 - 5 / 20) ** 2, 1),
    ("sigmoid", {"gamma": -0.5, "stepsize": 4}, lambda b: b / (1 + np.exp(0.5 * (5 - 4))), 1),
])
def test_each_learning_rate_policy(policy, settings, rate, step):
    solver = blobcast.Message("SolverParameter")
    solver.base_lr, solver.lr_policy = 0.01, policy
    for field, value in settings.items():
        setattr(solver, field, value)
    found, current_step = learning_rate(solver, 5, 1)
    assert found.dtype == np.float32 and current_step == step
    np.testing.assert_allclose(found, rate(np.float64(np.float32(0.01))), rtol=1e-6)


def test_a_solver_type_is_registered_once():
    @dataclass(frozen=True)
    class Twin(SolverType):
        name = "Adam"

    with pytest.raises(RuntimeError, match="registered twice"):
        register(Twin)
    assert SOLVER_TYPES["Adam"].name == "Adam"


def test_the_legacy_solver_type_enum_names_each_type(tmp_path):
    from blobcast.schema import ENUMS

    for name in ENUMS["SolverParameter.SolverType"]:
        path = tmp_path / f"{name}.prototxt"
        path.write_text(f"base_lr: 0.01 solver_type: {name}\n")
        solver = read_solver(str(path))
        assert solver.type in SOLVER_TYPES and solver.type.upper() == name
        assert not solver.has("solver_type")


def test_a_step_refuses_history_that_does_not_fit():
    solver = blobcast.Message("SolverParameter")
    solver.type, solver.base_lr, solver.lr_policy = "Adam", 0.01, "fixed"
    one = [np.ones(3, np.float32)]
    with pytest.raises(blobcast.FormatError, match="a Adam step takes one gradient and 2 history"):
        apply_update(solver, one, one, one, lr_mults=[1], decay_mults=[1], iteration=0)
    solver.type = "Lion"
    with pytest.raises(blobcast.FormatError, match="unknown solver type 'Lion'"):
        apply_update(solver, one, one, one, lr_mults=[1], decay_mults=[1], iteration=0)
