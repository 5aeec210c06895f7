"""Caffe solver state: .solverstate (binary SolverState) and .solverstate.h5.

The HDF5 layout (on the container of hdf5_container.py) is
SGDSolver::SnapshotSolverStateToHDF5's: /iter and
/current_step as int32 datasets of shape (1,), /learned_net as a scalar
null-terminated ASCII string, /history/<i> for each history tensor.
"""

from __future__ import annotations

import h5py
import numpy as np
from google.protobuf.message import DecodeError

from blobcast.errors import FormatError
from blobcast.limits import check_allocation
from blobcast.solver import SolverState

from . import caffe_pb2 as pb
from .blobproto import BlobFormatError, decode_blob, encode_blob
from .hdf5_container import HDF5_MAGIC, FileMap, check_storage, child, float_tensor, members, open_hdf5
from .mapping import map_file
from .messages import fill_pb, message_from_pb
from .wire import WireError, iter_fields, length_delimited, splice_at_field, write_chunks

_HISTORY = 3


class BinaryFormat:
    NAME = "solverstate"
    SUFFIXES = (".solverstate",)
    DESCRIPTION = "a Caffe solver state (SolverState protobuf)"
    HOLDS = frozenset({"solver_state"})

    @staticmethod
    def read(path: str, **_options) -> SolverState:
        buf = map_file(path)
        stripped = bytearray()
        history = []
        try:
            for number, wire_type, tag_start, vstart, vend in iter_fields(buf, 0, len(buf)):
                if number == _HISTORY and wire_type == 2:
                    history.append(decode_blob(buf, vstart, vend, f"history {len(history)}"))
                else:
                    stripped += buf[tag_start:vend]
            message = pb.SolverState.FromString(bytes(stripped))
        except (WireError, DecodeError) as error:
            raise FormatError(f"not a valid Caffe solver state ({error})", path) from error
        except BlobFormatError as error:
            raise FormatError(str(error), path) from error
        if not message.HasField("iter") and not history and not message.HasField("learned_net"):
            raise FormatError("holds no iteration, weights name or history; not a Caffe "
                              "solver state", path)
        extra = message_from_pb(message)
        for name in ("iter", "current_step", "learned_net"):
            extra.clear(name)
        return SolverState(iter=message.iter, current_step=message.current_step,
                           learned_net=message.learned_net,
                           history=[blob.data for blob in history], extra=extra,
                           source_path=path, source_format=BinaryFormat.NAME)

    @staticmethod
    def write(state: SolverState, path: str, *, progress=None, **_options) -> None:
        from blobcast.model import Blob

        message = pb.SolverState()
        extra_unknown = state.extra.unknown_fields
        object.__setattr__(state.extra, "unknown_fields", b"")
        try:
            fill_pb(message, state.extra)
        finally:
            object.__setattr__(state.extra, "unknown_fields", extra_unknown)
        # Caffe sets all three explicitly (SnapshotSolverStateToBinaryProto).
        message.iter = state.iter
        message.learned_net = state.learned_net
        message.current_step = state.current_step
        history_chunks = []
        for tensor in state.history:
            chunks, length = encode_blob(Blob(tensor), write_diff=False)
            history_chunks += [length_delimited(_HISTORY, length), *chunks]
        known = message.SerializeToString()
        chunks = [*splice_at_field(known, _HISTORY, history_chunks), extra_unknown]
        write_chunks(path, chunks, progress)


def _scalar_dataset(handle, name: str, path: str):
    item = child(handle, name, path)
    if item is None:
        return None
    if not isinstance(item, h5py.Dataset):
        raise FormatError(f"/{name} is not a dataset", path)
    check_storage(item, path, f"/{name}")
    return item


def _int_scalar(handle, name: str, path: str) -> int:
    dataset = _scalar_dataset(handle, name, path)
    if dataset is None:
        raise FormatError(f"no /{name} dataset; not a Caffe solver state", path)
    # Checked before reading: a header may claim any number of values.
    if dataset.size != 1 or dataset.dtype.kind not in "iu":
        raise FormatError(f"/{name} must hold one integer", path)
    return int(np.asarray(dataset[()]).reshape(-1)[0])


MAX_LEARNED_NET = 4096  # a path name; Caffe's is a few dozen bytes


def _learned_net(handle, path: str) -> str:
    dataset = _scalar_dataset(handle, "learned_net", path)
    if dataset is None:
        return ""
    info = h5py.check_string_dtype(dataset.dtype)
    if info is None or info.length is None or dataset.size != 1:
        raise FormatError("/learned_net must be one fixed-length string", path)
    if info.length > MAX_LEARNED_NET:
        raise FormatError(f"/learned_net declares a {info.length}-byte name; at most "
                          f"{MAX_LEARNED_NET} are read", path)
    raw = np.asarray(dataset[()]).reshape(-1)[0]
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


class HDF5Format:
    NAME = "solverstate-h5"
    SUFFIXES = (".solverstate.h5",)
    DESCRIPTION = "a Caffe HDF5 solver state"
    HOLDS = frozenset({"solver_state"})
    MAGIC = HDF5_MAGIC

    @staticmethod
    def read(path: str, **_options) -> SolverState:
        handle = open_hdf5(path)
        if child(handle, "data", path) is not None and child(handle, "history", path) is None:
            raise FormatError("this is a Caffe model snapshot, not a solver state; name it "
                              ".caffemodel.h5", path)
        iteration = _int_scalar(handle, "iter", path)
        current_step = _int_scalar(handle, "current_step", path)
        learned_net = _learned_net(handle, path)
        group = child(handle, "history", path)
        if not isinstance(group, h5py.Group):
            raise FormatError("no /history group; not a Caffe solver state", path)
        entries = dict(members(group, path))
        keys = list(entries)
        if any(not key.isdigit() for key in keys) or sorted(map(int, keys)) != list(range(len(keys))):
            raise FormatError("/history must hold datasets named 0 .. n-1; found "
                              + ", ".join(sorted(keys)[:10]), path)
        file_map, copied = FileMap(path), []
        history = [float_tensor(entries[str(i)], path, f"/history/{i}", file_map, copied,
                                expected="Caffe stores floats") for i in range(len(keys))]
        check_allocation(sum(copied), "reading the datasets that are not stored plainly", path)
        names = ["iter", "learned_net", "current_step"] + [f"history/{i}" for i in range(len(keys))]
        times = {}
        for name in names:
            try:
                times[name] = int(h5py.h5g.get_objinfo(handle.id, name.encode()).mtime)
            except (KeyError, RuntimeError):
                continue
        return SolverState(iter=iteration, current_step=current_step, learned_net=learned_net,
                           history=history, source_path=path, source_format=HDF5Format.NAME,
                           hdf5_times={k: v for k, v in times.items() if v})

    @staticmethod
    def write(state: SolverState, path: str, *, progress=None, **_options) -> None:
        times = bool(state.hdf5_times)  # Caffe's HDF5 library stamps each dataset
        with h5py.File(path, "w") as handle:
            handle.create_dataset("iter", data=np.array([state.iter], dtype="<i4"), track_times=times)
            _write_c_string(handle, "learned_net", state.learned_net, times)
            handle.create_dataset("current_step", data=np.array([state.current_step], dtype="<i4"),
                                  track_times=times)
            group = handle.create_group("history")
            for i, tensor in enumerate(state.history):
                group.create_dataset(str(i), data=tensor.numpy(), track_times=times)
                if progress is not None:
                    progress(tensor.nbytes)
        if times:
            _restore_times(path, state.hdf5_times)


# An object modification time message in a version-1 object header: type 0x12,
# size 8, flags and reserved, then version 1, reserved, and the seconds.
_TIME_MESSAGE = bytes.fromhex("120008000000000001000000")


def _restore_times(path: str, times: dict[str, int]) -> None:
    """Put the recorded modification time in each dataset's header, where HDF5
    just wrote the current time (it has no call to set one). Headers of
    another layout are left as they are."""
    with h5py.File(path, "r") as handle:
        places = {name: h5py.h5g.get_objinfo(handle.id, name.encode()).objno[0] for name in times
                  if name in handle}
    with open(path, "r+b") as raw:
        for name, address in places.items():
            raw.seek(address)
            header = raw.read(4096)
            at = header.find(_TIME_MESSAGE)
            if at < 0:
                continue
            raw.seek(address + at + len(_TIME_MESSAGE))
            raw.write(int(times[name]).to_bytes(4, "little"))


def _write_c_string(handle: h5py.File, name: str, text: str, track_times: bool = False) -> None:
    """A scalar, null-terminated ASCII string, as HDF5's H5LTmake_dataset_string makes."""
    raw = text.encode("ascii")
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(raw) + 1)
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    creation = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    creation.set_obj_track_times(track_times)
    dataset = h5py.h5d.create(handle.id, name.encode(), string_type, space, dcpl=creation)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\0", dtype=f"S{len(raw) + 1}"))



__all__ = ["BinaryFormat", "HDF5Format"]
