"""Every runner implements the runner base class: derived from the classes
themselves, so a new runner without a case here fails."""

import numpy as np
import pytest

import blobcast
from blobcast.check import Runner, forward_what_runs, runner_inputs

from ...conftest import CAFFE

SNAPSHOT = CAFFE / "lenet" / "snapshots" / "adadelta_bp_iter_5.caffemodel"
DEPLOY = CAFFE / "lenet" / "lenet_deploy.prototxt"
ENGINE_NAMES = {"blobcast engine", "onnxruntime", "onnx reference evaluator", "opencv"}


def _all_runner_classes() -> set:
    import blobcast.converters.onnx_runner  # noqa: F401  (each defines a runner)
    import blobcast.converters.opencv_check  # noqa: F401
    import blobcast.engine  # noqa: F401

    found, pending = set(), [Runner]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__.startswith("blobcast."):
                found.add(subclass)
                pending.append(subclass)
    return found


def _engine(tmp_path):
    from blobcast.check import runner_for

    return runner_for(blobcast.load(SNAPSHOT, prototxt=DEPLOY))


def _onnx(tmp_path):
    pytest.importorskip("onnx")
    from blobcast.check import runner_for

    path = tmp_path / "lenet.onnx"
    blobcast.convert(SNAPSHOT, path, prototxt=DEPLOY, forward_check=False)
    return runner_for(str(path))


def _opencv(tmp_path):
    pytest.importorskip("cv2")
    from blobcast.converters.opencv_check import OpencvRunner

    path = tmp_path / "lenet.caffemodel"
    model = blobcast.load(SNAPSHOT, prototxt=DEPLOY)
    blobcast.save(model, path)
    engine = _engine(tmp_path)
    return OpencvRunner(model, str(path), engine.inputs, engine.outputs)


MAKERS = {"Net": _engine, "OnnxRunner": _onnx, "OpencvRunner": _opencv}


def test_every_runner_class_has_a_case_here():
    assert {cls.__name__ for cls in _all_runner_classes()} == set(MAKERS)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_runner_implements_the_base(name, tmp_path):
    cls = next(c for c in _all_runner_classes() if c.__name__ == name)
    assert not cls.__abstractmethods__
    assert cls.part in ("layer", "node") and cls.takes <= set(__import__(
        "blobcast.check", fromlist=["OPTION_FLAGS"]).OPTION_FLAGS)
    runner = MAKERS[name](tmp_path)
    assert isinstance(runner, Runner) and type(runner) is cls
    assert runner.engine_name in ENGINE_NAMES and runner.device in ("cpu", "gpu")
    assert isinstance(runner.inputs, dict) and all(shape is None or isinstance(shape, list)
                                                   for shape in runner.inputs.values())
    assert isinstance(runner.outputs, list) and runner.outputs
    assert isinstance(runner.uncomputed, dict) and isinstance(runner.skipped, list)
    assert runner.shape_unknown is None or callable(runner.shape_unknown)
    assert isinstance(runner.runtime, str)
    inputs = runner_inputs(runner, {}, seed=0)
    outputs = forward_what_runs(runner, inputs)
    assert set(outputs) == set(runner.outputs)
    assert all(np.all(np.isfinite(np.asarray(value))) for value in outputs.values())


def test_the_base_cannot_run_anything():
    with pytest.raises(TypeError):
        Runner()
