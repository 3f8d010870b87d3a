"""Mask-plane names: afw's dictionary, the file's planes, and names neither defines."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, ConfigError, get_camera, measure_detector
from ampoffset_dask.masks import DEFAULT_MASK_PLANES, mask_bits
from ampoffset_dask.simulate import scale_detector, simulate_detector


def test_a_misspelt_mask_plane_fails_naming_the_field():
    """afw refuses a plane name it does not know; left out, the saturated pixels of a
    ``SATURATED`` (for ``SAT``) config would enter the strips silently."""
    assert mask_bits(["BAD", "SAT"], {"BAD": 0, "SAT": 3}) == 0b1001
    # a default plane the mask does not define: no pixel carries it
    assert mask_bits(["BAD", "STREAK"], {"BAD": 0}) == 1
    with pytest.raises(ConfigError, match=r"detection.statsMask: unknown mask plane "
                                          r"'SATURATED'; the mask's planes are BAD, CR"):
        mask_bits(["BAD", "SATURATED"], DEFAULT_MASK_PLANES, "detection.statsMask")
    # a plane the file defines is known
    assert mask_bits(["CROSSTALK"], {**DEFAULT_MASK_PLANES, "CROSSTALK": 12}) == 1 << 12
    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.05)
    sim = simulate_detector(det, seed=1)
    for field, config in (
        ("background.ignoredPixelMask",
         AmpOffsetConfig.from_lsst({"background.ignoredPixelMask": ["BAD", "SATURATED"]})),
        ("detection.statsMask",
         AmpOffsetConfig.from_lsst({"detection.statsMask": ["NOPE"]})),
    ):
        with pytest.raises(ConfigError, match=rf"{field}: unknown mask plane"):
            measure_detector(sim.image, sim.mask, det, config=config)
    assert np.isfinite(measure_detector(sim.image, sim.mask, det).pedestals).all()
