"""Readers and writers, one module per file format, behind one small contract.

Each format is one record (formats.py): its name, suffixes, description
(with its article), what its files hold and its magic bytes, with the hooks
every caller goes through (match, read, write, verify_written, companions,
inspect, runner). A file's format is found from the longest known suffix
(so `x.caffemodel.h5` is a Caffe HDF5 snapshot, not just "some .h5"), then
checked against its content (sniff.py); a name with no known suffix is read
as its content says.
"""

from __future__ import annotations

import os
import warnings

from blobcast.errors import BlobcastNote, FormatError
from blobcast.fileio import open_regular

from . import binaryproto, caffe_hdf5, caffemodel, onnx_names, prototxt, solverstate
from .formats import HOOKS, JOINED_BY_LAYER_NAME, JOINED_BY_READER, Companions, Format, record_of
from .hdf5_container import HDF5_MAGIC
from .sniff import sniff

__all__ = ["FORMATS", "HOOKS", "Companions", "Format", "detect_format", "file_runner",
           "format_by_name", "format_for_suffix", "output_format", "weights_format"]


def _registry() -> dict:
    records = [
        record_of(caffemodel, joins_net_definition=JOINED_BY_LAYER_NAME, deploy_pair=True),
        record_of(caffe_hdf5, joins_net_definition=JOINED_BY_READER, container="hdf5"),
        record_of(prototxt, joins_net_definition=JOINED_BY_LAYER_NAME),
        record_of(binaryproto),
        record_of(binaryproto.NumpyFormat),
        record_of(solverstate.BinaryFormat),
        record_of(solverstate.HDF5Format, container="hdf5"),
        record_of(onnx_names),  # its module, and onnx, imported when a file is read or written
    ]
    order = ["caffemodel", "caffemodel-h5", "prototxt", "binaryproto", "npy", "onnx"]
    records.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))
    return {r.name: r for r in records}


FORMATS = _registry()


def format_by_name(name: str):
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r}; known formats: "
                          + ", ".join(FORMATS)) from None


def format_for_suffix(path: str):
    name = os.path.basename(os.fspath(path))
    best, best_length = None, 0
    for fmt in FORMATS.values():
        length = fmt.match(name)
        if length > best_length:
            best, best_length = fmt, length
    return best


def _read_head(path: str, size: int = 8) -> bytes:
    with open_regular(path) as handle:
        return handle.read(size)


def _download_mistake(head: bytes) -> str | None:
    """The two most common broken downloads, told apart from models."""
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "this is a Git LFS pointer, not the file itself (run git lfs pull in its repository)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    starts = (b"<!doctype html", b"<html", b"<head", b"<!--", b"<?xml")
    if text.startswith(starts) and b"<html" in head.lower():
        return "this is an HTML page, not a model (a web page saved instead of the file?)"
    return None


def _same_container(fmt, sniffed) -> bool:
    """The content is the container the named format lays out (HDF5), laid
    out as another format of it, or unreadable as any (sniffed "hdf5")."""
    return fmt.container is not None and (
        sniffed.format == fmt.container
        or getattr(FORMATS.get(sniffed.format), "container", None) == fmt.container)


def detect_format(path: str, override: str | None = None):
    """The format to read `path` with: --from if given, else the suffix, which
    the content must not contradict; else the content alone, said in a note."""
    head = _read_head(path, 1024)
    mistake = _download_mistake(head)
    if mistake:
        raise FormatError(mistake, path)
    if override:
        return format_by_name(override)
    if not head:
        raise FormatError("the file is empty", path)
    fmt = format_for_suffix(path)
    sniffed = sniff(path)
    if fmt is None:
        if sniffed is None:
            known = sorted({s for f in FORMATS.values() for s in f.suffixes}, key=len, reverse=True)
            raise FormatError("unknown file type: neither its name nor its content is one of "
                              + ", ".join(known) + " (name the format with --from)", path)
        warnings.warn(BlobcastNote(f"{path}: read as {sniffed.what}, by its content (its name "
                                   "has no suffix blobcast knows)"), stacklevel=2)
        return FORMATS.get(sniffed.format, FORMATS["caffemodel-h5"])  # an unknown HDF5 layout
    if sniffed is not None and sniffed.format != fmt.name:
        return _named_otherwise(path, fmt, sniffed)
    return fmt


def _named_otherwise(path: str, fmt, sniffed):
    """A name that says one format over content that says another: another
    layout of the same container where the name says only the container
    (.h5), else refused."""
    if _same_container(fmt, sniffed):
        if sniffed.format == fmt.container:  # unreadable: its reader says why
            return fmt
        if not os.fspath(path).lower().endswith(fmt.suffixes[0]):  # .h5 says only HDF5
            warnings.warn(BlobcastNote(f"{path}: read as {sniffed.what}, by its content"),
                          stacklevel=3)
            return FORMATS[sniffed.format]
    raise FormatError(f"the name says {fmt.description} but the content is {sniffed.what}; "
                      "rename it or name the format with --from", path)


def output_format(path: str, override: str | None = None):
    if override:
        return format_by_name(override)
    fmt = format_for_suffix(path)
    if fmt is None:
        raise FormatError("cannot tell the output format from the file name; use --to", path)
    return fmt


def weights_format(path: str) -> str | None:
    """The format of a solver state's weights file: None where its suffix says;
    by content where it has none (Caffe before 2015 wrote `_iter_N` alone)."""
    if format_for_suffix(path) is not None:
        return None
    return "caffemodel-h5" if _read_head(path).startswith(HDF5_MAGIC) else "caffemodel"


def file_runner(path: str, **options):
    """What runs the file at `path` by itself: its format's runner (the
    format by suffix, else by content)."""
    fmt = format_for_suffix(path)
    if fmt is None or not fmt.runs_by_itself:
        sniffed = sniff(path)
        fmt = FORMATS.get(sniffed.format) if sniffed is not None else fmt
    runner = fmt.runner(path, **options) if fmt is not None else None
    if runner is None:
        raise FormatError("no runtime of its own runs this file; blobcast's engine runs the "
                          "model it reads as", path)
    return runner
