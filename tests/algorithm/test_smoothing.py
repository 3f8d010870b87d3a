"""The detection smoothing reproduces afw's float32 separable convolution bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask.algorithm.detection import gaussian_kernel, smooth
from ampoffset_dask.algorithm.kernels import get_kernels


def literal_afw_convolution(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Element-by-element port of ALGORITHM.md section 4 step 3 (slow, obviously right)."""
    k = kernel.astype(np.float32)
    n = k.shape[0]
    h, w = image.shape
    ow, oh = w - n + 1, h - n + 1
    buf = np.zeros((h, ow), dtype=np.float32)
    for y in range(h):
        for x in range(ow):
            acc = np.float32(0)
            for i in range(n):
                acc = np.float32(acc + np.float32(image[y, x + i] * k[i]))
            buf[y, x] = acc
    out = np.zeros((oh, ow), dtype=np.float32)
    for o in range(oh):
        acc = np.zeros(ow, dtype=np.float32)
        for slot in range(n):  # ring-buffer slot of input row r is r mod n
            r = o + (slot - o) % n
            acc = (acc + buf[r] * k[r - o]).astype(np.float32)
        out[o] = acc
    return out


@pytest.mark.parametrize("shape", [(15, 15), (16, 17), (31, 22), (47, 40)])
def test_smoothing_is_bit_identical_to_afw_order(shape):
    rng = np.random.default_rng(sum(shape))
    image = (1000 + 30 * rng.standard_normal(shape)).astype(np.float32)
    kernel = gaussian_kernel(2.0, 7.0)
    expected = literal_afw_convolution(image, kernel)
    np.testing.assert_array_equal(smooth(image, kernel), expected)
    reference = get_kernels("numpy").smooth
    np.testing.assert_array_equal(reference(image, kernel, row_block=5, groups=1), expected)
    np.testing.assert_array_equal(get_kernels("numba").smooth(image, kernel), expected)


@pytest.mark.parametrize("weights", [
    [0.1, 0.5, 0.2, 0.15, 0.05],  # not symmetric: every product distinct
    [0.25, -0.0, 0.5, 0.0, 0.25],  # equal weights shared, signed zeros kept apart
    [0.2, 0.3, 0.2, 0.3, 0.2, 0.3, 0.2],  # alternating: short runs of shared products
    [0.2, 0.2, 0.2, 0.2, 0.2],  # one distinct weight: every product shared
    [1.0],
])
def test_reference_smoothing_shares_only_identical_products(weights):
    # The numpy reference computes each distinct float32 weight's product once; any
    # kernel must still give afw's order and bits.
    rng = np.random.default_rng(len(weights))
    image = (30 * rng.standard_normal((23, 19))).astype(np.float32)
    image[3, 4] = -0.0
    kernel = np.array(weights)
    expected = literal_afw_convolution(image, kernel)
    for row_block in (1, 4, 16):
        got = get_kernels("numpy").smooth(image, kernel, row_block=row_block, groups=2)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_smoothing_shape_and_small_images():
    kernel = gaussian_kernel(2.0, 7.0)
    assert kernel.shape == (15,)
    assert smooth(np.ones((20, 30), np.float32), kernel).shape == (6, 16)
    assert smooth(np.ones((10, 30), np.float32), kernel).shape == (0, 16)
    np.testing.assert_allclose(smooth(np.full((40, 40), 7, np.float32), kernel), 7, rtol=1e-6)


@pytest.mark.parametrize("n_sigma", [7.0, 2.5])  # kernels of 15 and 5 weights
def test_smoothing_signed_zeros_and_odd_shapes_match_compiled(n_sigma):
    # A block of -0.0 gives -0.0 horizontal sums; the vertical sums start from +0.0 (afw's
    # accumulator), so the smoothed block is +0.0 on both paths, bit for bit, at any
    # blocking, with NaN pixels elsewhere.
    rng = np.random.default_rng(5)
    image = (20 * rng.standard_normal((83, 61))).astype(np.float32)
    image[10:50, 5:45] = -0.0
    image[70, 30] = np.nan
    kernel = gaussian_kernel(2.0, n_sigma)
    r = kernel.shape[0] // 2
    compiled = get_kernels("numba").smooth(image, kernel).view(np.uint32)
    assert (compiled[10:50 - 2 * r, 5:45 - 2 * r] == 0).all()
    for row_block, groups in ((16, 8), (3, 1), (7, 2)):
        got = get_kernels("numpy").smooth(image, kernel, row_block=row_block, groups=groups)
        np.testing.assert_array_equal(got.view(np.uint32), compiled)
