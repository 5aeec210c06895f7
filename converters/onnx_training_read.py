"""Reading back what onnx_training.py wrote: the Caffe training net (every
phase, from metadata), its weights from the graph's initializers and its
solver state from the training info. Everything in the metadata is checked
before it is used: it comes from the file."""

from __future__ import annotations

import base64
import json

import numpy as np

from blobcast.errors import FormatError
from blobcast.model import Blob, Model
from blobcast.solver import SolverState, learnable_slots
from blobcast.tensor import as_tensor, reshaped
from blobcast.training import Training

from . import caffe_pb2 as pb
from .caffe_net import model_from_net
from .caffemodel import decode_net
from .messages import message_from_pb
from .onnx_training import (
    CURRENT_STEP,
    ITERATION,
    META_HDF5_TIMES,
    META_HISTORY,
    META_LEARNED_NET,
    META_NET,
    META_PARAMS,
    META_SOLVER,
    META_STATE_EXTRA,
)
from .prototxt import parse_text
from .upgrade import upgrade_net


def _damaged(problem: str, path: str) -> FormatError:
    return FormatError(f"its Caffe training metadata is damaged: {problem}", path)


def _scalar_int(values: dict, name: str, path: str) -> int:
    value = values.get(name)
    if value is None or np.asarray(value).size != 1 or np.asarray(value).dtype.kind not in "iu":
        raise _damaged(f"{name} is not one integer", path)
    number = int(np.asarray(value).reshape(-1)[0])
    if not -2**31 <= number < 2**31:  # int32 in SolverState
        raise _damaged(f"{name} = {number} is out of Caffe's range", path)
    return number


def _places(text: str, layer_count: int, values: dict, path: str) -> list:
    try:
        places = json.loads(text)
    except ValueError as error:
        raise _damaged(f"{META_PARAMS} is not JSON ({error})", path) from None
    if not isinstance(places, list):
        raise _damaged(f"{META_PARAMS} is not a list", path)
    for place in places:
        ok = (isinstance(place, list) and len(place) == 5
              and isinstance(place[4], list) and all(isinstance(d, int) and d >= 0 for d in place[4])
              and all(isinstance(v, int) and not isinstance(v, bool) for v in place[:2])
              and 0 <= place[0] < layer_count and 0 <= place[1] < 64 and isinstance(place[2], str)
              and (place[3] is None or (isinstance(place[3], list) and len(place[3]) == 4
                                        and all(isinstance(d, int) and d >= 0 for d in place[3]))))
        if not ok:
            raise _damaged(f"{META_PARAMS} holds an entry that is not [layer, blob, value, "
                           "legacy shape, shape]", path)
        if place[2] not in values:
            raise _damaged(f"blob {place[1]} of layer {place[0]} is value {place[2]!r}, which the "
                           "model does not hold", path)
        if int(np.prod(place[4])) != int(np.prod(np.shape(values[place[2]]))):
            raise _damaged(f"blob {place[1]} of layer {place[0]} has shape {place[4]}, but value "
                           f"{place[2]!r} holds {np.shape(values[place[2]])}", path)
    return places


def read_training(onnx_model, values: dict, state_values: dict, path: str) -> Model:
    """The Caffe training net, its weights and its Training, from a model
    blobcast wrote with training info."""
    meta = {prop.key: prop.value for prop in onnx_model.metadata_props}
    missing = [key for key in (META_SOLVER, META_NET, META_PARAMS, META_HISTORY) if key not in meta]
    if missing:
        raise _damaged("no " + ", ".join(missing), path)
    known = {**values, **state_values}
    try:
        net_bytes = base64.b64decode(meta[META_NET], validate=True)
        extra_bytes = base64.b64decode(meta.get(META_STATE_EXTRA, ""), validate=True)
    except ValueError as error:
        raise _damaged(f"not base64 ({error})", path) from None
    net, v1_blobs, v2_blobs = decode_net(net_bytes, path)
    if len(net.layers) or any(v2_blobs):
        raise _damaged("the stored net is not a blob-free V2 NetParameter", path)
    places = _places(meta[META_PARAMS], len(net.layer), known, path)
    blobs: list[list] = [[] for _ in net.layer]
    made: dict = {}
    for li, bi, name, legacy, shape in sorted(places, key=lambda p: (p[0], p[1])):
        if bi != len(blobs[li]):
            raise _damaged(f"layer {li}'s blobs are not numbered 0, 1, ...", path)
        if name not in made:
            made[name] = Blob(reshaped(as_tensor(known[name]), shape),
                              legacy_shape=tuple(legacy) if legacy else None)
        blobs[li].append(made[name])
    notes: list[str] = []
    upgrade_net(net, [], blobs, notes)
    model = model_from_net(net, blobs, source_format="onnx", source_version="V2", notes=notes,
                           path=path)
    try:
        history_names = json.loads(meta[META_HISTORY])
    except ValueError as error:
        raise _damaged(f"{META_HISTORY} is not JSON ({error})", path) from None
    if not isinstance(history_names, list) or not all(
            isinstance(n, str) and n in known for n in history_names):
        raise _damaged(f"{META_HISTORY} names values the model does not hold", path)
    solver = message_from_pb(parse_text(meta[META_SOLVER], path, pb.SolverParameter))
    try:
        extra = message_from_pb(pb.SolverState.FromString(extra_bytes))
    except Exception as error:  # protobuf's DecodeError and friends
        raise _damaged(f"the state's own fields do not parse ({error})", path) from None
    slots = learnable_slots(model)
    history = []
    for k, name in enumerate(history_names):  # stored in the graph's shape of the parameter
        tensor = as_tensor(known[name])
        shape = slots[k % len(slots)].shape if slots else None
        if shape is not None and tensor.size == int(np.prod(shape)):
            tensor = reshaped(tensor, shape)
        history.append(tensor)
    times = _hdf5_times(meta.get(META_HDF5_TIMES), path)
    state = SolverState(iter=_scalar_int(known, ITERATION, path),
                        current_step=_scalar_int(known, CURRENT_STEP, path),
                        learned_net=meta.get(META_LEARNED_NET, ""),
                        history=history, extra=extra, hdf5_times=times,
                        source_path=path, source_format="onnx")
    model.training = Training(solver, state)
    model.training.check(model, path)
    return model


def _hdf5_times(text: str | None, path: str) -> dict[str, int]:
    if text is None:
        return {}
    try:
        times = json.loads(text)
    except ValueError as error:
        raise _damaged(f"{META_HDF5_TIMES} is not JSON ({error})", path) from None
    if not isinstance(times, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32
            for k, v in times.items()):
        raise _damaged(f"{META_HDF5_TIMES} is not a map of names to times", path)
    return times
