"""The ONNX format's hooks (its record is onnx_names.py): reading and
writing are onnx_format's; a written file is checked by onnx's checker and
run by its own runtime, not read back; a replaced model's external data
files are its companions; `inspect` shows the graph as ONNX; a file carrying Caffe's training
takes a training step."""

from __future__ import annotations

from blobcast.check.compare import model_differences, state_differences
from blobcast.errors import CheckFailed
from blobcast.model import Model

from . import onnx_format
from .formats import Companions
from .onnx_format import read, write  # noqa: F401  (the format's read and write hooks)
from .onnx_format import run_training_step as training_step  # noqa: F401  (a hook too)


def _training_read_back(model: Model, temporary: str) -> str:
    """The written training snapshot reads back to the same weights and state."""
    written = read(temporary)
    problems = state_differences(model.training.state, written.training.state)
    problems += model_differences(model, written, architecture=True)
    if problems:
        raise CheckFailed("the training state read back from the written model differs: "
                          + "; ".join(problems[:5]))
    return "training state read back bit-exact"


def verify_written(obj, temporary: str, _prototxt: str | None = None):
    """(onnx's checker's verdict, None): the file's own runtime runs it in
    the forward check, so nothing is read back but a training state."""
    check = onnx_format.check(temporary)
    if isinstance(obj, Model) and obj.training is not None:
        check += "; " + _training_read_back(obj, temporary)
    return check, None


def companions(destination: str) -> Companions:
    return Companions(replaced=lambda: onnx_format.replaced_data_remover(destination))


def inspect(path: str) -> dict:
    from .onnx_inspect import onnx_facts

    graph = onnx_facts(path)
    return {"name": graph["graph_name"], "onnx": graph}


def runner(path: str, *, device: str = "cpu", **options):
    """onnxruntime on the file; an option it does not take is refused, naming its flag."""
    from blobcast.check.runner import refuse_options

    from .onnx_runner import OnnxRunner

    refuse_options(OnnxRunner, options, path)
    return OnnxRunner(path, device=device)
