"""What the installed onnx and onnxruntime can take: the opset blobcast
writes by default, and how a model is handed to onnxruntime.

A model stamped with an opset newer than the installed onnx knows is written
with the wrong IR version and fails onnx's checker; one newer than the
installed onnxruntime runs is refused by it, so the forward check fails. The
default opset is the newest all three (blobcast, onnx, onnxruntime) take,
lowered where that onnxruntime is known to compute one of the net's layers
wrongly at newer opsets (_RUNTIME_DEFECTS).
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from importlib import metadata

import onnx

from blobcast.errors import BlobcastWarning

# The newest opset each onnxruntime release runs (found by stamping a model
# with each opset and opening it; releases after the last run its opset).
_RUNTIME_NEWEST_OPSET = [((1, 17), 20), ((1, 18), 21), ((1, 21), 22), ((1, 23), 23),
                         ((1, 24), 25), ((1, 25), 26)]
_RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                          "onnxruntime-directml", "onnxruntime-silicon")


def _release(version: str) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else None


@lru_cache(maxsize=1)
def installed_runtime() -> str | None:
    """The installed onnxruntime's version, read from its metadata (importing
    onnxruntime takes 0.15 s); None when none is installed."""
    for name in _RUNTIME_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def runtime_newest_opset(version: str | None) -> int | None:
    """The newest opset that onnxruntime `version` runs; None when unknown."""
    release = _release(version) if version else None
    if release is None:
        return None
    newest = None
    for first, opset in _RUNTIME_NEWEST_OPSET:
        if release >= first:
            newest = opset
    return newest


def _pads_an_average(layer) -> bool:
    if layer.type != "Pooling" or not layer.spec.has("pooling_param"):
        return False
    settings = layer.spec.pooling_param
    return settings.pool == "AVE" and not settings.global_pooling


# Releases that run an opset but compute one of its ops wrongly for a Caffe
# layer: (first, last release, which layers, the newest opset computed right,
# what goes wrong). Found by running blobcast's exports of padded AVE pooling
# (kernel 3, stride 2, pad 1 on 8x8: ONNX pads [1, 1, 2, 2]) in each release:
# 1.17-1.20 and 1.25-1.32 agree with Caffe at every opset they run.
_RUNTIME_DEFECTS = [
    ((1, 21), (1, 24), _pads_an_average, 18,
     "computes AveragePool from opset 19 on wrongly where windows reach into end padding "
     "(Caffe's ceil-rounded AVE pooling)"),
]


def runtime_defect(layers, version: str | None = None) -> tuple[int, str] | None:
    """(the newest opset to write, why) where the installed onnxruntime
    (or `version`) computes an op of these layers wrongly at newer opsets."""
    version = version or installed_runtime()
    release = _release(version or "")
    if release is None:
        return None
    for first, last, applies, opset, defect in _RUNTIME_DEFECTS:
        if first <= release <= last and any(applies(layer) for layer in layers):
            return opset, f"onnxruntime {version} {defect}"
    return None


def default_opset(blobcast_newest: int, layers=()) -> int:
    """The newest opset blobcast, the installed onnx and onnxruntime all take,
    and at which that onnxruntime computes these layers right (said in a
    warning where that lowers it)."""
    candidates = [blobcast_newest, onnx.defs.onnx_opset_version()]
    runtime = runtime_newest_opset(installed_runtime())
    if runtime is not None:
        candidates.append(runtime)
    chosen = min(candidates)
    defect = runtime_defect(layers)
    if defect is not None and defect[0] < chosen:
        warnings.warn(f"writing ONNX opset {defect[0]}, not {chosen}: {defect[1]}",
                      BlobcastWarning, stacklevel=3)
        chosen = defect[0]
    return chosen


def check_runtime_computes(opset: int, layers) -> None:
    """A warning where an opset asked for is one the installed onnxruntime
    computes these layers wrongly at (the forward check would fail)."""
    defect = runtime_defect(layers)
    if defect is not None and opset > defect[0]:
        warnings.warn(f"--opset {opset}: {defect[1]}; the forward check will fail: write "
                      f"--opset {defect[0]} or upgrade onnxruntime", BlobcastWarning, stacklevel=3)


def runtime_loads(version: str | None, numpy_version: str) -> bool:
    """Whether an installed onnxruntime can be imported at all: 1.17 (which,
    unlike 1.18, does not require NumPy 1) was built for NumPy 1, and under
    NumPy 2 its import fails after printing NumPy's traceback."""
    release, numpy_release = _release(version or ""), _release(numpy_version)
    if release is None:
        return False
    return not (release < (1, 18) and numpy_release is not None and numpy_release >= (2, 0))


def maps_values_in_place(version: str) -> bool:
    """Whether this onnxruntime can be given the graph alone and the model's
    folder for its external data (1.21 and newer; older ones need the file's
    path and read the file themselves, values and all)."""
    release = _release(version)
    return release is not None and release >= (1, 21)
