"""The in-memory ``Exposure``: dtypes, defaults, shape checks, LSST-style accessors."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask import Exposure, InputError
from ampoffset_dask.geometry import detector_from_boxes
from ampoffset_dask.masks import DEFAULT_MASK_PLANES, mask_bits

DET = detector_from_boxes("D", 80, 30, [("A", 0, 0, 40, 30), ("B", 40, 0, 40, 30)], id=7)


def test_dtypes_and_defaults():
    image = np.arange(30 * 80, dtype=np.float64).reshape(30, 80) + 0.1
    exp = Exposure(image, detector=DET)
    assert exp.image.dtype == np.float32 and exp.image.flags.c_contiguous
    np.testing.assert_array_equal(exp.image, image.astype(np.float32))
    assert exp.mask.dtype == np.int32 and not exp.mask.any()
    assert exp.variance.dtype == np.float32 and not exp.variance.any()
    assert exp.mask_planes == DEFAULT_MASK_PLANES
    assert exp.mask_planes is not DEFAULT_MASK_PLANES  # a copy
    assert exp.metadata == {}
    assert exp.getDetector() is DET
    assert exp.getMetadata() is exp.metadata
    assert "D" in repr(exp) and "(30, 80)" in repr(exp)


def test_float32_image_is_not_copied():
    image = np.zeros((30, 80), np.float32)
    exp = Exposure(image, detector=DET)
    assert exp.image is image  # subtraction in place reaches the caller's array


def test_mask_variance_metadata_given():
    mask = np.ones((30, 80), np.int64)
    var = np.full((30, 80), 2.0)
    md = {"X": 1}
    planes = {"BAD": 3, "EDGE": 4}
    exp = Exposure(np.zeros((30, 80)), mask, var, DET, planes, md)
    assert exp.mask.dtype == np.int32 and exp.mask.sum() == 30 * 80
    assert exp.variance.dtype == np.float32 and exp.variance[0, 0] == 2.0
    assert exp.metadata is md
    assert exp.mask_planes == planes


def test_default_mask_dictionary_of_afw():
    assert DEFAULT_MASK_PLANES == {
        "BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
        "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "NO_DATA": 8, "VIGNETTED": 9, "STREAK": 10,
    }
    planes = ["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT",
              "NO_DATA"]
    assert mask_bits(planes) == 0x1FF
    assert mask_bits(["BAD", "NOT_A_PLANE"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((30, 80)), "detector": None}, "needs a detector"),
        ({"image": np.zeros((30, 81)), "detector": DET}, r"'D'.*\(30, 81\).*\(30, 80\)"),
        ({"image": np.zeros(2400), "detector": DET}, "'D'.*2-D"),
        ({"image": np.zeros((30, 80)), "mask": np.zeros((30, 79)), "detector": DET},
         "'D'.*mask shape"),
        ({"image": np.zeros((30, 80)), "variance": np.zeros((29, 80)), "detector": DET},
         "'D'.*variance shape"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(InputError, match=match):
        Exposure(**kwargs)
