"""A convolution's unfolded columns (im2col), written straight from its
unpadded input.

Each kernel offset's slot gets the input values its windows read and zeros
where they fall in the padding: the values a padded copy of the input gives,
without making the copy. That copy was made on the pass's own thread before
the unfolded parts could be shared between threads: VGG16 at batch 8 spent
131 ms of 2.7 s in it.
"""

from __future__ import annotations

from itertools import product

from . import compiled


def unfold(source, columns, kernel_axis: int, kernel, stride, pad, dilation,
           first_row: int = 0, rows: int | None = None) -> None:
    """Fill `columns` from `source`.

    source: (..., *spatial), unpadded; columns: the same leading axes with
    the kernel offsets' axis inserted at `kernel_axis`, then the output
    positions from output row `first_row` on, `rows` of them (None: as many
    as it holds; a part's buffer may hold more). Two spatial axes with the
    offsets' axis right after the leading ones go to the compiled kernel
    where it applies (compiled.unfold_2d), the same values.
    """
    if rows is None:
        rows = columns.shape[-len(kernel)]
    if kernel_axis == source.ndim - len(kernel) and \
            compiled.unfold_2d(source, columns, kernel, stride, pad, dilation, first_row, rows):
        return
    columns = columns[(slice(None),) * (columns.ndim - len(kernel)) + (slice(0, rows),)]
    spatial_axes = len(kernel)
    spatial = source.shape[-spatial_axes:]
    part = columns.shape[-spatial_axes:]
    lead = (slice(None),) * (source.ndim - spatial_axes)
    for index, offsets in enumerate(product(*[range(k) for k in kernel])):
        slot = columns[(slice(None),) * kernel_axis + (index,)]
        reads, writes, edges = [], [], []
        for axis, offset in enumerate(offsets):
            start = first_row if axis == 0 else 0
            valid = _valid_outputs(offset * dilation[axis] - pad[axis], stride[axis],
                                   spatial[axis], start, part[axis])
            if valid is None:
                break
            low, high = valid
            first_read = (start + low) * stride[axis] + offset * dilation[axis] - pad[axis]
            reads.append(slice(first_read, first_read + stride[axis] * (high - low - 1) + 1,
                               stride[axis]))
            writes.append(slice(low, high))
            edges += [(axis, slice(0, low))] * (low > 0) + \
                [(axis, slice(high, part[axis]))] * (high < part[axis])
        else:
            slot[lead + tuple(writes)] = source[lead + tuple(reads)]
            for axis, edge in edges:
                slot[lead + (slice(None),) * axis + (edge,)] = 0
            continue
        slot[...] = 0  # the offset reads padding only, on every output of the part


def _valid_outputs(shift: int, stride: int, size: int, start: int, count: int):
    """The outputs j in [0, count) whose read (start + j) * stride + shift
    falls inside [0, size), as (low, high); None where there are none."""
    low = max(0, -((shift + start * stride) // stride))
    high = min(count, (size - 1 - shift) // stride - start + 1)
    return (low, high) if high > low else None
