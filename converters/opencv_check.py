"""The written net run in OpenCV 4's Caffe importer, for `--target opencv`:
the target itself, as an independent engine, beside blobcast's.

OpenCV (opencv-python-headless 4.x) is optional: without it the check is
skipped with a note. Only the outputs are compared, on seeded inputs.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from blobcast.check.runner import Runner
from blobcast.errors import BlobcastError, CheckFailed
from blobcast.model import Layer, Model


class OpencvRunner(Runner):
    """The written .caffemodel run by OpenCV 4's Caffe importer: its outputs
    only (OpenCV keeps no other blob), on the CPU; it takes no option."""

    engine_name = "opencv"
    takes = frozenset()

    def __init__(self, model: Model, caffemodel_path: str, inputs: dict, outputs: list[str]):
        self.written, self.path = model, caffemodel_path
        self.inputs, self.outputs = dict(inputs), list(outputs)
        self.uncomputed, self.skipped, self.device = {}, [], "cpu"

    def forward(self, inputs: dict, keep_all: bool = False, tolerate_missing: bool = False) -> dict:
        if keep_all:
            raise BlobcastError("OpenCV gives a net's outputs only; compare outputs", self.path)
        return run_in_opencv(self.written, self.path, inputs, self.outputs)


def run_in_opencv(model, caffemodel_path: str, inputs: dict, outputs: list[str]) -> dict:
    """The outputs OpenCV computes for `inputs` from the written .caffemodel,
    read with the net's own prototxt (written to a temporary folder)."""
    import cv2

    from .prototxt import architecture_text

    # OpenCV names outputs by the layer that makes them, which gives its first
    # top: an output that is another top gets a Split of its own to name.
    makers = {}
    for layer in model.layers:
        for index, top in enumerate(layer.tops):
            makers[top] = (layer.name, index)
    taken = {layer.name for layer in model.layers}
    layers = list(model.layers)
    for number, name in enumerate(outputs):
        if makers.get(name, (None, 1))[1] != 0:
            alias = f"blobcast_output_{number}"
            while alias in taken:
                alias += "_"
            layers.append(Layer(alias, "Split", bottoms=[name], tops=[alias]))
            makers[name] = (alias, 0)
    with tempfile.TemporaryDirectory(prefix="blobcast-opencv-") as folder:
        prototxt = os.path.join(folder, "deploy.prototxt")
        with open(prototxt, "w", encoding="utf-8") as handle:
            handle.write(architecture_text(Model(net=model.net, layers=layers)))
        try:
            net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel_path)
            for name, value in inputs.items():
                net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
            # OpenCV 4.14 names some layers (Convolution) after their top instead.
            known = set(net.getLayerNames())
            values = net.forward([makers[name][0] if makers[name][0] in known or name not in known
                                  else name for name in outputs])
        except cv2.error as error:
            problem = str(error).strip().splitlines()[-1] if str(error).strip() else "an OpenCV error"
            raise CheckFailed(f"OpenCV cannot run the written net: {problem}") from error
    return dict(zip(outputs, values))


def opencv_available() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True
