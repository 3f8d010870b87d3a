"""apply_pedestals: LSST's numpy-2 float semantics (double subtraction, one rounding)."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask.algorithm.apply import apply_pedestals
from ampoffset_dask.geometry import Amplifier, Detector

DET = Detector("D", 8, 6, tuple(Amplifier(f"A{i}", 4 * (i % 2), 3 * (i // 2), 4, 3)
                                for i in range(4)))


def _image(seed=0):
    # background-subtracted levels, where a float32-rounded pedestal changes the last bit often
    return np.random.default_rng(seed).normal(0.0, 3.0, DET.shape).astype(np.float32)


def test_rounds_once_like_lsst_in_place_subtraction():
    image = _image()
    pedestals = np.array([0.123456789, -1.987654321, 0.0, 3.3e-3])
    out = apply_pedestals(image, pedestals, DET)
    # LSST: `exposure.image.array[bbox] -= np.float64(p)` on float32 pixels (numpy >= 2)
    lsst = image.copy()
    for amp, p in zip(DET.amplifiers, pedestals, strict=True):
        lsst[amp.slices] -= p
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, lsst)
    want = (image.astype(np.float64) - np.repeat(np.repeat(
        pedestals.reshape(2, 2), 3, axis=0), 4, axis=1)).astype(np.float32)
    np.testing.assert_array_equal(out, want)
    # subtracting in float32 (rounding the pedestal first) gives different bits
    f32 = image.copy()
    for amp, p in zip(DET.amplifiers, pedestals, strict=True):
        f32[amp.slices] -= np.float32(p)
    assert np.count_nonzero(out != f32) > 0


def test_new_array_by_default_in_place_with_out():
    image = _image(1)
    before = image.copy()
    out = apply_pedestals(image, [1.0, 2.0, 3.0, 4.0], DET)
    assert out is not image
    np.testing.assert_array_equal(image, before)
    same = apply_pedestals(image, [1.0, 2.0, 3.0, 4.0], DET, out=image)
    assert same is image
    np.testing.assert_array_equal(image, out)
    other = np.empty(DET.shape, np.float32)
    assert apply_pedestals(before, [1.0, 2.0, 3.0, 4.0], DET, out=other) is other
    np.testing.assert_array_equal(other, out)


def test_integer_input_is_read_as_float32():
    raw = np.arange(48, dtype=np.int32).reshape(DET.shape)
    out = apply_pedestals(raw, [0.5, 0.0, -0.5, 0.25], DET)
    assert out.dtype == np.float32
    assert out[0, 0] == -0.5 and out[0, 4] == 4.0 and out[3, 0] == 24.5


@pytest.mark.parametrize("pedestals, out, match", [
    ([1.0, 2.0], None, "2 pedestals for 4 amps"),
    ([0.0] * 4, np.zeros((6, 8), np.int32), "out must be a float array"),
    ([0.0] * 4, np.zeros((6, 7), np.float32), "out must be a float array"),
])
def test_bad_arguments(pedestals, out, match):
    with pytest.raises(ValueError, match=match):
        apply_pedestals(_image(), pedestals, DET, out=out)


def test_wrong_image_shape():
    with pytest.raises(ValueError, match=r"image shape \(6, 7\)"):
        apply_pedestals(np.zeros((6, 7), np.float32), [0.0] * 4, DET)
