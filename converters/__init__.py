"""Readers and writers, one module per file format, behind one small contract.

Each format is one record: NAME, SUFFIXES, DESCRIPTION (with its article),
HOLDS (what its files carry: architecture, weights, diffs, solver_state,
graph for ONNX, which its own runtimes run), MAGIC (first bytes, where the
format has them), read(path, **options) -> Model and write(model, path,
**options). A file's format is found from the
longest known suffix (so `x.caffemodel.h5` is a Caffe HDF5 snapshot, not
just "some .h5"), then checked against its content (sniff.py); a name
with no known suffix is read as its content says.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import SimpleNamespace

from blobcast.errors import BlobcastNote, FormatError
from blobcast.fileio import open_regular

from . import binaryproto, caffe_hdf5, caffemodel, onnx_names, prototxt, solverstate
from .caffe_hdf5 import HDF5_MAGIC
from .sniff import sniff


def _as_format(module_or_class) -> SimpleNamespace:
    return SimpleNamespace(
        name=module_or_class.NAME, suffixes=module_or_class.SUFFIXES,
        description=module_or_class.DESCRIPTION, holds=module_or_class.HOLDS,
        magic=getattr(module_or_class, "MAGIC", None), read=module_or_class.read,
        write=module_or_class.write, module=module_or_class)


class _ImportedOnUse(SimpleNamespace):
    """A format record whose module (and the library it needs) is imported
    when a file of the format is first read or written."""

    def __init__(self, names):
        super().__init__(name=names.NAME, suffixes=names.SUFFIXES, description=names.DESCRIPTION,
                         holds=names.HOLDS, magic=None)
        self._module_name = names.MODULE

    @property
    def module(self):
        return importlib.import_module(self._module_name)

    def read(self, *args, **options):
        return self.module.read(*args, **options)

    def write(self, *args, **options):
        return self.module.write(*args, **options)


def _registry() -> dict:
    formats = [caffemodel, caffe_hdf5, prototxt, binaryproto, binaryproto.NumpyFormat,
               solverstate.BinaryFormat, solverstate.HDF5Format]
    records = [_as_format(f) for f in formats] + [_ImportedOnUse(onnx_names)]
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
    lowered = os.path.basename(os.fspath(path)).lower()
    best, best_length = None, 0
    for fmt in FORMATS.values():
        for suffix in fmt.suffixes:
            if lowered.endswith(suffix) and len(suffix) > best_length:
                best, best_length = fmt, len(suffix)
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


_HDF5_FORMATS = ("hdf5", "caffemodel-h5", "solverstate-h5")


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
        if fmt.magic == HDF5_MAGIC and sniffed.format in _HDF5_FORMATS:
            if sniffed.format == "hdf5":  # unreadable: its reader says why
                return fmt
            if not os.fspath(path).lower().endswith(fmt.suffixes[0]):  # .h5 says only HDF5
                warnings.warn(BlobcastNote(f"{path}: read as {sniffed.what}, by its content"),
                              stacklevel=2)
                return FORMATS[sniffed.format]
        raise FormatError(f"the name says {fmt.description} but the content is {sniffed.what}; "
                          "rename it or name the format with --from", path)
    return fmt


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
