"""Winograd's F(2x2, 3x3) for stride-1 3x3 convolutions: an opt-in fast
path (Net(winograd=True), --winograd), never the default.

Each 2x2 block of outputs comes from a 4x4 tile of input through fixed
transforms with coefficients 0, +-1 and +-1/2, and 16 products of
(outputs x channels) by (channels x tiles): 4 multiply-adds per output and
channel instead of 9. The sums run in another order than Caffe's, so
results differ from Caffe's in the last bits (docs/engine.md gives the measured
error); OpenCV uses the same idea on its 3x3 convolutions.
"""

from __future__ import annotations

import numpy as np

# F(2, 3): y = A^T [(G g G^T) * (B^T d B)] A
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


# Below this many input channels the transforms cost more than the products
# save (measured: 64 channels at 224x224, 80 ms against 62 ms unfolded; even
# at 128; ahead from 256 on).
MIN_CHANNELS = 128


def applies(kernel, stride, dilation, group: int, ndim: int, channels: int) -> bool:
    return ndim == 4 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and \
        tuple(dilation) == (1, 1) and group == 1 and channels >= MIN_CHANNELS


def transformed_filters(xp, weight) -> object:
    """G g G^T for every (output, channel) filter, as 16 matrices (outputs x channels)."""
    host = np.asarray(weight.get() if hasattr(weight, "get") else weight, dtype=np.float64)
    outputs, channels = host.shape[:2]
    transformed = np.einsum("ai,ocij,bj->aboc", _G, host, _G).reshape(16, outputs, channels)
    return xp.asarray(transformed.astype(weight.dtype))


# The tile transforms as 16x16 and 4x16 matrices over a tile's values in
# row-major order: kron(B^T, B^T) d and kron(A^T, A^T) m, each one product.
_BT = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0],
                [0.0, 1.0, 0.0, -1.0]])
_AT = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
_INPUT = np.kron(_BT, _BT)
_OUTPUT = np.kron(_AT, _AT)


def convolve(xp, x, filters, pad) -> object:
    """x (n, C, H, W) convolved with the transformed filters (16, O, C),
    symmetric padding `pad`, stride 1: (n, O, H + 2p - 2, W + 2p - 2)."""
    n, channels, height, width = x.shape
    outputs = filters.shape[1]
    out_h, out_w = height + 2 * pad[0] - 2, width + 2 * pad[1] - 2
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    input_transform = xp.asarray(_INPUT.astype(x.dtype))
    output_transform = xp.asarray(_OUTPUT.astype(x.dtype))
    y = xp.empty((n, outputs, out_h, out_w), dtype=x.dtype)
    padded = xp.zeros((channels, 2 * tiles_h + 2, 2 * tiles_w + 2), dtype=x.dtype)
    tiles = xp.empty((16, channels, tiles_h, tiles_w), dtype=x.dtype)
    for sample in range(n):
        padded[:, pad[0]:pad[0] + height, pad[1]:pad[1] + width] = x[sample]
        for i in range(4):  # each tile's 16 values, gathered
            for j in range(4):
                tiles[4 * i + j] = padded[:, i:i + 2 * tiles_h:2, j:j + 2 * tiles_w:2]
        transformed = xp.matmul(input_transform, tiles.reshape(16, -1)).reshape(16, channels, -1)
        products = xp.matmul(filters, transformed)  # (16, O, tiles)
        blocks = xp.matmul(output_transform, products.reshape(16, -1))
        blocks = blocks.reshape(2, 2, outputs, tiles_h, tiles_w)
        for a in range(2):
            for b in range(2):
                rows_out, cols_out = len(range(a, out_h, 2)), len(range(b, out_w, 2))
                y[sample, :, a::2, b::2] = blocks[a, b, :, :rows_out, :cols_out]
    return y
