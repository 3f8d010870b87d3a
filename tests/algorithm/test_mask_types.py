"""`measure_detector` takes masks of any integer, bool or whole-number float type from bare
arrays, as from the exposure faces: the same pedestals as the int32 mask, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, InputError, get_camera, measure_detector
from ampoffset_dask.masks import DEFAULT_MASK_PLANES
from ampoffset_dask.simulate import scale_detector, simulate_detector


@pytest.fixture(scope="module")
def small():
    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.1)
    return det, simulate_detector(det, seed=4)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int8, np.int16, np.uint16, np.float32])
def test_mask_types_give_the_int32_pedestals(small, dtype):
    det, sim = small
    bad = (sim.mask != 0).astype(np.int32) << DEFAULT_MASK_PLANES["BAD"]
    assert bad.any()
    want = measure_detector(sim.image, bad, det, AmpOffsetConfig()).pedestals
    mask = bad.astype(bool) if dtype is bool else bad.astype(dtype)
    got = measure_detector(sim.image, mask, det, AmpOffsetConfig()).pedestals
    np.testing.assert_array_equal(got, want)


def test_a_fractional_float_mask_is_refused_naming_the_detector(small):
    det, sim = small
    mask = np.zeros(sim.image.shape, dtype=np.float32)
    mask[0, 0] = 0.5
    with pytest.raises(InputError, match=det.name):
        measure_detector(sim.image, mask, det)
