"""The schedule: which layers a phase runs, its inputs and outputs, and what
it leaves out, without the engine."""

from __future__ import annotations

import blobcast
from blobcast.schedule import Schedule

from ..conftest import CAFFE, ROOT


def test_a_training_net_runs_without_its_loss_and_reads_its_data_layer_s_tops():
    schedule = Schedule(blobcast.load(CAFFE / "lenet" / "lenet_train.prototxt"))
    assert list(schedule.inputs) == ["data"] and "label" in schedule.declared_inputs
    assert [layer.name for layer in schedule.layers] == ["conv1", "pool1", "ip1", "relu1", "ip2"]
    assert [(s.name, s.reason.split(":")[0]) for s in schedule.skipped] == [
        ("data", "data layer"), ("loss", "loss/evaluation layer"), ("label", "read only by layers "
                                                                    "that are not run (losses, accuracy)")]
    assert schedule.outputs == ["ip2"]


def test_an_input_of_unknown_shape_is_asked_for_with_what_the_settings_say():
    snapshot = ROOT / "fixtures" / "real" / "cifar10-full-snapshot" / "cifar10_full_iter_10000.caffemodel"
    schedule = Schedule(blobcast.load(snapshot))
    assert schedule.inputs["data"] is None
    line = str(schedule.shape_unknown("data"))
    assert "[100, 3, ?, ?]" in line and "--input data=SHAPE" in line


def test_layers_the_engine_cannot_run_are_left_out_with_their_reason():
    model = blobcast.load(CAFFE / "lenet" / "lenet_deploy.prototxt")
    model.layers[2].type = "NoSuchLayer"
    schedule = Schedule(model, skip_unrunnable=True)
    assert schedule.unrun == [model.layers[2]]
    assert schedule.uncomputed  # every output depends on it
    assert schedule.in_order == [layer for layer in model.layers if layer.type != "Input"]


def test_formats_import_no_engine():
    # Converters read the schedule and the shapes; running a net is the engine's alone.
    from .layers.test_layer_specs import _import_graph, _own_modules

    graph = _import_graph(_own_modules())
    engine = [(module, target) for module, targets in graph.items()
              if module.startswith("blobcast.converters") for target in targets
              if target == "blobcast.engine" or target.startswith("blobcast.engine.")]
    assert engine == []
    for module in ("blobcast.schedule", "blobcast.shapes", "blobcast.values"):
        assert not any(target.startswith("blobcast.engine") for target in graph[module])
