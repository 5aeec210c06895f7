"""Reading untrusted HDF5 files without letting them reach anything else.

HDF5 can make a dataset's values come from another file (external raw
storage, virtual datasets) and a name resolve into another file (external
links) or somewhere else in this one (soft links). Caffe writes none of
these, and each can copy a file of the user's into an output, so blobcast
reads hard links and datasets stored inside the file only. Group walks are
bounded in depth and size, and see each object once (hard links can loop).
Chunked datasets must have every chunk stored, and a compressed one cannot
claim more values than deflate can produce from its stored bytes: no small
file inflates into gigabytes.
"""

from __future__ import annotations

import h5py

from blobcast.errors import FormatError
from blobcast.fileio import check_regular_file
from blobcast.limits import check_allocation

MAX_DEPTH = 64
MAX_OBJECTS = 100_000
DEFLATE_MAX_RATIO = 1032  # deflate's best case: 258 bytes from one 2-bit code
_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}


def open_hdf5(path: str) -> h5py.File:
    check_regular_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        reason = str(error).split("(")[0].strip().rstrip(",") or "cannot be opened"
        raise FormatError(f"not a readable HDF5 file ({reason})", path) from error


def child(group: h5py.Group, name: str, path: str):
    """group[name] if it is reached through a hard link; None if absent."""
    where = (group.name.rstrip("/") + "/" + name)
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.HardLink):
        return group[name]
    if isinstance(link, h5py.SoftLink):
        raise FormatError(f"{where} is a soft link (to {link.path!r}); only hard links are read",
                          path)
    if isinstance(link, h5py.ExternalLink):
        raise FormatError(f"{where} is an external link to {link.filename!r}; blobcast never "
                          "follows links into other files", path)
    raise FormatError(f"{where} is a user-defined link; only hard links are read", path)


def members(group: h5py.Group, path: str) -> list[tuple[str, object]]:
    """(name, object) for each member of a group, links checked."""
    count = len(group)
    if count > MAX_OBJECTS:
        raise FormatError(f"{group.name} has {count} members; more than {MAX_OBJECTS} are "
                          "not read", path)
    return [(name, child(group, name, path)) for name in group.keys()]


def walk_groups(root: h5py.Group, path: str) -> list[tuple[str, h5py.Group]]:
    """Every group below `root` with its path relative to it, in pre-order and
    the file's name order (as h5py's visititems); each object once, links
    checked, depth and count bounded."""
    found: list[tuple[str, h5py.Group]] = []
    seen = {hash(root.id)}
    stack = [("", iter(members(root, path)))]
    while stack:
        prefix, pending = stack[-1]
        step = next(pending, None)
        if step is None:
            stack.pop()
            continue
        name, item = step
        if not isinstance(item, h5py.Group) or hash(item.id) in seen:
            continue  # a dataset, or a hard link back to a group already seen
        seen.add(hash(item.id))
        if len(stack) >= MAX_DEPTH:
            raise FormatError(f"{item.name}: groups nest deeper than {MAX_DEPTH} levels", path)
        if len(seen) > MAX_OBJECTS:
            raise FormatError(f"more than {MAX_OBJECTS} groups; not read", path)
        relative = f"{prefix}/{name}" if prefix else name
        found.append((relative, item))
        stack.append((relative, iter(members(item, path))))
    return found


def check_storage(dataset: h5py.Dataset, path: str, where: str) -> None:
    """Refuse values stored outside the file, unknown filters, missing chunks
    and decompressed sizes beyond what the stored bytes can hold."""
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise FormatError(f"{where} is a virtual dataset (its values come from other files); "
                          "refused", path)
    if plist.get_external_count():
        raise FormatError(f"{where} keeps its values in an external file; only values stored "
                          "inside the file are read", path)
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        raise FormatError(f"{where} has an unknown storage layout", path)
    codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    unknown = [code for code in codes if code not in _FILTERS]
    if unknown:
        raise FormatError(f"{where} uses HDF5 filter(s) {unknown}; blobcast reads "
                          + ", ".join(_FILTERS.values()), path)
    declared = dataset.size * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if layout != h5py.h5d.CHUNKED:
        if declared and stored < declared:
            raise FormatError(f"{where} declares {declared} bytes of values but the file stores "
                              f"{stored}", path)
        return
    chunk_count = 1
    for size, chunk in zip(dataset.shape, dataset.chunks):
        chunk_count *= -(-size // chunk)
    if declared and dataset.id.get_num_chunks() < chunk_count:
        raise FormatError(f"{where} declares {chunk_count} chunks but stores "
                          f"{dataset.id.get_num_chunks()}; a Caffe snapshot stores every value",
                          path)
    if declared and stored * (DEFLATE_MAX_RATIO if 1 in codes or 32000 in codes else 1) < declared:
        raise FormatError(f"{where} declares {declared} bytes of values but stores only "
                          f"{stored}, more than compression can explain", path)
    check_allocation(declared, f"decompressing {where}", path)
