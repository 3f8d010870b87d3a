"""LSST's amp-offset metadata keys and comments, from one measurement."""

from __future__ import annotations

import numpy as np

from ampoffset_dask.algorithm.metadata import (
    lsst_metadata,
    lsst_metadata_comments,
    task_metadata,
)
from ampoffset_dask.algorithm.result import DetectorMeasurement, InterfaceResult


def _measurement() -> DetectorMeasurement:
    itf = [InterfaceResult("C10-C11", "C10", "C11", 1, 4, np.float64(0.75), 0.0, 0.9, False,
                           True),
           InterfaceResult("C10-C00", "C10", "C00", 2, 6, -0.125, -0.125, 1.0, False, False)]
    return DetectorMeasurement("R22_S11", ("C10", "C11", "C00"),
                               np.array([0.5, -0.25, -0.25]), tuple(itf))


def test_keys_values_and_comments_in_lsst_order():
    meta = lsst_metadata_comments(_measurement(), applied=True)
    assert list(meta.items()) == [
        ("LSST ISR AMPOFFSET INTERFACEOFFSET C10-C11",
         (0.75, "Raw amp interface offset calculated for C10-C11")),
        ("LSST ISR AMPOFFSET INTERFACEOFFSET C10-C00",
         (-0.125, "Raw amp interface offset calculated for C10-C00")),
        ("LSST ISR AMPOFFSET PEDESTAL C10", (0.5, "Pedestal level calculated for amp C10")),
        ("LSST ISR AMPOFFSET PEDESTAL C11", (-0.25, "Pedestal level calculated for amp C11")),
        ("LSST ISR AMPOFFSET PEDESTAL C00", (-0.25, "Pedestal level calculated for amp C00")),
        ("LSST ISR AMPOFFSET PEDESTAL SUBTRACTED", (True, "Amp pedestals have been subtracted")),
    ]
    # plain Python types (afw PropertyList and FITS cards want them)
    assert all(type(v) in (float, bool) for v, _ in meta.values())
    off = lsst_metadata_comments(_measurement(), applied=False)
    assert off["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] == (
        False, "Amp pedestals have not been subtracted")


def test_values_only_and_task_metadata():
    values = lsst_metadata(_measurement(), applied=False)
    assert values["LSST ISR AMPOFFSET INTERFACEOFFSET C10-C11"] == 0.75
    assert values["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is False
    assert len(values) == 6
    assert task_metadata(_measurement()) == {
        "AMPOFFSET_PEDESTALS": {"C10": 0.5, "C11": -0.25, "C00": -0.25}}


def test_interface_to_dict_is_asdict():
    """The catalog's per-interface dictionaries: every field, in order, equal to
    `dataclasses.asdict`, NaN defaults included."""
    import dataclasses
    import math

    full = InterfaceResult(id="A-B", amp_a="A", amp_b="B", side=1, length=200,
                           offset_raw=1.5, offset=1.25, good_frac=0.9, min_frac_fail=False,
                           max_offset_fail=True, offset_err=0.1, weight=0.5, gain_ratio=1.01,
                           gain_ratio_err=0.02, gain_like=True)
    assert full.to_dict() == dataclasses.asdict(full)
    assert list(full.to_dict()) == [f.name for f in dataclasses.fields(InterfaceResult)]
    short = dataclasses.replace(full, offset_err=math.nan, gain_ratio=math.nan)
    d, ref = short.to_dict(), dataclasses.asdict(short)
    assert list(d) == list(ref)
    assert all(d[k] == ref[k] or (math.isnan(d[k]) and math.isnan(ref[k])) for k in d)
