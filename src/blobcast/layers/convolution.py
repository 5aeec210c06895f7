"""Convolution and Deconvolution (N-D, groups, stride, pad, dilation)."""

from __future__ import annotations

from functools import lru_cache
from itertools import product
from math import prod

import numpy as np

from ..threads import (
    LARGE_PRODUCTS,
    blas_threads,
    compiled_threads,
    matmul,
    run_blocks,
    run_channel_blocks,
    single_thread_products,
)
from . import allocation, compiled, winograd
from .base import LayerOp, canonical_axis, register, weight_and_bias_fillers
from .compiled import run_in_place
from .steps import ADD, Step, apply_steps
from .unfold import unfold

# A depthwise block's padded input planes; its output and one product term
# take as much again each, so the three stay in a core's L2 cache (blocks of
# 1 MiB, whose three buffers overflowed a 2 MiB L2, made MobileNet-v1's
# depthwise layers 10-25% slower at batch 8).
DEPTHWISE_BLOCK_BYTES = 1 << 18
# Unfolded columns larger than this are made a part at a time, each part
# (a run of output rows of one sample) about this large, so that the product
# reads them from cache right after they are written: VGG16's and ResNet-50's
# layers at 112x112 and 224x224 took 25-60% less time than with the whole
# sample unfolded (64 MiB parts before). A part still spans at least
# MIN_PART_COLUMNS output positions: the product packs the whole filter
# matrix on every call, which thin parts of a 512-channel layer do not repay.
COLUMN_BYTES = 2 << 20
MIN_PART_COLUMNS = 1024
COLUMN_BYTES_GPU = 1 << 30
# At most this many output positions a sample: a batch's samples side by side
# in one product (Convolution._side_by_side).
SIDE_BY_SIDE_LOCATIONS = 100


def spatial_settings(params, spatial_axes: int, layer_name: str):
    """kernel, stride, pad, dilation per spatial axis, as Caffe's
    BaseConvolutionLayer::LayerSetUp reads them."""

    def per_axis(values, default, name, h=None, w=None):
        if h is not None and (params.has(h) or params.has(w)):
            if spatial_axes != 2:
                raise ValueError(f"layer {layer_name!r}: {h}/{w} need 2 spatial axes")
            return (getattr(params, h), getattr(params, w))
        values = list(values)
        if not values:
            return (default,) * spatial_axes
        if len(values) == 1:
            return (values[0],) * spatial_axes
        if len(values) != spatial_axes:
            raise ValueError(f"layer {layer_name!r}: {name} has {len(values)} values for "
                             f"{spatial_axes} spatial axes")
        return tuple(values)

    kernel = per_axis(params.kernel_size, None, "kernel_size", "kernel_h", "kernel_w")
    if None in kernel:
        raise ValueError(f"layer {layer_name!r}: no kernel size")
    stride = per_axis(params.stride, 1, "stride", "stride_h", "stride_w")
    pad = per_axis(params.pad, 0, "pad", "pad_h", "pad_w")
    dilation = per_axis(params.dilation, 1, "dilation")
    # A missing stride_h (or kernel_w, ...) next to its partner reads as 0 in
    # Caffe, which then refuses the layer; so do we.
    for name, values in (("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        if any(v <= 0 for v in values):
            raise ValueError(f"layer {layer_name!r}: every {name} dimension must be positive, "
                             f"got {list(values)}")
    return kernel, stride, pad, dilation


def _windows(shape_out, kernel, stride, dilation):
    """For each kernel offset: its index and the strided slices it reads."""
    for index, offsets in enumerate(product(*[range(k) for k in kernel])):
        yield index, tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                           for o, d, s, n in zip(offsets, dilation, stride, shape_out))


class _ConvolutionBase(LayerOp):
    @classmethod
    def blob_count(cls, layer) -> int:
        return 1 + int(layer.spec.convolution_param.bias_term)

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        axis = canonical_axis(self.axis_setting, len(shape))
        _, _, spatial, kernel, stride, pad, dilation = self._geometry(shape)
        out = self._spatial_out(spatial, kernel, stride, pad, dilation)
        return [shape[:axis] + (self.params.num_output,) + out]

    def blob_shapes(self, shapes):
        _, channels, _, kernel, _, _, _ = self._geometry(tuple(shapes[0]))
        p = self.params
        weight = ((channels, p.num_output // p.group) if self.layer.type == "Deconvolution"
                  else (p.num_output, channels // p.group)) + tuple(kernel)
        return [weight] + ([(p.num_output,)] if p.bias_term else [])

    def blob_fillers(self):
        return weight_and_bias_fillers(self.params)

    def setup(self):
        self.group = self.params.group
        self.bias = self.params.bias_term
        self.axis_setting = self.params.axis
        self.winograd = False  # Net sets it (layers/winograd.py), on by default
        self._winograd_filters = None

    def _batch_view(self, x):
        axis = canonical_axis(self.axis_setting, x.ndim)
        leading = x.shape[:axis]
        return leading, x.reshape((prod(leading),) + x.shape[axis:])

    def _settings(self, x):
        return self._settings_for(x.ndim)

    def _settings_for(self, ndim: int):
        # read once per rank: reading the settings cost more than a small
        # layer's arithmetic (MobileNet-v1 at batch 1)
        known = self.__dict__.setdefault("_settings_by_rank", {})
        if ndim not in known:
            try:
                known[ndim] = spatial_settings(self.params, ndim - 2, self.name)
            except ValueError as error:
                raise self.fail(str(error)) from None
        return known[ndim]

    def _geometry(self, shape):
        """(batch, channels, spatial input, kernel, stride, pad, dilation) of an input shape."""
        axis = canonical_axis(self.axis_setting, len(shape))
        batch = prod(shape[:axis])
        channels, spatial = shape[axis], tuple(shape[axis + 1:])
        return (batch, channels, spatial) + self._settings_for(len(shape) - axis + 1)

    def _outputs(self) -> int:
        return self.params.num_output


# yonghenglh6's DepthwiseConvolution is Caffe's grouped convolution, group and
# num_output as given (without group it is a dense one).
@register("Convolution", "DepthwiseConvolution", settings="convolution_param",
          key_settings=(
    "num_output", "kernel_size", "stride", "pad", "dilation", "group", "bias_term"))
class Convolution(_ConvolutionBase):
    origin = {"ConvolutionDepthwise": "MobileNet forks (group == channels)",
              "DepthwiseConvolution": "MobileNet forks (group == channels)"}

    def _spatial_out(self, spatial, kernel, stride, pad, dilation) -> tuple[int, ...]:
        out = tuple((size + 2 * p - (d * (k - 1) + 1)) // s + 1
                    for size, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))
        if min(out, default=1) <= 0:
            raise self.fail(f"the input {list(spatial)} is smaller than the kernel")
        return out

    def values_needed(self, shapes):
        batch, channels, spatial, kernel, stride, pad, dilation = self._geometry(shapes[0])
        out = prod(max((n + 2 * p - (d * (k - 1) + 1)) // s + 1, 0)
                   for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))
        padded = prod(n + 2 * p for n, p in zip(spatial, pad))
        # output, the padded input and the unfolded columns (made in parts past
        # a limit; counted here at 4 bytes a value, at least what they take)
        columns = batch * channels * prod(kernel) * out
        if 4 * columns > self._column_bytes():
            shape_out = tuple(max((n + 2 * p - (d * (k - 1) + 1)) // s + 1, 1)
                              for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))
            columns = channels * prod(kernel) * prod(shape_out[1:]) * self._column_rows(
                channels, kernel, shape_out, 4)
        if self._side_by_side(batch, channels * prod(kernel), out, self.group, 4):
            columns = batch * (channels * prod(kernel) + self._outputs()) * out  # and the product
        shape_out = tuple(max((n + 2 * p - (d * (k - 1) + 1)) // s + 1, 1)
                          for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))
        if self.winograd and winograd.applies(kernel, stride, dilation, self.group,
                                              len(spatial) + 2, channels, shape_out):
            # each thread's part: its tiles before and after the products
            columns = compiled_threads() * winograd.part_values(
                channels, self._outputs(), spatial, pad, 4, self.xp is np)
        return batch * (self._outputs() * out + channels * padded) + columns

    takes_steps = True

    def forward(self, x):
        return self.forward_with_steps([], x)

    def forward_with_steps(self, steps, x):
        xp = self.xp
        leading, x = self._batch_view(x)
        kernel, stride, pad, dilation = self._settings(x)
        weight = self.weights[0]
        n, channels = x.shape[:2]
        outputs, group = weight.shape[0], self.group
        if channels % group or outputs % group or weight.shape[1] * group != channels:
            raise self.fail(f"weights {list(weight.shape)} do not fit {channels} input channels "
                            f"in {group} groups")
        shape_out = self._spatial_out(x.shape[2:], kernel, stride, pad, dilation)
        if group == channels == outputs and x.ndim == 4:
            return (self._depthwise(x, kernel, stride, pad, dilation, shape_out, steps).reshape(
                leading + (outputs,) + shape_out),)
        locations = prod(shape_out)
        per_group = channels // group
        filters = weight.reshape(group, outputs // group, per_group * prod(kernel))
        if self.winograd and winograd.applies(kernel, stride, dilation, group, x.ndim, channels,
                                               shape_out):
            if self._winograd_filters is None:
                self._winograd_filters = winograd.transformed_filters(xp, weight)
            y = winograd.convolve(xp, x, self._winograd_filters,
                                  self.weights[1] if self.bias else None, pad, steps)
            if y is not None:
                return (y.reshape(leading + y.shape[1:]),)
        if self._side_by_side(n, channels * prod(kernel), locations, group, x.itemsize):
            y = self._samples_side_by_side(x, filters[0], kernel, stride, pad, dilation, shape_out)
        elif all(k == 1 for k in kernel) and all(s == 1 for s in stride) and not any(pad):
            columns = x.reshape(n, group, per_group, locations)  # 1x1: no unfolding needed
            y = self._product(filters[None], columns, (n, outputs) + shape_out)
        elif n * channels * prod(kernel) * locations * x.itemsize <= self._column_bytes():
            unfolded = allocation.empty(xp, (n, channels, prod(kernel)) + shape_out, x.dtype)
            unfold(x, unfolded, 2, kernel, stride, pad, dilation)
            columns = unfolded.reshape(n, group, per_group * prod(kernel), locations)
            y = self._product(filters[None], columns, (n, outputs) + shape_out)
            columns = None
            allocation.done(unfolded)
        else:
            # the bias added to each part while it is in cache
            return (self._unfolded_in_parts(x, filters, kernel, stride, pad, dilation, shape_out,
                                            steps).reshape(leading + (outputs,) + shape_out),)
        if self.bias and xp is np:  # the bias as the chain's first step: one pass for both
            steps = [Step(ADD, self.weights[1].reshape(-1))] + steps
        elif self.bias:
            y += self.weights[1].reshape((1, outputs) + (1,) * len(shape_out))
        run_in_place(y, steps)
        return (y.reshape(leading + y.shape[1:]),)


    def _side_by_side(self, n: int, depth: int, locations: int, group: int, itemsize: int) -> bool:
        """Whether the samples' columns go side by side into one product: where
        a sample has few output positions (7x7, 14x14), as the product then
        packs the filters once for all of them (ResNet-50's 7x7 layers at
        batch 8: 25-35% less time, the copy back included; at 14x14 no faster)."""
        return self.xp is np and n > 1 and group == 1 and locations <= SIDE_BY_SIDE_LOCATIONS and \
            n * depth * locations * itemsize <= 4 * self._column_bytes()

    def _samples_side_by_side(self, x, filters, kernel, stride, pad, dilation, shape_out):
        """The product of (outputs x depth) filters by every sample's columns
        at once, (depth x samples * locations); its result put back sample first."""
        xp = self.xp
        n, channels = x.shape[:2]
        if all(k == 1 for k in kernel) and all(s == 1 for s in stride) and not any(pad):
            columns = xp.ascontiguousarray(x.reshape(n, channels, -1).transpose(1, 0, 2))
        else:
            columns = xp.empty((channels, prod(kernel), n) + shape_out, dtype=x.dtype)
            unfold(x.transpose((1, 0) + tuple(range(2, x.ndim))), columns, 1, kernel, stride, pad,
                   dilation)
        product = self._product(filters, columns.reshape(filters.shape[1], -1))
        product = product.reshape((filters.shape[0], n) + shape_out)
        return xp.ascontiguousarray(product.transpose((1, 0) + tuple(range(2, x.ndim))))

    def _product(self, a, b, shape=None):
        """a @ b, shared between the engine's threads on the host; with
        `shape`, into a new array of that shape (from the pass's pool)."""
        if self.xp is not np:
            product = self.xp.matmul(a, b)
            return product if shape is None else product.reshape(shape)
        if shape is None:
            return matmul(a, b)
        out = allocation.empty(np, shape, np.result_type(a, b))
        matmul(a, b, out=out.reshape(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) +
                                     (a.shape[-2], b.shape[-1])))
        return out

    def _column_bytes(self) -> int:
        return COLUMN_BYTES if self.xp is np else COLUMN_BYTES_GPU

    def _column_rows(self, channels: int, kernel, shape_out, itemsize: int) -> int:
        """How many rows of the output (its first spatial axis) one part unfolds."""
        row = prod(shape_out[1:])
        rows = self._column_bytes() // max(channels * prod(kernel) * row * itemsize, 1)
        if self.xp is np:
            rows = max(rows, -(-MIN_PART_COLUMNS // max(row, 1)))
        return max(1, min(shape_out[0], rows))

    def _unfolded_in_parts(self, x, filters, kernel, stride, pad, dilation, shape_out, steps):
        """The unfolded product, one sample and a run of output rows at a time:
        the columns of a large input at batch 8 would take a gigabyte, and
        memory that large is slow to fill as well. The bias and the in-place
        layers' steps are applied to each part while it is in cache."""
        xp = self.xp
        n, channels = x.shape[:2]
        group, outputs = filters.shape[0], filters.shape[0] * filters.shape[1]
        y = allocation.empty(xp, (n, outputs) + shape_out, x.dtype)
        rows = self._column_rows(channels, kernel, shape_out, x.itemsize)
        buffer_shape = (channels, prod(kernel), rows) + shape_out[1:]
        if self.bias:
            steps = [Step(ADD, self.weights[1].reshape(-1))] + list(steps)

        def unfold_and_multiply(sample: int, first: int, buffer) -> None:
            last = min(shape_out[0], first + rows)
            part = (last - first,) + shape_out[1:]
            columns = buffer[:, :, :last - first]
            unfold(x[sample], buffer, 1, kernel, stride, pad, dilation, first, last - first)
            # written straight into the output's rows (a strided block BLAS takes)
            plane = y[sample].reshape(outputs, -1)
            start, end = first * prod(part[1:]), last * prod(part[1:])
            block = plane[:, start:end]
            xp.matmul(filters, columns.reshape(group, -1, prod(part)),
                      out=block.reshape(group, outputs // group, -1))
            # the bias (as the first step) and the chain while the part is in cache
            if xp is not np or not compiled.run_steps_on_columns(plane, start, end, steps):
                apply_steps(xp, block, steps, slice(None))

        tasks = [(sample, first) for sample in range(n) for first in range(0, shape_out[0], rows)]
        if xp is not np:
            buffer = xp.empty(buffer_shape, dtype=x.dtype)
            for task in tasks:
                unfold_and_multiply(*task, buffer)
            return y
        # Parts shared between threads, each unfolding its own part and
        # multiplying it on BLAS's calling thread (threads.single_thread_products).
        multiply_adds = outputs * prod(buffer_shape[:2]) * prod(shape_out) // group
        with single_thread_products(compiled.enabled(), multiply_adds >= LARGE_PRODUCTS,
                                    len(tasks)) as workers:
            if workers <= 1 or len(tasks) < workers:  # a part for every thread
                buffer = xp.empty(buffer_shape, dtype=x.dtype)
                with blas_threads():
                    for task in tasks:
                        unfold_and_multiply(*task, buffer)
                return y
            buffers = [xp.empty(buffer_shape, dtype=x.dtype) for _ in range(workers)]

            def task(index: int, worker: int) -> None:
                unfold_and_multiply(*tasks[index], buffers[worker])

            run_blocks(task, len(tasks), workers, with_worker=True)
        return y

    def _depthwise(self, x, kernel, stride, pad, dilation, shape_out, steps):
        """One filter per channel, summed directly in kernel order as the
        forks' ConvolutionDepthwise loops do: an unfolded copy and a batched
        product of 1-row matrices would cost more. Blocks of a sample's
        channels stay in cache (and run on the engine's threads)."""
        xp = self.xp
        n, channels = x.shape[:2]
        filters = self.weights[0].reshape(channels, prod(kernel))
        bias = self.weights[1] if self.bias else None
        # With a stride, the padded planes are first split into stride x stride
        # phases (every stride-th row and column from each start): each offset
        # then reads one phase at a fixed shift, laid flat, where a strided
        # read would make short, gapped loops.
        phases, phase_width, phase_reads = _phase_reads(x.shape[2:], kernel, stride, pad,
                                                        dilation, shape_out)
        if xp is np:
            y = compiled.depthwise(x, filters, bias, stride, pad, phases, phase_reads, shape_out,
                                   steps)
            if y is not None:
                return y
        y = xp.empty((n, channels) + shape_out, dtype=x.dtype)
        # With stride 1, each kernel offset reads the padded planes, laid flat,
        # at a fixed shift: one long run per channel instead of a short one per
        # row. Outputs are made on the padded width, and the extra columns cut.
        flat = all(s == 1 for s in stride)
        # one zero row more: the last offset's run ends past the padded plane
        padded = (x.shape[2] + 2 * pad[0] + int(flat), x.shape[3] + 2 * pad[1])
        if flat:
            length = shape_out[0] * padded[1]
            reads = [(slice(shift, shift + length),)
                     for shift in (a * dilation[0] * padded[1] + b * dilation[1]
                                   for a in range(kernel[0]) for b in range(kernel[1]))]
        else:
            reads = [window for _, window in _windows(shape_out, kernel, stride, dilation)]
        width = padded[1] if flat else shape_out[1]


        def planes(sample: int, chosen: slice) -> None:
            inside = x[sample, chosen]
            count = inside.shape[0]
            if flat:
                source = xp.zeros((count,) + padded, dtype=x.dtype)
                source[:, pad[0]:pad[0] + inside.shape[1], pad[1]:pad[1] + inside.shape[2]] = inside
                source = source.reshape(count, 1, -1)
            else:
                source = _phase_planes(xp, inside, pad, stride, phases)
            out = xp.empty((count, shape_out[0] * phase_width), dtype=x.dtype)
            _weighted_sum(xp, [source[:, phase, run] for phase, run in phase_reads],
                          [column.reshape(-1, 1) for column in filters[chosen].T],
                          None if bias is None else bias[chosen].reshape(-1, 1), out)
            y[sample, chosen] = out.reshape(count, shape_out[0], phase_width)[:, :, :shape_out[1]]

        # Output rows a few values long make short NumPy loops with a cost
        # per row: there the channels go last (a transposed copy in and out),
        # and each offset's product runs along rows of `count` channels. Each
        # value gets the same products and sums in the same order: the
        # results are identical.
        filters_last = xp.ascontiguousarray(filters.T)

        def lanes(sample: int, chosen: slice) -> None:
            inside = x[sample, chosen]
            count = inside.shape[0]
            source = xp.zeros(padded + (count,), dtype=x.dtype)
            source[pad[0]:pad[0] + inside.shape[1], pad[1]:pad[1] + inside.shape[2]] = \
                inside.transpose(1, 2, 0)
            source = source.reshape(-1, count) if flat else source
            out = xp.empty(((length,) if flat else shape_out) + (count,), dtype=x.dtype)
            _weighted_sum(xp, [source[read] for read in reads], filters_last[:, chosen],
                          None if bias is None else bias[chosen], out)
            y[sample, chosen] = out.reshape(shape_out[0], width, count)[:, :shape_out[1]].transpose(
                2, 0, 1)

        # One block on the GPU, where a kernel call costs more than its memory.
        on_host = xp is np
        # Measured on MobileNet-v1's layers: channels last was 25-55% faster
        # where output rows are 14 or 7 wide (256 to 1024 channels), and slower
        # on rows of 28 and more (the transposes cost more than they save).
        work = lanes if on_host and 16 * shape_out[1] <= channels else planes
        run_channel_blocks(work, n, channels, prod(padded) * x.itemsize,
                           DEPTHWISE_BLOCK_BYTES if on_host else channels * prod(padded) * x.itemsize,
                           threaded=on_host)
        run_in_place(y, steps)
        return y


@lru_cache(maxsize=256)  # the same few shapes every pass
def _phase_reads(spatial, kernel, stride, pad, dilation, shape_out):
    """The phase planes' shape (one zero row more, as the flat runs of the
    last rows pass the end), their width, and for each kernel offset the
    phase it reads and the run of that phase, laid flat, that it reads."""
    padded = [size + 2 * p for size, p in zip(spatial, pad)]
    rows, width = (-(-size // s) for size, s in zip(padded, stride))
    length = shape_out[0] * width
    reads = []
    for a in range(kernel[0]):
        for b in range(kernel[1]):
            (row, row_phase), (column, column_phase) = (
                divmod(o * d, s) for o, d, s in zip((a, b), dilation, stride))
            shift = row * width + column
            reads.append((row_phase * stride[1] + column_phase, slice(shift, shift + length)))
    return (stride[0] * stride[1], rows + 1, width), width, tuple(reads)


def _phase_planes(xp, inside, pad, stride, phases):
    """A run of channels' padded planes, split into stride x stride phases
    and laid flat: (channels, phases, phase plane)."""
    count, height, width = inside.shape
    padded = xp.zeros((count, height + 2 * pad[0], width + 2 * pad[1]), dtype=inside.dtype)
    padded[:, pad[0]:pad[0] + height, pad[1]:pad[1] + width] = inside
    source = xp.zeros((count,) + phases, dtype=inside.dtype)
    for row_phase in range(stride[0]):
        for column_phase in range(stride[1]):
            part = padded[:, row_phase::stride[0], column_phase::stride[1]]
            source[:, row_phase * stride[1] + column_phase, :part.shape[1], :part.shape[2]] = part
    return source.reshape(count, phases[0], -1)


def _weighted_sum(xp, reads, weights, bias, out) -> None:
    """out = reads[0] * weights[0] + reads[1] * weights[1] + ... (+ bias), summed in
    that order, as the forks' loops sum a depthwise kernel's offsets."""
    term = xp.empty_like(out)
    for index, (read, weight) in enumerate(zip(reads, weights)):
        xp.multiply(read, weight, out=out if index == 0 else term)
        if index:
            out += term
    if bias is not None:
        out += bias


@register("ConvolutionDepthwise", settings="convolution_param", key_settings=(
    "kernel_size", "stride", "pad", "dilation", "bias_term"))
class ConvolutionDepthwise(Convolution):
    """The MobileNet/ShuffleNet forks' ConvolutionDepthwise (conv_dw_layer.cpp,
    sophgo/caffe and its copies): one filter per channel whatever group and
    num_output say (ShuffleNet v1 leaves group out): top channels = bottom
    channels, weights C x 1 x kh x kw, bias C; 4-D blobs only. The fork reads
    stride and pad without checking they are given, which Caffe's protobuf
    refuses: so do we."""

    def _fork_settings(self, ndim: int):
        p = self.params
        if ndim != 4:
            raise self.fail(f"takes a 4-D N x C x H x W blob, not a {ndim}-D one")
        for name in ("stride", "pad"):
            if not getattr(p, name) and not (p.has(f"{name}_h") and p.has(f"{name}_w")):
                raise self.fail(f"the fork reads {name} unchecked: give {name} (or "
                                f"{name}_h and {name}_w)")
        return self._settings_for(ndim)

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        kernel, stride, pad, dilation = self._fork_settings(len(shape))
        return [shape[:2] + self._spatial_out(shape[2:], kernel, stride, pad, dilation)]

    def blob_shapes(self, shapes):
        shape = tuple(shapes[0])
        kernel = self._fork_settings(len(shape))[0]
        return [(shape[1], 1) + tuple(kernel)] + ([(shape[1],)] if self.bias else [])

    def values_needed(self, shapes):
        shape = tuple(shapes[0])
        return 3 * prod(shape) + 2 * prod(self.top_shapes(shapes)[0])

    def forward_with_steps(self, steps, x):
        kernel, stride, pad, dilation = self._fork_settings(x.ndim)
        channels, weight = x.shape[1], self.weights[0]
        if tuple(weight.shape) != (channels, 1) + tuple(kernel):
            raise self.fail(f"weights {list(weight.shape)} do not fit {channels} channels (the "
                            f"fork holds {[channels, 1] + list(kernel)})")
        shape_out = self._spatial_out(x.shape[2:], kernel, stride, pad, dilation)
        return (self._depthwise(x, kernel, stride, pad, dilation, shape_out, steps),)


@register("Deconvolution", settings="convolution_param", key_settings=(
    "num_output", "kernel_size", "stride", "pad", "group", "bias_term"))
class Deconvolution(_ConvolutionBase):
    def _spatial_out(self, spatial, kernel, stride, pad, dilation) -> tuple[int, ...]:
        out = tuple(s * (n - 1) + d * (k - 1) + 1 - 2 * p
                    for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))
        if min(out, default=1) <= 0:
            raise self.fail("the padding removes the whole output")
        return out

    def values_needed(self, shapes):
        batch, channels, spatial, kernel, stride, pad, dilation = self._geometry(shapes[0])
        full = prod(s * (n - 1) + d * (k - 1) + 1 for n, k, s, d in zip(spatial, kernel, stride, dilation))
        # the columns, the full-size output and its cropped copy
        return batch * self._outputs() * (prod(kernel) * prod(spatial) + 2 * full)

    def forward(self, x):
        xp = self.xp
        leading, x = self._batch_view(x)
        kernel, stride, pad, dilation = self._settings(x)
        weight = self.weights[0]  # (input channels, outputs / group, *kernel)
        n, channels = x.shape[:2]
        group = self.group
        if weight.shape[0] != channels or channels % group:
            raise self.fail(f"weights {list(weight.shape)} do not fit {channels} input channels")
        outputs = weight.shape[1] * group
        shape_in = x.shape[2:]
        full = tuple(s * (size - 1) + d * (k - 1) + 1
                     for size, k, s, d in zip(shape_in, kernel, stride, dilation))
        per_group = channels // group
        filters = weight.reshape(group, per_group, (outputs // group) * prod(kernel))
        columns = xp.matmul(filters.transpose(0, 2, 1)[None],
                            x.reshape(n, group, per_group, prod(shape_in)))
        columns = columns.reshape((n, outputs, prod(kernel)) + shape_in)
        y = xp.zeros((n, outputs) + full, dtype=x.dtype)
        for index, window in _windows(shape_in, kernel, stride, dilation):
            y[(slice(None), slice(None)) + window] += columns[:, :, index]
        crop = tuple(slice(p, f - p) for p, f in zip(pad, full))
        y = y[(slice(None), slice(None)) + crop]
        if min(y.shape[2:]) <= 0:
            raise self.fail("the padding removes the whole output")
        if self.bias:
            y = y + self.weights[1].reshape((1, outputs) + (1,) * len(shape_in))
        return (xp.ascontiguousarray(y).reshape(leading + y.shape[1:]),)
