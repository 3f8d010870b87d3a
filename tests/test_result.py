"""Measurement results compare by value (NaN equal to NaN), survive pickling, and an
array-holding measurement is unhashable with a plain error."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, measure_detector
from ampoffset_dask.geometry import detector_from_boxes

DET = detector_from_boxes("D", 300, 100, [("A", 0, 0, 100, 100), ("B", 100, 0, 100, 100),
                                          ("C", 200, 0, 100, 100)])


@pytest.fixture(scope="module")
def measured():
    image = np.random.default_rng(1).normal(1000.0, 1.0, DET.shape).astype(np.float32)
    image[:, 100:200] += 2.0
    image[:, 200:] = np.nan  # amp C unmeasured: NaN offsets and errors
    return measure_detector(image, None, DET, AmpOffsetConfig(amp_edge_width=16))


def test_a_measurement_equals_its_copy_nan_fields_included(measured):
    copy = pickle.loads(pickle.dumps(measured))
    assert math.isnan(measured.interfaces[1].offset_err)
    assert np.isnan(measured.pedestal_errors).any()
    assert measured == copy and not measured != copy
    assert measured.interfaces[1] == copy.interfaces[1]
    assert hash(measured.interfaces[1]) == hash(copy.interfaces[1])
    assert len({measured.interfaces[1], copy.interfaces[1]}) == 1


@pytest.mark.parametrize("change", [
    {"pedestals": lambda m: m.pedestals + 1e-12},
    {"pedestal_errors": lambda m: None},
    {"amp_levels": lambda m: m.amp_levels[:2]},
    {"warnings": lambda m: (*m.warnings, "x")},
    {"interfaces": lambda m: (dataclasses.replace(m.interfaces[0], offset_err=0.5),
                              *m.interfaces[1:])},
    {"threshold": lambda m: m.threshold + 1.0},
])
def test_any_difference_makes_measurements_unequal(measured, change):
    (name, make), = change.items()
    other = dataclasses.replace(measured, **{name: make(measured)})
    assert measured != other and other != measured
    assert measured != measured.to_dict()


def test_a_measurement_is_unhashable(measured):
    with pytest.raises(TypeError, match="unhashable type: 'DetectorMeasurement'"):
        hash(measured)
